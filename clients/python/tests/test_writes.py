"""Writes: one record, batches (atomic), dedup within a run, client ids (upserts), patches,
deletes by id and by filter, and expiry."""

from __future__ import annotations

import time

import pytest

from strata_client import BadRequestError, Confidence, NewRecord, NotFoundError, Strata


def test_single_write_and_read_back(client: Strata) -> None:
    w = client.add("Alice takes oat milk", metadata={"topic": "coffee", "n": 2}, kind="semantic")
    assert w.created and not w.deduplicated
    r = client.get(w.id)
    assert (r.id, r.content, r.metadata, r.kind) == (
        w.id,
        "Alice takes oat milk",
        {"topic": "coffee", "n": 2},
        "semantic",
    )
    assert r.collection == "text" and r.memory_domain == "default" and r.user_tokens == []
    assert r.created_at > 0 and r.updated_at == r.created_at


def test_batch_write_is_atomic(client: Strata) -> None:
    results = client.add(
        [
            {"content": "first", "metadata": {"i": 1}},
            NewRecord(content="second", metadata={"i": 2}),
        ]
    )
    assert [r.created for r in results] == [True, True]
    assert {client.get(r.id).content for r in results} == {"first", "second"}
    # One bad record (a metadata key shadowing a built-in field) refuses the whole batch.
    with pytest.raises(BadRequestError) as e:
        client.add([{"content": "third"}, {"content": "fourth", "metadata": {"id": 1}}])
    assert "id" in e.value.message
    assert client.count() == 2
    # An id twice in one batch is refused whole, rather than the first silently replaced.
    twice = r"records\[1\]\.id: d is also the id of records\[0\]"
    with pytest.raises(BadRequestError, match=twice):
        client.add([{"content": "x", "id": "d"}, {"content": "y", "id": "d"}])
    assert client.count() == 2
    # An empty list writes nothing and sends nothing.
    assert client.add([]) == []


def test_whole_records_carry_their_own_fields(client: Strata) -> None:
    one = client.add(NewRecord(content="whole", metadata={"w": 1}, id="whole-1"))
    assert one.id == "whole-1" and client.get("whole-1").metadata == {"w": 1}
    assert client.add({"content": "as a dict", "kind": "note"}).created
    with pytest.raises(TypeError, match="given for the call"):
        client.add([{"content": "x"}], metadata={"a": 1})  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="given for the call"):
        client.add(NewRecord(content="x"), id="y")


def test_same_content_in_a_run_is_deduplicated(client: Strata) -> None:
    first = client.add("the user prefers dark mode", run_id="run-1")
    again = client.add("the user prefers dark mode", run_id="run-1")
    assert again.deduplicated and not again.created and again.id == first.id
    other_run = client.add("the user prefers dark mode", run_id="run-2")
    assert not other_run.deduplicated and other_run.id != first.id
    assert client.count(run_id="run-1") == 1


def test_client_ids_upsert(client: Strata) -> None:
    assert client.add("v1", id="note-1").created
    replaced = client.add("v2", id="note-1", metadata={"v": 2})
    assert not replaced.created and replaced.id == "note-1"
    assert client.get("note-1").content == "v2"
    assert client.count() == 1


def test_private_records_upsert_by_id(client: Strata) -> None:
    # The scope travels as the request's (query string), so re-writing Alice's private
    # record by id is checked against Alice, not refused as someone else's id.
    client.add("Alice v1", id="alice-pref", user_tokens=["u:alice"])
    client.add("Alice v2", id="alice-pref", user_tokens=["u:alice"])
    r = client.get("alice-pref", user_tokens=["u:alice"])
    assert (r.content, r.user_tokens) == ("Alice v2", ["u:alice"])


def test_records_in_a_batch_carry_their_own_scope(client: Strata) -> None:
    results = client.add(
        [
            NewRecord(content="shared note"),
            NewRecord(content="bob's note", user_tokens=["u:bob"], run_id="r9"),
        ],
        user_tokens=["u:alice"],
    )
    alice, bob = (client.get(r.id, user_tokens=["u:alice", "u:bob"]) for r in results)
    assert alice.user_tokens == ["u:alice"]
    assert (bob.user_tokens, bob.run_id) == (["u:bob"], "r9")


def test_update_merges_metadata_and_moves_scope(client: Strata) -> None:
    w = client.add("draft", metadata={"keep": 1, "drop": 2, "nested": {"a": 1}})
    r = client.update(w.id, content="final", metadata={"drop": None, "nested": {"b": 2}})
    assert r.content == "final"
    assert r.metadata == {"keep": 1, "nested": {"a": 1, "b": 2}}
    assert r.updated_at >= r.created_at
    # Making it private to Bob hides it from a token-less request.
    client.update(w.id, new_user_tokens=["u:bob"])
    with pytest.raises(NotFoundError):
        client.get(w.id)
    assert client.get(w.id, user_tokens=["u:bob"]).content == "final"


def test_update_clears_fields_and_moves_between_domains(client: Strata) -> None:
    w = client.add("due friday", kind="fact", run_id="r1", memory_domain="inbox")
    before = client.get(w.id, memory_domain="inbox")
    r = client.update(
        w.id, clear=["kind", "run_id"], move_to_domain="archive", memory_domain="inbox"
    )
    assert (r.kind, r.run_id, r.memory_domain) == (None, None, "archive")
    assert (r.id, r.created_at, r.confidence) == (w.id, before.created_at, before.confidence)
    with pytest.raises(NotFoundError):
        client.get(w.id, memory_domain="inbox")
    assert client.get(w.id, memory_domain="archive").content == "due friday"
    with pytest.raises(ValueError):
        client.update(w.id, clear=["content"], memory_domain="archive")
    with pytest.raises(ValueError):
        client.update(w.id, kind="x", clear=["kind"], memory_domain="archive")


def test_delete_by_id_and_by_filter(client: Strata) -> None:
    w = client.add("to delete")
    client.delete(w.id)
    with pytest.raises(NotFoundError):
        client.get(w.id)
    with pytest.raises(NotFoundError):
        client.delete(w.id)
    client.add([{"content": f"n{i}", "metadata": {"n": i}} for i in range(5)])
    assert client.delete_where({"n": {"$gte": 3}}) == 2
    assert client.count() == 3
    # An empty or missing filter deletes nothing: "everything" is said with `all=True`.
    for by_mistake in ({}, None):
        with pytest.raises(BadRequestError, match="all"):
            client.delete_where(by_mistake)
    with pytest.raises(BadRequestError):
        client.delete_where({"n": 1}, all=True)
    assert client.count() == 3
    assert client.delete_where(all=True) == 3
    assert client.count() == 0


def test_confidence_is_a_number_or_a_confidence(client: Strata) -> None:
    w = client.add("Bob is allergic to nuts", confidence=0.8)
    assert client.get(w.id).confidence.value == pytest.approx(0.8)
    assert client.update(w.id, confidence=0.9).confidence.value == pytest.approx(0.9)
    assert client.update(w.id, confidence=Confidence(value=0.3)).confidence.value == pytest.approx(
        0.3
    )
    [r] = client.add([NewRecord(content="Carol likes tea", confidence=1)])
    assert client.get(r.id).confidence.value == 1.0
    with pytest.raises(TypeError):
        client.update(w.id, confidence=True)  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="confidence"):
        client.update(w.id, confidence=1.5)


def test_metadata_is_cleared_by_null(client: Strata) -> None:
    w = client.add("note", metadata={"a": 1, "b": 2})
    assert client.update(w.id, metadata={"a": None}).metadata == {"b": 2}
    assert client.update(w.id, clear=["metadata"]).metadata == {}
    assert client.get(w.id).metadata == {}


def test_a_past_or_seconds_expiry_is_refused(client: Strata) -> None:
    now_ms = int(time.time() * 1000)
    with pytest.raises(BadRequestError, match="looks like seconds"):
        client.add("soon", expires_at=int(time.time()) + 3600)
    with pytest.raises(BadRequestError, match=r"records\[1\]\.expires_at"):
        client.add([{"content": "a"}, {"content": "b", "expires_at": now_ms - 1000}])
    w = client.add("later", expires_at=now_ms + 3_600_000)
    with pytest.raises(BadRequestError, match="expires_at"):
        client.update(w.id, expires_at=now_ms - 1)
    assert client.count() == 1


def test_vectors_need_a_collection_of_their_dimension(client: Strata) -> None:
    client.create_collection("tiny", dim=3, metric="cosine")
    w = client.add("x axis", vector=[1, 0, 0], collection="tiny")
    # A record comes without its vector unless asked.
    assert client.get(w.id).vector is None
    assert client.get(w.id, include=["record", "vector"]).vector == [1.0, 0.0, 0.0]
    with pytest.raises(BadRequestError, match="dimension"):
        client.add("bad", vector=[1, 0], collection="tiny")
    assert [c.name for c in client.list_collections()].count("tiny") == 1
    assert client.delete_collection("tiny") == 1


def test_expired_records_are_invisible(client: Strata) -> None:
    w = client.add("stale", expires_at=int(time.time() * 1000) + 1000)
    time.sleep(1.2)
    with pytest.raises(NotFoundError):
        client.get(w.id)
    assert client.count() == 0


def test_blank_text_is_a_bad_request_naming_the_field(client: Strata) -> None:
    w = client.add("kept", id="kept")
    for blank in ["", "   "]:
        with pytest.raises(BadRequestError, match=r"content: is empty or whitespace only"):
            client.add(blank)
        with pytest.raises(BadRequestError, match=r"records\[1\]\.content: is empty"):
            client.add([{"content": "fine"}, {"content": blank}])
        with pytest.raises(BadRequestError, match=r"content: is empty"):
            client.update(w.id, content=blank)
        with pytest.raises(BadRequestError, match=r"query: is empty or whitespace only"):
            client.search(blank)
    assert client.count() == 1 and client.get("kept").content == "kept"
