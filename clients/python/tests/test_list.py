"""Listing: pages in id order joined by the `after` cursor, and iteration over all pages."""

from __future__ import annotations

import pytest

from strata_client import AsyncStrata, BadRequestError, NewRecord, Strata


def test_pages_follow_the_cursor(client: Strata) -> None:
    written = client.add([{"content": f"memory {i}", "metadata": {"i": i}} for i in range(25)])
    ids = sorted(w.id for w in written)
    seen: list[str] = []
    page = client.list(limit=10)
    sizes = []
    while True:
        sizes.append(len(page))
        seen.extend(r.id for r in page)
        if page.next is None:
            break
        assert page.next == seen[-1]
        page = client.list(limit=10, after=page.next)
    assert sizes == [10, 10, 5]
    assert seen == ids
    assert [r.id for r in client.iter_all(page_size=7)] == ids


def test_listing_filters_and_default_page(client: Strata) -> None:
    client.add([{"content": f"m{i}", "metadata": {"i": i}} for i in range(120)])
    first = client.list()
    assert len(first) == 100 and first.next is not None
    evens = list(client.iter_all(filter={"i": {"$in": list(range(0, 120, 2))}}, page_size=25))
    assert len(evens) == 60 and all(r.metadata["i"] % 2 == 0 for r in evens)
    assert client.count({"i": {"$lt": 10}}) == 10


async def test_async_iteration_over_pages(aclient: AsyncStrata) -> None:
    await aclient.add([{"content": f"a{i}"} for i in range(12)])
    seen = [r.content async for r in aclient.iter_all(page_size=5)]
    assert sorted(c or "" for c in seen) == sorted(f"a{i}" for i in range(12))


def test_records_come_without_vectors_unless_include_names_them(client: Strata) -> None:
    client.create_collection("pts", dim=2)
    client.add(
        [
            NewRecord(id="p1", content="one", vector=[1, 0], collection="pts", metadata={"n": 1}),
            NewRecord(id="p2", content="two", metadata={"n": 2}),
        ]
    )
    lean = client.get("p1")
    assert (lean.content, lean.metadata, lean.collection) == ("one", {"n": 1}, "pts")
    assert lean.vector is None
    assert client.get("p1", include=["record", "vector"]).vector == [1, 0]
    only = client.get("p1", include=["content"])
    assert (only.id, only.content, only.metadata, only.vector) == ("p1", "one", {}, None)
    # The empty metadata is a placeholder, and the record says so.
    assert only.fields == {"id", "content"} and "metadata" in lean.fields
    assert "vector" not in lean.fields

    page = client.list()
    assert [(r.id, r.content, r.vector) for r in page] == [
        ("p1", "one", None),
        ("p2", "two", None),
    ]
    full = client.list(include=["record", "vector"])
    assert [(r.id, r.vector) for r in full] == [("p1", [1, 0]), ("p2", None)]
    ids = client.list(limit=1, include=[])
    assert [(r.id, r.content) for r in ids] == [("p1", None)] and ids.next == "p1"
    vectors = list(client.iter_all(page_size=1, include=["vector"]))
    assert [(r.id, r.vector) for r in vectors] == [("p1", [1, 0]), ("p2", None)]

    # A patch and evidence answer the new version the same way.
    assert client.update("p1", metadata={"m": 1}).vector is None
    patched = client.update("p1", metadata={"m": 2}, include=["record", "vector"])
    assert patched.vector == [1, 0] and patched.metadata == {"n": 1, "m": 2}
    assert client.add_evidence("p1", corroborate=True).vector is None
    assert client.add_evidence("p1", corroborate=True, include=["vector"]).vector == [1, 0]

    with pytest.raises(BadRequestError, match="expected content, metadata, vector or record"):
        client.get("p1", include=["vectors"])
    with pytest.raises(BadRequestError, match="include"):
        client.list(include=["vectors"])
    with pytest.raises(TypeError):
        client.get("p1", include="vector")


async def test_async_records_take_include_too(aclient: AsyncStrata) -> None:
    await aclient.create_collection("apts", dim=2)
    await aclient.add(NewRecord(id="a1", vector=[0, 1], collection="apts"))
    assert (await aclient.get("a1")).vector is None
    assert (await aclient.get("a1", include=["vector"])).vector == [0, 1]
    listed = [r.vector async for r in aclient.iter_all(include=["record", "vector"])]
    assert listed == [[0, 1]]
    assert [r.vector for r in await aclient.list()] == [None]
