"""The LangChain store beyond the standard suite: metadata round trips (even under names Strata
reserves), filters, scope fields, collections, relevance scores, MMR and retrievers."""

from __future__ import annotations

import datetime
import math
import warnings

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from strata_client import (
    AsyncStrata,
    BadRequestError,
    ConflictError,
    PermissionDeniedError,
    Strata,
    StrataAdmin,
)
from strata_client.langchain import (
    METADATA_KEY,
    StrataVectorStore,
    mmr_select,
    relevance,
    translate_filter,
)

from .conftest import NewTenant, Server, TenantKey, unique

DIM = 8


@pytest.fixture
def embedding() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=DIM)


@pytest.fixture
def store(client: Strata, embedding: DeterministicFakeEmbedding) -> StrataVectorStore:
    return StrataVectorStore(client=client, embedding=embedding, collection=unique("docs"))


def test_metadata_round_trips_under_any_name(store: StrataVectorStore, client: Strata) -> None:
    metadata = {"id": 7, "content": "x", "kind": ["a", "b"], "nested": {"score": 0.5}}
    [doc_id] = store.add_texts(["reserved names"], [metadata], ids=["doc-1"])
    assert store.get_by_ids([doc_id]) == [
        Document(id="doc-1", page_content="reserved names", metadata=metadata)
    ]
    # Stored under one key, so the server's reserved field names cannot clash.
    record = client.get("doc-1", include=["record", "vector"])
    assert record.metadata == {METADATA_KEY: metadata}
    assert record.collection == store.collection and record.vector is not None


def test_filters_apply_to_document_metadata(store: StrataVectorStore) -> None:
    store.add_texts(
        ["apple", "banana", "cherry"],
        [{"fruit": True, "n": 1}, {"fruit": True, "n": 2}, {"fruit": False, "n": 3}],
    )
    found = store.similarity_search("apple", k=3, filter={"n": {"$gte": 2}})
    assert sorted(d.page_content for d in found) == ["banana", "cherry"]
    either = store.similarity_search("x", k=3, filter={"$or": [{"n": 1}, {"fruit": False}]})
    assert sorted(d.page_content for d in either) == ["apple", "cherry"]
    assert translate_filter({"$and": [{"a": 1}]}) == {"$and": [{f"{METADATA_KEY}.a": 1}]}


def test_scope_fields_make_documents_private(
    client: Strata, embedding: DeterministicFakeEmbedding
) -> None:
    collection = unique("scoped")
    alice = StrataVectorStore(
        client=client,
        embedding=embedding,
        collection=collection,
        user_tokens=["u:alice"],
        memory_domain="notes",
        run_id="session-1",
    )
    bob = StrataVectorStore(
        client=client,
        embedding=embedding,
        collection=collection,
        user_tokens=["u:bob"],
        memory_domain="notes",
    )
    [doc_id] = alice.add_texts(["Alice's secret"])
    record = client.get(doc_id, user_tokens=["u:alice"], memory_domain="notes")
    assert (record.user_tokens, record.memory_domain, record.run_id) == (
        ["u:alice"],
        "notes",
        "session-1",
    )
    assert [d.page_content for d in alice.similarity_search("secret", k=1)] == ["Alice's secret"]
    assert bob.similarity_search("secret", k=1) == []
    assert bob.get_by_ids([doc_id]) == []
    bob.delete([doc_id])  # invisible to Bob, so not his to delete
    assert len(alice.get_by_ids([doc_id])) == 1


def test_delete_without_ids_needs_delete_all(
    client: Strata, store: StrataVectorStore, embedding: DeterministicFakeEmbedding
) -> None:
    # The collection holds a record written through the API beside the store's document:
    # a bare delete() must not take both.
    [doc_id] = store.add_texts(["a document"])
    memory = client.add(
        "an agent's memory", vector=embedding.embed_query("memory"), collection=store.collection
    )
    with pytest.raises(ValueError, match="delete_all=True"):
        store.delete()
    assert len(store.get_by_ids([doc_id, memory.id])) == 2
    store.delete(delete_all=True)
    assert store.get_by_ids([doc_id, memory.id]) == []


def test_collection_is_created_with_the_embedding_dimension(
    client: Strata, embedding: DeterministicFakeEmbedding
) -> None:
    name = unique("dim")
    store = StrataVectorStore(client=client, embedding=embedding, collection=name)
    assert store.similarity_search("nothing yet", k=1) == []
    assert name not in [c.name for c in client.list_collections()]
    store.add_texts(["first"])
    [c] = [c for c in client.list_collections() if c.name == name]
    assert (c.dim, c.metric) == (DIM, "cosine")
    other = StrataVectorStore(
        client=client, embedding=DeterministicFakeEmbedding(size=DIM + 1), collection=name
    )
    with pytest.raises(ValueError, match="dimension"):
        other.add_texts(["wrong size"])


def test_a_key_without_admin_needs_an_existing_collection(
    server: Server,
    admin: StrataAdmin,
    new_tenant: NewTenant,
    embedding: DeterministicFakeEmbedding,
) -> None:
    t = new_tenant(permissions=["read", "write"])
    with Strata(server.url, t.key) as writer:
        store = StrataVectorStore(client=writer, embedding=embedding, collection="kb")
        with pytest.raises(PermissionDeniedError, match="'kb' does not exist, and the store"):
            store.add_texts(["needs a collection"])
        owner_key = admin.create_key(t.id, permissions=["admin"]).key
        with Strata(server.url, owner_key) as owner:
            owner.create_collection("kb", dim=DIM)
        assert len(store.add_texts(["now it works"])) == 1


def test_relevance_scores_and_retriever(store: StrataVectorStore) -> None:
    store.add_texts(["the cat sat on the mat", "quantum chromodynamics", "a dog in the fog"])
    scored = store.similarity_search_with_relevance_scores("the cat sat on the mat", k=3)
    assert scored[0][0].page_content == "the cat sat on the mat"
    assert scored[0][1] == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    raw = store.similarity_search_with_score("the cat sat on the mat", k=1)
    assert raw[0][1] == pytest.approx(1.0)  # cosine similarity of identical embeddings
    retriever = store.as_retriever(search_kwargs={"k": 2})
    docs = retriever.invoke("the cat sat on the mat")
    assert len(docs) == 2 and docs[0].page_content == "the cat sat on the mat"


def test_search_by_vector(store: StrataVectorStore, embedding: DeterministicFakeEmbedding) -> None:
    store.add_texts(["alpha", "beta"], ids=["a", "b"])
    docs = store.similarity_search_by_vector(embedding.embed_query("beta"), k=1)
    assert [(d.id, d.page_content) for d in docs] == [("b", "beta")]


def test_mmr_prefers_diverse_results(store: StrataVectorStore) -> None:
    store.add_texts(["same", "same", "different"], ids=["s1", "s2", "d1"])
    # Identical texts embed identically; MMR takes one of them, then the different one.
    docs = store.max_marginal_relevance_search("same", k=2, fetch_k=3, lambda_mult=0.25)
    assert sorted(d.id for d in docs if d.id) in (["d1", "s1"], ["d1", "s2"])
    assert mmr_select([1, 0], [[1, 0], [1, 0], [0.5, 1]], 2, 0.25) == [0, 2]
    # Without diversity, MMR is plain similarity order.
    assert mmr_select([1, 0], [[0, 1], [1, 0], [1, 0.1]], 3, 1.0) == [1, 2, 0]


def test_from_texts_with_url_and_key(server: Server, tenant: TenantKey) -> None:
    store = StrataVectorStore.from_texts(
        ["from texts"],
        DeterministicFakeEmbedding(size=DIM),
        metadatas=[{"src": "t"}],
        ids=["ft-1"],
        url=server.url,
        api_key=tenant.key,
        collection=unique("ft"),
    )
    assert store.get_by_ids(["ft-1"])[0].metadata == {"src": "t"}


async def test_async_methods_use_the_async_client(
    server: Server, tenant: TenantKey, embedding: DeterministicFakeEmbedding
) -> None:
    async with AsyncStrata(server.url, tenant.key) as aclient:
        # No sync client at all: every call below must go through the async one.
        store = await StrataVectorStore.afrom_texts(
            ["async one", "async two"],
            embedding,
            ids=["x1", "x2"],
            async_client=aclient,
            collection=unique("async"),
        )
        found = await store.asimilarity_search("async two", k=1)
        assert [d.id for d in found] == ["x2"]
        assert [d.id for d in await store.aget_by_ids(["x2", "missing", "x1"])] == ["x2", "x1"]
        await store.adelete(["x1"])
        assert [d.id for d in await store.aget_by_ids(["x1", "x2"])] == ["x2"]
        with pytest.raises(ValueError, match="delete_all=True"):
            await store.adelete()
        assert [d.id for d in await store.aget_by_ids(["x2"])] == ["x2"]
        await store.adelete(delete_all=True)
        assert await store.aget_by_ids(["x2"]) == []
        with pytest.raises(ValueError, match="async"):
            store.similarity_search("sync needs a sync client")
        # Maximal marginal relevance too, directly and through a retriever.
        await store.aadd_texts(["async three", "async four"], ids=["x3", "x4"])
        picked = await store.amax_marginal_relevance_search("async three", k=2, fetch_k=3)
        assert len(picked) == 2 and picked[0].id == "x3"
        retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 1})
        assert [d.id for d in await retriever.ainvoke("async four")] == ["x4"]


def test_an_existing_collections_metric_is_used(
    client: Strata, embedding: DeterministicFakeEmbedding
) -> None:
    name = unique("l2")
    client.create_collection(name, dim=DIM, metric="l2")
    store = StrataVectorStore(client=client, embedding=embedding, collection=name)
    store.add_texts(["near", "far away"])
    assert store.metric == "l2"
    [(doc, score)] = store.similarity_search_with_score("near", k=1)
    assert doc.page_content == "near" and score == pytest.approx(0.0, abs=1e-4)
    [(_, relevance)] = store.similarity_search_with_relevance_scores("near", k=1)
    assert relevance == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_a_new_stores_first_relevance_scores_follow_the_collections_metric(
    client: Strata, embedding: DeterministicFakeEmbedding, metric: str
) -> None:
    # A store made for an existing collection has not met it before its first search, and
    # LangChain takes the score mapping before it searches: the mapping must still be the
    # collection's metric's, not the constructor's default (cosine).
    name = unique("first" + metric)
    client.create_collection(name, dim=DIM, metric=metric)
    StrataVectorStore(client=client, embedding=embedding, collection=name).add_texts(
        ["near", "far away"]
    )
    fresh = StrataVectorStore(client=client, embedding=embedding, collection=name)
    first = fresh.similarity_search_with_relevance_scores("near", k=2)
    again = fresh.similarity_search_with_relevance_scores("near", k=2)
    assert fresh.metric == metric
    assert [s for _, s in first] == pytest.approx([s for _, s in again])
    if metric == "l2":
        assert first[0][1] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("metric", ["l2", "dot", "cosine"])
def test_relevance_scores_stay_in_0_1_for_vectors_of_any_length(
    client: Strata, embedding: DeterministicFakeEmbedding, metric: str
) -> None:
    # The fake embedding's vectors are far from unit length (norm about 2.8 at 8 dimensions):
    # LangChain's own mapping gave -3.92 here for l2, and warned.
    store = StrataVectorStore.from_texts(
        ["p", "q"], embedding, client=client, collection=unique("docs" + metric), metric=metric
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LangChain warns about scores outside [0, 1]
        scored = store.similarity_search_with_relevance_scores("p", k=2)
    raw = store.similarity_search_with_score("p", k=2)
    assert [d.page_content for d, _ in scored] == [d.page_content for d, _ in raw]
    assert scored[0][0].page_content == "p"
    assert all(0.0 <= s <= 1.0 for _, s in scored), scored
    assert scored[0][1] >= scored[1][1]
    assert [s for _, s in scored] == pytest.approx([relevance(metric, s) for _, s in raw])
    if metric == "l2":
        distance = -raw[1][1]
        assert distance > 1.5  # far beyond what the unit-vector mapping allows
        assert scored[0][1] == pytest.approx(1.0, abs=1e-4)
        assert scored[1][1] == pytest.approx(1 / (1 + distance))


def test_the_relevance_mapping_is_bounded_and_monotonic() -> None:
    scores = [-1e30, -1e4, -50.0, -3.92, -1.0, -0.5, 0.0, 0.5, 1.0, 3.92, 50.0, 1e4, 1e30]
    for metric, usable in [
        ("l2", [s for s in scores if s <= 0]),  # a negative distance
        ("dot", scores),
        ("cosine", [s for s in scores if -1 <= s <= 1]),
    ]:
        mapped = [relevance(metric, s) for s in usable]
        assert all(0.0 <= m <= 1.0 and math.isfinite(m) for m in mapped), (metric, mapped)
        assert mapped == sorted(mapped), (metric, mapped)
    assert relevance("l2", 0.0) == 1.0 and relevance("l2", -1.0) == 0.5
    assert relevance("dot", 0.0) == 0.5
    assert relevance("cosine", 1.0) == 1.0 and relevance("cosine", -1.0) == 0.0
    assert relevance("cosine", 1.0000001) == 1.0
    # The similarity itself, as other LangChain stores' relevance: unrelated is near 0.
    assert relevance("cosine", 0.0) == 0.0 and relevance("cosine", 0.62) == 0.62


def test_blank_texts_are_the_servers_bad_request(store: StrataVectorStore) -> None:
    for blank in ["", "   "]:
        with pytest.raises(BadRequestError, match="content: is empty or whitespace only"):
            store.add_texts(["fine", blank])
    # Nothing of the refused batches was written.
    assert store.similarity_search("fine", k=5) == []


def test_the_client_judges_blank_text_as_the_server_does(client: Strata) -> None:
    from strata_client.langchain import _blank

    # Format characters that are text, default-ignorable ones, unassigned ones the server
    # counts as invisible, and plain whitespace and controls.
    for c in ["\u0600", "\u2065", "\ufff0", "\U000e0000", "\u00ad", "\u200b", "\u061c",
              "\U00013430", "\x01", "\u3000", "x"]:
        text = c * 3
        try:
            client.search(text, k=1)
            refused = False
        except BadRequestError as e:
            assert "query: is empty or whitespace only" in str(e), (repr(c), e)
            refused = True
        assert _blank(text) == refused, repr(c)


def test_an_id_given_twice_is_refused_before_anything_is_written(
    store: StrataVectorStore,
) -> None:
    with pytest.raises(ValueError, match="given twice"):
        store.add_texts(["one", "two", "three"], ids=["a", "b", "a"])
    assert store.get_by_ids(["a", "b"]) == []


def test_batches_are_split_by_bytes_and_a_413_in_halves(
    store: StrataVectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import strata_client.langchain as lc

    # Many small requests under a small byte budget: every text written, in order.
    monkeypatch.setattr(lc, "BATCH_BYTES", 2_000)
    texts = [f"note {i} " + "x" * 300 for i in range(12)]
    ids = store.add_texts(texts, ids=[f"b{i}" for i in range(12)])
    assert ids == [f"b{i}" for i in range(12)]
    assert [d.page_content for d in store.get_by_ids(ids)] == texts
    # Bytes, not characters: 3-byte characters fill a request three times faster.
    monkeypatch.setattr(lc, "BATCH_BYTES", 3_000)
    wide = [f"wide {i} " + "日" * 500 for i in range(6)]
    assert len(lc._batches(store._records(wide, [None] * 6, None, None))) == 6
    # A request past the server's body limit (16 MiB here: 300 texts of 60 KB) is refused
    # whole, then sent again in halves, which pass.
    monkeypatch.setattr(lc, "BATCH_BYTES", 1 << 30)
    big = [f"long {i} " + "y" * 60_000 for i in range(300)]
    written = store.add_texts(big, ids=[f"L{i}" for i in range(300)])
    assert written == [f"L{i}" for i in range(300)]
    assert len(store.get_by_ids(written)) == 300


def test_a_failed_request_says_which_documents_earlier_ones_wrote(
    client: Strata, embedding: DeterministicFakeEmbedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    import strata_client.langchain as lc

    collection = unique("partial")
    bobs = StrataVectorStore(
        client=client, embedding=embedding, collection=collection, user_tokens=["u:bob"]
    )
    bobs.add_texts(["bob's"], ids=["taken"])
    alices = StrataVectorStore(
        client=client, embedding=embedding, collection=collection, user_tokens=["u:alice"]
    )
    monkeypatch.setattr(lc, "BATCH", 2)
    # The second request meets an id held outside Alice's scope: refused, after the first.
    with pytest.raises(ConflictError) as caught:
        alices.add_texts(["one", "two", "three", "four"], ids=["a1", "a2", "taken", "a3"])
    assert caught.value.written_ids == ["a1", "a2"]
    assert "written_ids" in str(caught.value)
    assert [d.id for d in alices.get_by_ids(["a1", "a2", "a3"])] == ["a1", "a2"]


def test_k_0_finds_nothing(store: StrataVectorStore) -> None:
    store.add_texts(["one"], ids=["z1"])
    assert store.similarity_search("one", k=0) == []
    assert store.similarity_search("one", k=1)[0].id == "z1"


def test_delete_is_idempotent_as_langchains_indexing_expects(store: StrataVectorStore) -> None:
    from langchain_core.indexing import InMemoryRecordManager, index

    store.add_texts(["one", "two"], ids=["d1", "d2"])
    assert store.delete(["d1", "missing"]) is True
    assert store.get_by_ids(["d1"]) == []
    assert store.delete(["d2", "d2"]) is True
    assert store.get_by_ids(["d2"]) == []
    # An incremental index whose cleanup meets a document deleted by other means.
    manager = InMemoryRecordManager(namespace=unique("idx"))
    manager.create_schema()
    docs = [Document(page_content=t, metadata={"source": "s"}) for t in ("a", "b")]
    index(docs, manager, store, cleanup="incremental", source_id_key="source")
    store.delete([manager.list_keys()[0]])
    result = index(docs[:1], manager, store, cleanup="incremental", source_id_key="source")
    assert result["num_deleted"] >= 1


def test_a_store_closes_the_client_it_made(server: Server, tenant: TenantKey) -> None:
    with StrataVectorStore(
        embedding=DeterministicFakeEmbedding(size=DIM),
        url=server.url,
        api_key=tenant.key,
        collection=unique("owned"),
    ) as store:
        store.add_texts(["kept"], ids=["k1"])
        http = store.client._transport.http
    assert http.is_closed
    # A client given to a store stays its owner's.
    with Strata(server.url, tenant.key) as client:
        StrataVectorStore(client=client, embedding=DeterministicFakeEmbedding(size=DIM)).close()
        assert not client._transport.http.is_closed


def test_bad_inputs_are_refused_before_sending(store: StrataVectorStore) -> None:
    with pytest.raises(TypeError, match="a filter is a dict"):
        store.similarity_search("x", filter="src")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="not JSON serializable"):
        store.add_texts(["dated"], metadatas=[{"at": datetime.date(2026, 1, 2)}])
    for blank in ["  ", "\u200b", "\u2060\n", "\x00", "\ufe0f"]:
        with pytest.raises(BadRequestError, match=r"texts\[1\]: content: is empty"):
            store.add_texts(["fine", blank], ids=["f1", "f2"])
    # Refused before anything is sent, in a later request too.
    import strata_client.langchain as lc

    texts = ["ok"] * (lc.BATCH + 1)
    metadatas = [{}] * lc.BATCH + [{"at": datetime.date(2026, 1, 2)}]
    with pytest.raises(BadRequestError, match=r"texts\[500\]"):
        store.add_texts(texts, metadatas=metadatas)
    # NaN (pandas' missing value) and half a surrogate pair have no JSON or UTF-8 form: also
    # refused before the first batch is sent, not after it was written.
    for bad in [{"score": math.nan}, {"note": "\ud800"}]:
        with pytest.raises(BadRequestError, match=r"texts\[500\]"):
            store.add_texts(texts, metadatas=[{}] * lc.BATCH + [bad])
    # Lists that do not match are refused before the texts are embedded or the collection
    # created.
    fresh = StrataVectorStore(
        client=store.client, embedding=store.embeddings, collection=unique("docs")
    )
    with pytest.raises(ValueError, match="1 metadatas for 2 texts"):
        fresh.add_texts(["a", "b"], metadatas=[{}])
    with pytest.raises(BadRequestError, match=r"texts\[1\]"):
        fresh.add_texts(["a", "b"], metadatas=[{}, {"score": math.nan}])
    assert fresh._dim is None
    assert store.get_by_ids(["f1"]) == []
    assert store.similarity_search("ok", k=1) == []


def test_a_store_in_a_run_keeps_every_document_of_the_same_text(
    client: Strata, embedding: DeterministicFakeEmbedding
) -> None:
    # The server deduplicates a run's writes of one content; LangChain stores each document.
    store = StrataVectorStore(
        client=client, embedding=embedding, collection=unique("docs"), run_id="chat-1"
    )
    first = store.add_texts(["footer"], metadatas=[{"page": 1}])
    second = store.add_texts(["footer"], metadatas=[{"page": 2}])
    assert first != second
    pages = sorted(d.metadata["page"] for d in store.get_by_ids(first + second))
    assert pages == [1, 2]


def test_mmr_selection_is_incremental_and_matches_the_definition() -> None:
    import random

    rng = random.Random(7)
    query = [rng.uniform(-1, 1) for _ in range(16)]
    candidates = [[rng.uniform(-1, 1) for _ in range(16)] for _ in range(40)]

    def cos(a: list, b: list) -> float:
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b)) / (na * nb)

    def naive(k: int, lam: float) -> list:
        chosen: list = []
        while len(chosen) < k:
            rest = [i for i in range(len(candidates)) if i not in chosen]
            best = max(
                rest,
                key=lambda i: lam * cos(query, candidates[i])
                - (1 - lam) * max((cos(candidates[i], candidates[j]) for j in chosen), default=0),
            )
            chosen.append(best)
        return chosen

    for k, lam in [(1, 0.5), (5, 0.25), (12, 0.75), (40, 0.5)]:
        assert mmr_select(query, candidates, k, lam) == naive(k, lam)
    assert mmr_select(query, candidates, 100, 0.5)[:5] == naive(5, 0.5)
