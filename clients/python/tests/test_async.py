"""The async twins: the same API as the sync clients, awaited, against the same server."""

from __future__ import annotations

import inspect
import io

import pytest

from strata_client import (
    AsyncStrata,
    AsyncStrataAdmin,
    NewRecord,
    NotFoundError,
    Strata,
    StrataAdmin,
    TenantSuspendedError,
)

from .conftest import Server, TenantKey, unique


@pytest.mark.parametrize("sync, twin", [(Strata, AsyncStrata), (StrataAdmin, AsyncStrataAdmin)])
def test_twins_have_the_same_api(sync: type, twin: type) -> None:
    def api(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(f)
            for name, f in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }

    ours, theirs = api(sync), api(twin)
    assert ours.keys() == theirs.keys()
    for name, signature in ours.items():
        assert list(signature.parameters) == list(theirs[name].parameters), name
        if name not in ("close", "iter_all", "scoped"):
            assert inspect.iscoroutinefunction(getattr(twin, name)), name


async def test_memories_end_to_end(aclient: AsyncStrata) -> None:
    w = await aclient.add("Alice takes oat milk", user_tokens=["u:alice"], metadata={"t": 1})
    batch = await aclient.add([NewRecord(content="shared coffee note"), {"content": "tea"}])
    assert w.created and len(batch) == 2
    assert await aclient.add([]) == []  # nothing to write, nothing sent
    alice = aclient.scoped(user_tokens=["u:alice"])
    assert (await alice.get(w.id)).content == "Alice takes oat milk"
    with pytest.raises(NotFoundError):
        await aclient.get(w.id)
    hits = await alice.search("oat milk coffee", k=5)
    assert hits.mode == "text" and hits[0].record.id == w.id
    assert len(await aclient.search("oat", k=5)) == 0
    updated = await alice.update(w.id, metadata={"t": None, "u": 2})
    assert updated.metadata == {"u": 2}
    assert await aclient.count() == 2 and await alice.count() == 3
    page = await alice.list(limit=2)
    assert len(page) == 2 and page.next is not None
    assert await aclient.delete_where({"content": "tea"}) == 1
    await alice.delete(w.id)
    assert await alice.count() == 1
    assert [r.action for r in await aclient.history(limit=3)][0] == "memory.delete"


async def test_collections_and_vectors(aclient: AsyncStrata) -> None:
    c = await aclient.create_collection("planes", dim=2, metric="l2")
    assert (c.name, c.dim, c.metric) == ("planes", 2, "l2")
    await aclient.add(
        [
            NewRecord(vector=[0, 0], collection="planes", id="origin"),
            NewRecord(vector=[5, 5], collection="planes", id="far"),
        ]
    )
    hits = await aclient.search(vector=[1, 1], collection="planes", k=2)
    assert [h.record.id for h in hits] == ["origin", "far"]
    assert hits[0].score == pytest.approx(-(2**0.5), abs=1e-4)  # negative L2 distance
    assert "planes" in [c.name for c in await aclient.list_collections()]
    assert await aclient.delete_collection("planes") == 2


async def test_async_admin(server: Server, tenant: TenantKey) -> None:
    async with AsyncStrataAdmin(server.url, server.operator_key) as admin:
        tid = unique("async")
        assert (await admin.create_tenant(tid)).status == "active"
        key = await admin.create_key(tid, permissions=["read", "write"])
        assert [k.id for k in await admin.list_keys(tenant=tid)] == [key.id]
        async with AsyncStrata(server.url, key.key) as c:
            await c.add("async tenant memory")
            await admin.suspend_tenant(tid)
            with pytest.raises(TenantSuspendedError):
                await c.count()
            await admin.resume_tenant(tid)
            assert await c.count() == 1
        export = io.BytesIO()
        assert await admin.export_tenant(tid, export) > 0
        copy = unique("async-copy")
        imported = await admin.import_tenant(copy, io.BytesIO(export.getvalue()))
        assert imported.usage is not None and imported.usage.records == 1
        rows = await admin.audit(tenant=tid, action="tenant.suspend")
        assert len(rows) == 1
        assert (await admin.update_tenant(tid, weight=3)).weight == 3
        assert (await admin.revoke_key(key.id)).revoked_at is not None
        assert (await admin.delete_tenant(copy, hard=True)).erasure == "done"
        with pytest.raises(NotFoundError):
            await admin.get_tenant(copy)
        assert (await admin.get_tenant(tid)).usage is not None
