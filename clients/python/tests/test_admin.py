"""The operator client: tenant lifecycle, limits, export and import, keys, and audit logs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from strata_client import (
    AuthenticationError,
    BackupFailedError,
    BadRequestError,
    ConflictError,
    MigrationStatus,
    NotFoundError,
    PermissionDeniedError,
    PurgedTenant,
    QuotaExceededError,
    Strata,
    StrataAdmin,
    StrataError,
    TenantSuspendedError,
)

from .conftest import NewTenant, Server, TenantKey, unique


def test_tenant_lifecycle(server: Server, admin: StrataAdmin) -> None:
    tid = unique("life")
    created = admin.create_tenant(tid, display_name="Life Inc.")
    assert (created.id, created.status, created.display_name) == (tid, "active", "Life Inc.")
    assert tid in [t.id for t in admin.list_tenants()]
    key = admin.create_key(tid).key
    with Strata(server.url, key) as c:
        c.add("kept through everything", id="m1")

        suspended = admin.suspend_tenant(tid)
        assert suspended.status == "suspended"
        with pytest.raises(TenantSuspendedError) as e:
            c.get("m1")
        assert (e.value.code, e.value.status) == ("TENANT_SUSPENDED", 403)
        assert admin.resume_tenant(tid).status == "active"
        assert c.get("m1").content == "kept through everything"

        deleted = admin.delete_tenant(tid)
        assert deleted.status == "deleted" and deleted.deleted_at is not None
        with pytest.raises(NotFoundError):
            c.get("m1")
        assert admin.restore_tenant(tid).status == "active"
        assert c.get("m1").content == "kept through everything"

        # The answer says whether the data file was rewritten without the tenant already:
        # on a healthy disk, it was.
        purged = admin.delete_tenant(tid, hard=True)
        assert isinstance(purged, PurgedTenant)
        assert (purged.id, purged.erasure, purged.erased) == (tid, "done", True)
        with pytest.raises(AuthenticationError):
            c.count()
    with pytest.raises(NotFoundError):
        admin.get_tenant(tid)


def test_a_tenant_is_created_with_its_limits_and_weight(
    server: Server, admin: StrataAdmin
) -> None:
    tid = unique("limited")
    created = admin.create_tenant(tid, limits={"max_vectors": 2}, weight=3)
    assert (created.limits.max_vectors, created.weight) == (2, 3)
    key = admin.create_key(tid, permissions=["read", "write", "admin"]).key
    with Strata(server.url, key) as c:
        c.create_collection("notes", 4)
        c.add(vector=[1.0, 0.0, 0.0, 0.0], id="a", collection="notes")
        c.add(vector=[0.0, 1.0, 0.0, 0.0], id="b", collection="notes")
        # The quota holds from the tenant's first write: no PATCH was needed.
        with pytest.raises(QuotaExceededError):
            c.add(vector=[0.0, 0.0, 1.0, 0.0], id="c", collection="notes")
    # A bad limit names its field by its path, and nothing is created.
    bad = unique("badlimit")
    with pytest.raises(BadRequestError) as e:
        admin.create_tenant(bad, limits={"max_vectors": "ten"})
    assert "limits.max_vectors" in str(e.value)
    with pytest.raises(NotFoundError):
        admin.get_tenant(bad)


def test_tenant_metadata_is_set_merged_and_bounded(admin: StrataAdmin) -> None:
    tid = unique("meta")
    created = admin.create_tenant(tid, metadata={"team": "search", "owner": {"name": "ana"}})
    assert created.metadata == {"team": "search", "owner": {"name": "ana"}}
    assert admin.get_tenant(tid).metadata == created.metadata
    # Lists leave it out.
    assert [t.metadata for t in admin.list_tenants() if t.id == tid] == [None]
    # A merge patch: nested objects merge, None removes a key, other fields stay.
    t = admin.update_tenant(tid, metadata={"team": None, "owner": {"tz": "utc"}}, weight=2)
    assert (t.metadata, t.weight) == ({"owner": {"name": "ana", "tz": "utc"}}, 2)
    # Past a bound: refused naming the field, nothing changed.
    with pytest.raises(BadRequestError) as e:
        admin.update_tenant(tid, metadata={f"k{i}": i for i in range(65)})
    assert "metadata" in str(e.value)
    assert admin.get_tenant(tid).metadata == {"owner": {"name": "ana", "tz": "utc"}}
    # Left out, it stays; None removes it all.
    assert admin.update_tenant(tid, weight=3).metadata == {"owner": {"name": "ana", "tz": "utc"}}
    assert admin.update_tenant(tid, metadata=None).metadata == {}
    assert admin.get_tenant(tid).metadata == {}
    # A tenant without any has an empty one.
    assert admin.create_tenant(unique("nometa")).metadata == {}


def _clock_past(ms: int) -> None:
    """Waits (up to 30 s) until the wall clock in milliseconds is past ``ms``, so that a change
    made next carries a later ``updated_at``."""
    deadline = time.monotonic() + 30
    while time.time() * 1000 <= ms:
        assert time.monotonic() < deadline, f"the clock never passed {ms}"
        time.sleep(0.001)


def test_a_tenants_own_integrity_policy_is_set_shown_and_cleared(admin: StrataAdmin) -> None:
    tid = unique("policy")
    created = admin.create_tenant(tid, integrity_policy={"latency_contract_ms": 50})
    assert created.integrity_policy is not None
    assert created.integrity_policy["latency_contract_ms"] == 50
    assert created.updated_at == created.created_at
    shown = admin.tenant_integrity(tid)
    assert (shown["policy_source"], shown["policy"]["latency_contract_ms"]) == ("tenant", 50)
    # Fields left out keep the values in force (here the tenant's own).
    _clock_past(created.updated_at)
    t = admin.update_tenant(tid, integrity_policy={"consecutive": 2})
    assert t.integrity_policy is not None
    assert (t.integrity_policy["consecutive"], t.integrity_policy["latency_contract_ms"]) == (2, 50)
    assert t.updated_at > created.updated_at
    # Out of range: refused naming the field, nothing changed.
    with pytest.raises(BadRequestError) as e:
        admin.update_tenant(tid, integrity_policy={"stress_exit": 3.0})
    assert "integrity_policy.stress_enter" in str(e.value)
    assert admin.get_tenant(tid).integrity_policy == t.integrity_policy
    # Left out, it stays; None gives the tenant back to the server configuration.
    assert admin.update_tenant(tid, weight=2).integrity_policy == t.integrity_policy
    assert admin.update_tenant(tid, integrity_policy=None).integrity_policy is None
    assert admin.tenant_integrity(tid)["policy_source"] == "config_default"


def test_soft_deleted_tenants_are_purged(admin: StrataAdmin) -> None:
    tid = unique("purge")
    admin.create_tenant(tid)
    admin.delete_tenant(tid)
    assert tid in admin.purge_deleted(retention_secs=0)
    with pytest.raises(NotFoundError):
        admin.get_tenant(tid)


def test_limits_merge_and_usage(admin: StrataAdmin, client: Strata, tenant: TenantKey) -> None:
    admin.update_tenant(tenant.id, limits={"max_vectors": 100, "max_collections": 10}, weight=2)
    t = admin.update_tenant(tenant.id, limits={"max_collections": None}, display_name="Renamed")
    assert (t.limits.max_vectors, t.limits.max_collections) == (100, None)
    assert (t.weight, t.display_name) == (2, "Renamed")
    client.add("one")
    usage = admin.get_tenant(tenant.id).usage
    assert usage is not None and usage.records == 1 and usage.collections >= 1


def test_keys_are_minted_listed_and_revoked(
    server: Server, admin: StrataAdmin, tenant: TenantKey
) -> None:
    created = admin.create_key(
        tenant.id,
        name="reader",
        permissions=["read"],
        user_tokens=["u:alice"],
        expires_in_secs=3600,
    )
    assert created.key.startswith("sk_") and created.key not in repr(created)
    assert (created.tenant, created.name, created.permissions) == (tenant.id, "reader", ["read"])
    assert created.user_tokens == ["u:alice"] and created.expires_at is not None
    listed = {k.id: k for k in admin.list_keys(tenant=tenant.id)}
    assert created.id in listed and listed[created.id].revoked_at is None
    with Strata(server.url, created.key) as c:
        assert c.count() == 0
        revoked = admin.revoke_key(created.id)
        assert revoked.revoked_at is not None
        with pytest.raises(AuthenticationError):
            c.count()

    # Rotation: the successor carries the grant; the old key works until its grace ends.
    old = admin.create_key(tenant.id, name="rotated", user_tokens=["u:bob"])
    new = admin.rotate_key(old.id, grace_secs=600)
    assert new.key.startswith("sk_") and new.key not in repr(new) and new.id != old.id
    assert (new.name, new.user_tokens) == ("rotated", ["u:bob"])
    assert new.replaces is not None and new.replaces.id == old.id
    assert new.replaces.expires_at is not None
    with Strata(server.url, old.key) as c_old, Strata(server.url, new.key) as c_new:
        assert c_old.count() == 0 and c_new.count() == 0
        again = admin.rotate_key(new.id, grace_secs=0)
        assert again.replaces is not None and again.replaces.revoked_at is not None
        with pytest.raises(AuthenticationError):
            c_new.count()
        with pytest.raises(ConflictError):
            admin.rotate_key(new.id)


def test_export_and_import(
    server: Server, admin: StrataAdmin, client: Strata, tenant: TenantKey, tmp_path: Path
) -> None:
    client.add([{"content": f"exported {i}", "metadata": {"i": i}} for i in range(3)])
    client.add("private", user_tokens=["u:alice"])
    buffer = io.BytesIO()
    size = admin.export_tenant(tenant.id, buffer)
    assert size == len(buffer.getvalue()) > 0
    path = tmp_path / "export.ndjson"
    assert admin.export_tenant(tenant.id, path) > 0
    # A failed export leaves the file it would have replaced as it was, and no other file.
    exported = path.read_bytes()
    with pytest.raises(NotFoundError):
        admin.export_tenant(unique("nosuch"), path)
    assert path.read_bytes() == exported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.ndjson"]

    for source in (buffer.getvalue(), path):
        copy = unique("copy")
        imported = admin.import_tenant(copy, source)
        assert imported.id == copy and imported.usage is not None
        assert imported.usage.records == 4
        with Strata(server.url, admin.create_key(copy).key) as c:
            assert c.count() == 3
            assert c.count(user_tokens=["u:alice"]) == 4
        # The audit history comes along as the copy's own rows, marked as imported.
        whole = admin.create_key(copy, permissions=["read", "admin", "all_principals"])
        with Strata(server.url, whole.key) as c:
            rows = [r for r in c.history(limit=1000) if r.imported is not None]
            assert rows and all(r.tenant == copy and r.actor == "imported" for r in rows)
            assert all(r.client is None and r.request_id is None for r in rows)
            assert {(r.imported or {}).get("tenant") for r in rows} == {tenant.id}


def test_audit_logs(server: Server, admin: StrataAdmin, new_tenant: NewTenant) -> None:
    t = new_tenant()
    with Strata(server.url, t.key) as c:
        w = c.add("audited")
        c.delete(w.id)
        rows = c.history(limit=10)
        assert [r.action for r in rows][:2] == ["memory.delete", "memory.put"]
        assert all(r.tenant == t.id and r.outcome == "ok" and r.request_id for r in rows)
        assert [r.action for r in c.history(action="memory.put")] == ["memory.put"]
    admin.suspend_tenant(t.id)
    admin.resume_tenant(t.id)
    ops = admin.audit(tenant=t.id, limit=5)
    assert [r.action for r in ops][:2] == ["tenant.resume", "tenant.suspend"]
    assert ops[0].actor.startswith("operator")
    failures = admin.audit(action="auth.failure", limit=1000)
    assert all(r.action == "auth.failure" for r in failures)


def test_audit_pages_by_cursor_lose_and_repeat_nothing(
    server: Server, admin: StrataAdmin, new_tenant: NewTenant
) -> None:
    t = new_tenant()
    with Strata(server.url, t.key) as c:
        for i in range(12):
            c.add(f"audited {i}")
        whole = c.history(limit=1000)
        paged: list = []
        before = None
        while True:
            page = c.history(limit=5, before=before)
            paged.extend(page)
            if len(page) < 5:
                break
            before = page[-1].cursor
        assert [(r.at, r.seq) for r in paged] == [(r.at, r.seq) for r in whole]
    ops = admin.audit(tenant=t.id, limit=1000)
    first = admin.audit(tenant=t.id, limit=3)
    rest = admin.audit(tenant=t.id, limit=1000, before=first[-1].cursor)
    assert [(r.at, r.seq) for r in first + rest] == [(r.at, r.seq) for r in ops]


def test_tenant_keys_cannot_administer(server: Server, tenant: TenantKey) -> None:
    with StrataAdmin(server.url, tenant.key) as not_an_operator:
        with pytest.raises(PermissionDeniedError):
            not_an_operator.list_tenants()


def test_node_operations(server: Server, admin: StrataAdmin) -> None:
    tid = unique("ops")
    created = admin.create_tenant(tid, isolation="partition", index_params={"m": 24})
    assert created.isolation == "partition"
    assert created.index_params is not None and created.index_params["m"] == 24
    key = admin.create_key(tid, permissions=["read", "write", "admin"]).key
    with Strata(server.url, key) as c:
        c.create_collection("ops", dim=3)
        for i in range(3):
            c.add(f"operations note {i}", vector=[1, i, 0], collection="ops")
        assert len(c.search(vector=[1, 1, 0], k=3, collection="ops").hits) == 3

    report = admin.verify_tenant(tid)
    assert report.ok and report.problems == [] and report.records == 3
    assert report.usage_stored == report.usage_recounted
    # Nothing damaged: a repair removes nothing.
    assert admin.repair_tenant(tid).removed == []
    assert admin.repair_tenant(tid).tenant == tid

    residency = admin.tenant_residency(tid)
    assert residency.pinned and residency.resident
    assert tid in [t["id"] for t in admin.residency()["tenants"]]
    assert admin.tenant_integrity(tid)["state"] == "normal"

    plan = admin.migrate_tenant(tid, "shared", dry_run=True)
    assert (plan.from_level, plan.to_level, plan.dry_run) == ("partition", "shared", True)
    assert not plan.moves_data and plan.records == 0  # shared <-> partition moves no data
    assert admin.get_tenant(tid).isolation == "partition"
    done = admin.migrate_tenant(tid, "shared")
    assert not done.dry_run
    status = admin.migration_status(tid)
    assert status.level == "shared" and status.to_level == "shared"
    assert not admin.tenant_residency(tid).pinned

    # Into its own storage file and back: the data moves, nothing is lost.
    plan = admin.migrate_tenant(tid, "dedicated", dry_run=True)
    assert plan.moves_data and plan.records == 3 and plan.bytes > 0
    started = admin.migrate_tenant(tid, "dedicated", wait=False)
    assert started.moves_data and not started.dry_run
    # Listed while it runs (a short move may have ended already).
    for running in admin.running_migrations():
        assert running.tenant == tid and running.status.to_level == "dedicated"
    status = admin.wait_for_migration(tid, timeout=60)
    assert not status.moving and status.state in ("done", "rebuilding")
    assert status.level == "dedicated" and status.moves_data
    assert status.keys_copied >= status.keys_total > 0
    assert status.finished_at is not None and status.started_at is not None
    assert status.finished_at >= status.started_at
    report = admin.verify_tenant(tid)
    assert report.ok and report.dedicated_file and report.records == 3
    # By default the client waits for the move (polling its status) before it returns.
    admin.migrate_tenant(tid, "shared", timeout=60)
    assert admin.migration_status(tid).state in ("done", "rebuilding")
    report = admin.verify_tenant(tid)
    assert report.ok and not report.dedicated_file and report.records == 3
    # No move runs or was cut short: nothing to cancel.
    with pytest.raises(ConflictError):
        admin.cancel_migration(tid)
    assert admin.migration_status(tid).state in ("done", "rebuilding")
    assert not admin.migration_status(tid).will_resume

    big = admin.create_tenant(unique("big"), isolation="dedicated")
    assert big.isolation == "dedicated"
    assert admin.verify_tenant(big.id).dedicated_file

    page = admin.stats(limit=1)
    assert len(page["tenants"]) == 1 and "tenant_count" in page

    with pytest.raises(NotFoundError):
        admin.verify_tenant(unique("missing"))


def test_a_backup_is_taken_followed_and_found_again(server: Server, admin: StrataAdmin) -> None:
    tid = unique("bk")
    admin.create_tenant(tid)
    name = unique("nightly")
    done = admin.backup(name, timeout=120)
    assert (done.name, done.state) == (name, "done")
    assert done.rows_copied == done.rows_total and done.rows_total
    assert done.bytes and done.bytes > 0
    assert Path(done.path, "strata.redb").is_file()
    assert admin.backup_status(name) == done
    with pytest.raises(ConflictError):
        admin.backup(name)
    with pytest.raises(BadRequestError):
        admin.backup("not/one/name")
    with pytest.raises(NotFoundError):
        admin.backup_status(unique("never"))
    started = admin.backup(wait=False)
    assert started.state in ("running", "done") and started.name.endswith("Z")
    deadline = time.monotonic() + 120
    while admin.backup_status(started.name).running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert admin.backup_status(started.name).state == "done"


def test_a_failed_backup_raises_with_its_reason() -> None:
    """``backup()`` follows a started backup until it ends; one that failed raises with the
    server's reason. (A real backup fails on a full disk or a broken backup directory, which
    a test server cannot be given; the server's side of it is tested in Rust.)"""
    import httpx

    running = {"name": "b1", "state": "running", "path": "/backups/b1"}
    answers = iter(
        [
            (202, {**running, "phase": "snapshot", "rows_copied": 0}),
            (200, {**running, "phase": "copying", "rows_copied": 5, "rows_total": 9}),
            (200, {**running, "state": "failed", "error": "the backup directory's disk is full"}),
        ]
    )
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        status, body = next(answers)
        return httpx.Response(status, json=body)

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        with StrataAdmin("http://strata.test", "op-key", http_client=http) as admin:
            with pytest.raises(BackupFailedError, match="disk is full") as raised:
                admin.backup("b1", timeout=30)
    assert raised.value.backup.state == "failed" and raised.value.code == "BACKUP_FAILED"
    assert seen == [
        ("POST", "/v1/admin/backups"),
        ("GET", "/v1/admin/backups/b1"),
        ("GET", "/v1/admin/backups/b1"),
    ]


def test_an_interrupted_move_the_server_resumes_is_still_pending() -> None:
    """wait_for_migration keeps polling a move the server will resume; not one it will not."""
    base = {"level": "shared", "from": "shared", "to": "dedicated", "moves_data": True}
    resumed = MigrationStatus.from_json({**base, "state": "interrupted", "will_resume": True})
    assert resumed.pending and not resumed.moving
    left = MigrationStatus.from_json({**base, "state": "interrupted"})
    assert not left.will_resume and not left.pending
    for state in ("done", "failed", "cancelled"):
        assert not MigrationStatus.from_json({**base, "state": state}).pending
    assert MigrationStatus.from_json({**base, "state": "copying"}).pending


def test_a_hard_delete_answer_without_an_erasure_state_is_refused() -> None:
    # Read closed: an answer that does not say whether the bytes are gone is never taken as
    # an erasure done.
    owed = PurgedTenant.from_json({"id": "t", "purged": True, "erasure": "pending"})
    assert (owed.erasure, owed.erased) == ("pending", False)
    for answer in ({"id": "t", "purged": True}, {"id": "t", "purged": True, "erasure": "maybe"}):
        # Like the client's other bad answers, and saying the tenant is gone all the same.
        with pytest.raises(StrataError) as refused:
            PurgedTenant.from_json(answer)
        assert refused.value.code == "UNEXPECTED_RESPONSE"
        assert "already deleted" in refused.value.message
        assert refused.value.body == answer
