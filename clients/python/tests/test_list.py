"""Listing: pages in id order joined by the `after` cursor, and iteration over all pages."""

from __future__ import annotations

from strata_client import AsyncStrata, Strata


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
