"""Operator clients: :class:`StrataAdmin` and its async twin :class:`AsyncStrataAdmin`.

They speak to ``/v1/admin`` with an operator key: tenants and their lifecycle, quotas and
limits, export and import, API keys, and the audit log of every tenant and of the server.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import TracebackType
from typing import (
    IO,
    Any,
    AsyncIterator,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Type,
    Union,
    overload,
)

import httpx

from ._calls import _segment, audit_params
from ._export_file import aexport_to, export_to
from ._http import DEFAULT_TIMEOUT, AsyncTransport, Call, SyncTransport, from_env, no_answer
from .errors import StrataError
from .models import (
    ApiKey,
    AuditRow,
    BackupStatus,
    CreatedKey,
    MigrationReport,
    MigrationStatus,
    Millis,
    PurgedTenant,
    RepairReport,
    RotatedKey,
    RunningMigration,
    Tenant,
    TenantResidency,
    VerifyReport,
    to_millis,
)
from .retry import RetryPolicy


class _NotGiven:
    """The default of an argument whose ``None`` means something (``null``: remove)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: An argument left out, told from one given as ``None``.
NOT_GIVEN: Any = _NotGiven()

__all__ = ["StrataAdmin", "AsyncStrataAdmin"]

#: A file to write an export to: a path, or a binary file open for writing.
ExportTarget = Union[str, "os.PathLike[str]", IO[bytes]]
#: An export to import: a path, the bytes themselves, or a binary file open for reading.
ImportSource = Union[str, "os.PathLike[str]", bytes, IO[bytes]]

_CHUNK = 64 * 1024


def _tenants(d: Any) -> List[Tenant]:
    return [Tenant.from_json(t) for t in d["tenants"]]


def _keys(d: Any) -> List[ApiKey]:
    return [ApiKey.from_json(k) for k in d["keys"]]


def _rows(d: Any) -> List[AuditRow]:
    return [AuditRow.from_json(r) for r in d["rows"]]


def _purged(d: Any) -> List[str]:
    return [str(t) for t in d["purged"]]


def _deleted(d: Any) -> Union[Tenant, PurgedTenant]:
    # A hard delete answers `{id, purged: true, erasure}`: the tenant is gone, its erasure
    # done or owed.
    return PurgedTenant.from_json(d) if d.get("purged") else Tenant.from_json(d)


class MigrationFailedError(StrataError):
    """A data move :meth:`StrataAdmin.migrate_tenant` waited for ended ``failed``,
    ``interrupted`` or ``cancelled``; the tenant stayed whole at its old level. ``migration``
    says why."""

    def __init__(self, id: str, status: MigrationStatus) -> None:
        super().__init__(
            f"migration of {id} {status.state}: {status.error or 'no reason given'}",
            code="MIGRATION_" + status.state.upper(),
        )
        #: The migration's status when the wait ended.
        self.migration = status


class BackupFailedError(StrataError):
    """A backup :meth:`StrataAdmin.backup` waited for failed; nothing is left under its name.
    ``backup`` says why."""

    def __init__(self, status: BackupStatus) -> None:
        super().__init__(
            f"backup {status.name} failed: {status.error or 'no reason given'}",
            code="BACKUP_FAILED",
        )
        #: The backup's status when it ended.
        self.backup = status


def _check_migration(id: str, status: MigrationStatus) -> None:
    if status.state in ("failed", "interrupted", "cancelled"):
        raise MigrationFailedError(id, status)


def _check_backup(status: BackupStatus) -> None:
    if status.state in ("failed", "interrupted"):
        raise BackupFailedError(status)


class _AdminCalls:
    """Builds the operator API's requests."""

    @staticmethod
    def _create_tenant(
        id: str,
        display_name: Optional[str],
        isolation: Optional[str] = None,
        index_params: Optional[Mapping[str, Any]] = None,
        parent: Optional[str] = None,
        limits: Optional[Mapping[str, Any]] = None,
        weight: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        integrity_policy: Optional[Mapping[str, Any]] = None,
    ) -> Call[Tenant]:
        body: Dict[str, Any] = {"id": id}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if integrity_policy is not None:
            body["integrity_policy"] = dict(integrity_policy)
        if display_name is not None:
            body["display_name"] = display_name
        if isolation is not None:
            body["isolation"] = isolation
        if index_params is not None:
            body["index_params"] = dict(index_params)
        if parent is not None:
            body["parent"] = parent
        if limits is not None:
            body["limits"] = dict(limits)
        if weight is not None:
            body["weight"] = weight
        return Call("POST", "/v1/admin/tenants", Tenant.from_json, json=body, idempotent=False)

    @staticmethod
    def _list_tenants() -> Call[List[Tenant]]:
        return Call("GET", "/v1/admin/tenants", _tenants)

    @staticmethod
    def _get_tenant(id: str) -> Call[Tenant]:
        return Call("GET", f"/v1/admin/tenants/{_segment(id)}", Tenant.from_json)

    @staticmethod
    def _update_tenant(
        id: str,
        display_name: Optional[str],
        limits: Optional[Mapping[str, Any]],
        weight: Optional[int],
        metadata: Any = NOT_GIVEN,
        integrity_policy: Any = NOT_GIVEN,
    ) -> Call[Tenant]:
        body: Dict[str, Any] = {}
        if metadata is not NOT_GIVEN:
            body["metadata"] = None if metadata is None else dict(metadata)
        if integrity_policy is not NOT_GIVEN:
            body["integrity_policy"] = (
                None if integrity_policy is None else dict(integrity_policy)
            )
        if display_name is not None:
            body["display_name"] = display_name
        if limits is not None:
            body["limits"] = dict(limits)
        if weight is not None:
            body["weight"] = weight
        return Call("PATCH", f"/v1/admin/tenants/{_segment(id)}", Tenant.from_json, json=body)

    @staticmethod
    def _transition(id: str, action: str) -> Call[Tenant]:
        return Call("POST", f"/v1/admin/tenants/{_segment(id)}/{action}", Tenant.from_json)

    @staticmethod
    def _delete_tenant(id: str, hard: bool) -> Call[Union[Tenant, PurgedTenant]]:
        if not hard:
            # Deleting again keeps what the first delete found: safe to repeat.
            return Call("DELETE", f"/v1/admin/tenants/{_segment(id)}", _deleted)
        # The erasure rewrites the data file before it answers (a minute for a large one);
        # a repeat would find no tenant and report the erasure that happened as a 404.
        return Call(
            "DELETE",
            f"/v1/admin/tenants/{_segment(id)}",
            _deleted,
            params=[("hard", "true")],
            slow=True,
            idempotent=False,
        )

    @staticmethod
    def _purge_deleted(retention_secs: Optional[int]) -> Call[List[str]]:
        body = {} if retention_secs is None else {"retention_secs": retention_secs}
        # Each purge rewrites the data file; a repeat would answer [] for purges that happened.
        return Call(
            "POST",
            "/v1/admin/tenants/purge-deleted",
            _purged,
            json=body,
            slow=True,
            idempotent=False,
        )

    @staticmethod
    def _export(id: str) -> Call[None]:
        return Call("GET", f"/v1/admin/tenants/{_segment(id)}/export", no_answer)

    @staticmethod
    def _import(id: str, content: Any) -> Call[Tenant]:
        return Call(
            "POST",
            f"/v1/admin/tenants/{_segment(id)}/import",
            Tenant.from_json,
            headers={"content-type": "application/x-ndjson"},
            content=content,
            # The server answers once every line is stored (and the tenant migrated to the
            # level its export names): minutes for a large one.
            slow=True,
            idempotent=False,
        )

    @staticmethod
    def _create_key(
        tenant: str,
        name: Optional[str],
        permissions: Optional[Sequence[str]],
        user_tokens: Optional[Sequence[str]],
        domains: Optional[Sequence[str]],
        expires_at: Optional[Millis],
        expires_in_secs: Optional[int],
    ) -> Call[CreatedKey]:
        body: Dict[str, Any] = {"tenant": tenant}
        for field, value in [
            ("name", name),
            ("permissions", permissions),
            ("user_tokens", user_tokens),
            ("domains", domains),
        ]:
            if isinstance(value, str) and field != "name":
                raise TypeError(f"{field} must be a list of strings")
            if value is not None:
                body[field] = value if isinstance(value, str) else list(value)
        if expires_at is not None:
            body["expires_at"] = to_millis(expires_at)
        if expires_in_secs is not None:
            body["expires_in_secs"] = expires_in_secs
        # Each attempt mints a new secret: never repeat one whose answer was lost.
        return Call("POST", "/v1/admin/keys", CreatedKey.from_json, json=body, idempotent=False)

    @staticmethod
    def _list_keys(tenant: Optional[str]) -> Call[List[ApiKey]]:
        params = [] if tenant is None else [("tenant", tenant)]
        return Call("GET", "/v1/admin/keys", _keys, params=params)

    @staticmethod
    def _revoke_key(id: str) -> Call[ApiKey]:
        return Call("DELETE", f"/v1/admin/keys/{_segment(id)}", ApiKey.from_json)

    @staticmethod
    def _rotate_key(
        id: str,
        grace_secs: Optional[int],
        expires_at: Optional[Millis],
        expires_in_secs: Optional[int],
    ) -> Call[RotatedKey]:
        body: Dict[str, Any] = {}
        if grace_secs is not None:
            body["grace_secs"] = grace_secs
        if expires_at is not None:
            body["expires_at"] = to_millis(expires_at)
        if expires_in_secs is not None:
            body["expires_in_secs"] = expires_in_secs
        # Each attempt mints a new successor: never repeat one whose answer was lost.
        return Call(
            "POST",
            f"/v1/admin/keys/{_segment(id)}/rotate",
            RotatedKey.from_json,
            json=body,
            idempotent=False,
        )

    @staticmethod
    def _audit(
        tenant: Optional[str],
        action: Optional[str],
        since: Optional[Millis],
        until: Optional[Millis],
        limit: Optional[int],
        before: Optional[str] = None,
    ) -> Call[List[AuditRow]]:
        return Call(
            "GET",
            "/v1/admin/audit",
            _rows,
            params=audit_params(tenant, action, since, until, limit, before),
        )

    # One node's operations: residency, verification, integrity, isolation levels, stats.

    @staticmethod
    def _residency() -> Call[Dict[str, Any]]:
        return Call("GET", "/v1/admin/residency", dict)

    @staticmethod
    def _tenant_residency(id: str) -> Call[TenantResidency]:
        return Call(
            "GET", f"/v1/admin/tenants/{_segment(id)}/residency", TenantResidency.from_json
        )

    @staticmethod
    def _verify(id: str) -> Call[VerifyReport]:
        # Read-only on the server: repeating it is harmless.
        return Call(
            "POST", f"/v1/admin/tenants/{_segment(id)}/verify", VerifyReport.from_json
        )

    @staticmethod
    def _repair(id: str) -> Call[RepairReport]:
        # A second repair finds nothing more to remove: repeating it is harmless.
        return Call(
            "POST", f"/v1/admin/tenants/{_segment(id)}/repair", RepairReport.from_json
        )

    @staticmethod
    def _running_migrations() -> Call[List[RunningMigration]]:
        return Call(
            "GET",
            "/v1/admin/migrations",
            lambda d: [RunningMigration.from_json(m) for m in d["migrations"]],
        )

    @staticmethod
    def _integrity(id: str) -> Call[Dict[str, Any]]:
        return Call("GET", f"/v1/admin/tenants/{_segment(id)}/integrity", dict)

    @staticmethod
    def _migrate(
        id: str,
        target: str,
        index_params: Optional[Mapping[str, Any]],
        dry_run: bool,
    ) -> Call[MigrationReport]:
        # The server never holds the request for the copy: the client polls instead.
        body: Dict[str, Any] = {"target": target, "dry_run": dry_run, "wait": False}
        if index_params is not None:
            body["index_params"] = dict(index_params)
        return Call(
            "POST",
            f"/v1/admin/tenants/{_segment(id)}/migrate",
            MigrationReport.from_json,
            json=body,
            idempotent=dry_run,
        )

    @staticmethod
    def _migration(id: str) -> Call[MigrationStatus]:
        return Call(
            "GET", f"/v1/admin/tenants/{_segment(id)}/migration", MigrationStatus.from_json
        )

    @staticmethod
    def _backup(name: Optional[str]) -> Call[BackupStatus]:
        # Never retried: a retry of a started backup would be refused as a name in use, or
        # start a second one under another time's name.
        body: Dict[str, Any] = {} if name is None else {"name": name}
        return Call(
            "POST", "/v1/admin/backups", BackupStatus.from_json, json=body, idempotent=False
        )

    @staticmethod
    def _backup_status(name: str) -> Call[BackupStatus]:
        return Call("GET", f"/v1/admin/backups/{_segment(name)}", BackupStatus.from_json)

    @staticmethod
    def _cancel_migration(id: str) -> Call[MigrationStatus]:
        # The server waits up to a minute for the move to stop before it answers; a repeat
        # would find nothing to cancel and report the cancel that held as a 409.
        return Call(
            "DELETE",
            f"/v1/admin/tenants/{_segment(id)}/migration",
            MigrationStatus.from_json,
            slow=True,
            idempotent=False,
        )

    @staticmethod
    def _stats(after: Optional[str], limit: Optional[int]) -> Call[Dict[str, Any]]:
        params = []
        if after is not None:
            params.append(("after", after))
        if limit is not None:
            params.append(("limit", str(limit)))
        return Call("GET", "/v1/admin/stats", dict, params=params)


def _file_chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk


async def _async_chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    # Reads block briefly; an import is read once, in order, so this stays simple.
    for chunk in _file_chunks(f):
        yield chunk


class StrataAdmin(_AdminCalls):
    """The operator's client. ``url`` and ``operator_key`` default to ``STRATA_URL`` and
    ``STRATA_OPERATOR_KEY``::

        admin = StrataAdmin("http://127.0.0.1:7700", operator_key)
        admin.create_tenant("acme", display_name="Acme Inc.")
        key = admin.create_key("acme", permissions=["read", "write"])
        client = Strata("http://127.0.0.1:7700", key.key)
    """

    def __init__(
        self,
        url: Optional[str] = None,
        operator_key: Optional[str] = None,
        *,
        retries: Union[int, RetryPolicy] = 3,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self._transport = SyncTransport(
            from_env(url, "STRATA_URL", "STRATA_SERVER"),
            from_env(operator_key, "STRATA_OPERATOR_KEY", "STRATA_KEY"),
            timeout=timeout,
            retries=retries,
            http_client=http_client,
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> StrataAdmin:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # Tenants.

    def create_tenant(
        self,
        id: str,
        *,
        display_name: Optional[str] = None,
        isolation: Optional[str] = None,
        index_params: Optional[Mapping[str, Any]] = None,
        parent: Optional[str] = None,
        limits: Optional[Mapping[str, Any]] = None,
        weight: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        integrity_policy: Optional[Mapping[str, Any]] = None,
    ) -> Tenant:
        """Registers a tenant with the server's default collections, at isolation level
        ``isolation`` (``shared`` by default; ``partition``: always resident, with its own
        graph parameters ``index_params``; ``dedicated``: as ``partition``, with its data in
        its own storage file), as a child of ``parent`` if given (shares published to
        children reach it), with ``limits`` (e.g. ``{"max_vectors": 100000}``; absent ones
        are unlimited), fair-share ``weight`` and operator ``metadata`` (a JSON object of at
        most 64 keys, 16 KiB encoded, 8 levels deep; shown to operators only) and its own
        ``integrity_policy`` (thresholds such as ``{"latency_contract_ms": 50}``, fields left
        out taking the server configuration's values; without one, the configuration's apply)
        from the start."""
        return self._transport.run(
            self._create_tenant(
                id,
                display_name,
                isolation,
                index_params,
                parent,
                limits,
                weight,
                metadata,
                integrity_policy,
            )
        )

    def list_tenants(self) -> List[Tenant]:
        return self._transport.run(self._list_tenants())

    def get_tenant(self, id: str) -> Tenant:
        """A tenant, with its ``usage`` against its quotas."""
        return self._transport.run(self._get_tenant(id))

    def update_tenant(
        self,
        id: str,
        *,
        display_name: Optional[str] = None,
        limits: Optional[Mapping[str, Any]] = None,
        weight: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = NOT_GIVEN,
        integrity_policy: Optional[Mapping[str, Any]] = NOT_GIVEN,
    ) -> Tenant:
        """Changes a tenant's name, limits, scheduling weight or metadata. ``limits`` is
        merged: named limits change (``max_vectors``, ``max_storage_bytes``,
        ``max_collections``, ``max_qps``, ``burst``, ``max_concurrent``), a ``None`` removes
        one, others stay. ``metadata`` is a JSON merge patch the same way (nested objects are
        merged too; a ``None`` value removes its key); ``metadata=None`` removes it all (and
        clears a damaged stored row, which a merge refuses with ``METADATA_DAMAGED``); leaving
        it out keeps it. ``integrity_policy`` sets the tenant's own thresholds (fields left
        out keep the values in force: its own, else the server configuration's);
        ``integrity_policy=None`` clears them, so the server configuration's apply again."""
        return self._transport.run(
            self._update_tenant(id, display_name, limits, weight, metadata, integrity_policy)
        )

    def suspend_tenant(self, id: str) -> Tenant:
        """Refuses the tenant's data calls with ``TENANT_SUSPENDED``; its data is kept."""
        return self._transport.run(self._transition(id, "suspend"))

    def resume_tenant(self, id: str) -> Tenant:
        return self._transport.run(self._transition(id, "resume"))

    def restore_tenant(self, id: str) -> Tenant:
        """Undoes a soft delete, within the retention period."""
        return self._transport.run(self._transition(id, "restore"))

    @overload
    def delete_tenant(self, id: str, *, hard: Literal[False] = False) -> Tenant: ...

    @overload
    def delete_tenant(self, id: str, *, hard: Literal[True]) -> PurgedTenant: ...

    def delete_tenant(self, id: str, *, hard: bool = False) -> Union[Tenant, PurgedTenant]:
        """Soft-deletes a tenant (restorable until the retention period ends) and returns it;
        with ``hard=True`` erases it and its keys at once, irrevocably, and returns a
        :class:`PurgedTenant` whose ``erasure`` says whether its bytes are gone from the data
        file already (``"done"``) or the file's rewrite is owed (``"pending"``). An answer
        without that state raises :class:`StrataError` (``UNEXPECTED_RESPONSE``) though the
        tenant is already erased."""
        return self._transport.run(self._delete_tenant(id, hard))

    def purge_deleted(self, *, retention_secs: Optional[int] = None) -> List[str]:
        """Purges tenants soft-deleted at least ``retention_secs`` ago (default: the server's
        retention); returns their ids."""
        return self._transport.run(self._purge_deleted(retention_secs))

    def export_tenant(self, id: str, target: ExportTarget) -> int:
        """Streams the tenant's export (JSON lines) into a path or binary file; returns the
        bytes written. A path is replaced only by a complete export: it is written beside
        and renamed over once the end line has arrived, so a failed export (an unknown
        tenant, a lost connection) leaves an existing file as it was. An export that stops
        before its end line raises ``StrataError`` with code ``INCOMPLETE_EXPORT``."""
        return export_to(target, lambda write: self._transport.download(self._export(id), write))

    def import_tenant(self, id: str, source: ImportSource) -> Tenant:
        """Creates tenant ``id`` from an export, all or nothing. Keys are not part of an
        export: mint new ones."""
        if isinstance(source, bytes):
            return self._transport.run(self._import(id, source))
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return self._transport.run(self._import(id, _file_chunks(f)))
        return self._transport.run(self._import(id, _file_chunks(source)))

    # API keys.

    def create_key(
        self,
        tenant: str,
        *,
        name: Optional[str] = None,
        permissions: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        domains: Optional[Sequence[str]] = None,
        expires_at: Optional[Millis] = None,
        expires_in_secs: Optional[int] = None,
    ) -> CreatedKey:
        """Mints a key for ``tenant`` (``*`` for another operator key). ``permissions`` are
        among ``read``, ``write``, ``admin``, ``all_principals`` (default read and write);
        ``user_tokens`` and ``domains`` bind the key to those. The secret is ``.key``, shown
        only now."""
        return self._transport.run(
            self._create_key(
                tenant, name, permissions, user_tokens, domains, expires_at, expires_in_secs
            )
        )

    def list_keys(self, *, tenant: Optional[str] = None) -> List[ApiKey]:
        return self._transport.run(self._list_keys(tenant))

    def revoke_key(self, id: str) -> ApiKey:
        """Revokes a key at once (by its id, not its secret)."""
        return self._transport.run(self._revoke_key(id))

    def rotate_key(
        self,
        id: str,
        *,
        grace_secs: Optional[int] = None,
        expires_at: Optional[Millis] = None,
        expires_in_secs: Optional[int] = None,
    ) -> RotatedKey:
        """Mints the successor of key ``id`` (same tenant, permissions and bindings; its
        secret is in the answer only) and lets the old key work ``grace_secs`` more (server
        default 3600; 0 revokes it at once). The new key's expiry defaults to the old one's."""
        return self._transport.run(
            self._rotate_key(id, grace_secs, expires_at, expires_in_secs)
        )

    # The audit log.

    def audit(
        self,
        *,
        tenant: Optional[str] = None,
        action: Optional[str] = None,
        since: Optional[Millis] = None,
        until: Optional[Millis] = None,
        limit: Optional[int] = None,
        before: Optional[str] = None,
    ) -> List[AuditRow]:
        """Audit rows of every tenant and of the server, newest first; ``before`` (the last
        row's ``cursor``) gives the next, older page."""
        return self._transport.run(self._audit(tenant, action, since, until, limit, before))


    # One node's operations.

    def residency(self) -> Dict[str, Any]:
        """The node's memory budget, resident bytes, loads and evictions, and every tenant
        used since start, most recently used first."""
        return self._transport.run(self._residency())

    def tenant_residency(self, id: str) -> TenantResidency:
        return self._transport.run(self._tenant_residency(id))

    def verify_tenant(self, id: str) -> VerifyReport:
        """Checks that every stored key of the tenant decodes and belongs to it, that its
        loaded indexes agree with storage and that its usage counters equal a recount.
        Repairs nothing."""
        return self._transport.run(self._verify(id))

    def repair_tenant(self, id: str) -> RepairReport:
        """Removes the tenant's records whose stored bytes no longer decode (damaged on disk:
        every request that meets one fails, and :meth:`verify_tenant` names them), with every
        entry naming them; recounts its usage and reloads its indexes. Their content is lost."""
        return self._transport.run(self._repair(id))

    def running_migrations(self) -> List[RunningMigration]:
        """The data moves (to or from ``dedicated``) running on the server now."""
        return self._transport.run(self._running_migrations())

    def tenant_integrity(self, id: str) -> Dict[str, Any]:
        """The tenant's integrity state (``normal``, ``stress``, ``critical``), the signals
        behind it, its policy and its recent transitions."""
        return self._transport.run(self._integrity(id))

    def migrate_tenant(
        self,
        id: str,
        target: str,
        *,
        index_params: Optional[Mapping[str, Any]] = None,
        dry_run: bool = False,
        wait: bool = True,
        timeout: float = 600.0,
    ) -> MigrationReport:
        """Moves a tenant to isolation level ``target`` (``shared``, ``partition`` or
        ``dedicated``) online; with ``dry_run=True`` only reports what would move and cost.

        A move to or from ``dedicated`` copies the tenant's data in the background (the server
        answers ``202`` at once). By default this then polls :meth:`wait_for_migration` until
        the move has ended (so no HTTP request stays open for the copy), raising
        :class:`MigrationFailedError` if it failed, was cancelled or was interrupted (and
        will not be resumed by the server) and ``TimeoutError``
        after ``timeout`` seconds (the move goes on). With ``wait=False`` it returns as soon
        as the move has started."""
        report = self._transport.run(self._migrate(id, target, index_params, dry_run))
        if wait and report.moves_data and not report.dry_run:
            _check_migration(id, self.wait_for_migration(id, timeout=timeout))
        return report

    def migration_status(self, id: str) -> MigrationStatus:
        return self._transport.run(self._migration(id))

    def cancel_migration(self, id: str, *, timeout: float = 600.0) -> MigrationStatus:
        """Cancels the tenant's data move: one copying stops (its partial copy removed), one
        a crash or shutdown cut short (``interrupted``) is not resumed; the tenant stays whole
        at its old level. Returns the status afterwards (``cancelled``): if the server answers
        before the move has stopped (``202``, still ``copying``), this polls until it has,
        raising ``TimeoutError`` after ``timeout`` seconds (the cancel holds). Raises
        :class:`ConflictError` when there is no move to cancel, or it is past its copy (it
        then completes)."""
        status = self._transport.run(self._cancel_migration(id))
        if status.moving:
            status = self.wait_for_migration(id, timeout=timeout)
        return status

    def wait_for_migration(
        self, id: str, *, timeout: float = 600.0, poll_interval: float = 0.25
    ) -> MigrationStatus:
        """Polls the tenant's migration until it has ended for good; returns its status
        (``done``, ``rebuilding``, ``failed``, ``cancelled`` or ``interrupted``: check
        ``state``). An ``interrupted`` move that the server will resume (``will_resume``,
        e.g. across a server restart) is waited for. Raises ``TimeoutError`` after ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.migration_status(id)
            if not status.pending:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"migration of {id} still {status.state} after {timeout} s")
            time.sleep(poll_interval)

    def backup(
        self, name: Optional[str] = None, *, wait: bool = True, timeout: float = 3600.0
    ) -> BackupStatus:
        """Backs up the server's whole data directory while it serves, into the directory
        ``name`` (default: the time) under its ``backup_dir``; every write acknowledged before
        this call is in it. By default polls until the backup has ended and returns its final
        status, raising :class:`BackupFailedError` if it failed and ``TimeoutError`` after
        ``timeout`` seconds (it goes on); with ``wait=False`` returns once it has started.
        Raises :class:`ConflictError` while another backup runs or when ``name`` is taken."""
        status = self._transport.run(self._backup(name))
        if not wait:
            return status
        deadline = time.monotonic() + timeout
        while status.running:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"backup {status.name} still running after {timeout} s")
            time.sleep(0.25)
            status = self.backup_status(status.name)
        _check_backup(status)
        return status

    def backup_status(self, name: str) -> BackupStatus:
        return self._transport.run(self._backup_status(name))

    def stats(self, *, after: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
        """Server figures and one page of per-tenant figures (``next_after`` for the next)."""
        return self._transport.run(self._stats(after, limit))

class AsyncStrataAdmin(_AdminCalls):
    """The asynchronous twin of :class:`StrataAdmin`: the same methods, awaited."""

    def __init__(
        self,
        url: Optional[str] = None,
        operator_key: Optional[str] = None,
        *,
        retries: Union[int, RetryPolicy] = 3,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self._transport = AsyncTransport(
            from_env(url, "STRATA_URL", "STRATA_SERVER"),
            from_env(operator_key, "STRATA_OPERATOR_KEY", "STRATA_KEY"),
            timeout=timeout,
            retries=retries,
            http_client=http_client,
        )

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncStrataAdmin:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def create_tenant(
        self,
        id: str,
        *,
        display_name: Optional[str] = None,
        isolation: Optional[str] = None,
        index_params: Optional[Mapping[str, Any]] = None,
        parent: Optional[str] = None,
        limits: Optional[Mapping[str, Any]] = None,
        weight: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        integrity_policy: Optional[Mapping[str, Any]] = None,
    ) -> Tenant:
        return await self._transport.run(
            self._create_tenant(
                id,
                display_name,
                isolation,
                index_params,
                parent,
                limits,
                weight,
                metadata,
                integrity_policy,
            )
        )

    async def list_tenants(self) -> List[Tenant]:
        return await self._transport.run(self._list_tenants())

    async def get_tenant(self, id: str) -> Tenant:
        return await self._transport.run(self._get_tenant(id))

    async def update_tenant(
        self,
        id: str,
        *,
        display_name: Optional[str] = None,
        limits: Optional[Mapping[str, Any]] = None,
        weight: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = NOT_GIVEN,
        integrity_policy: Optional[Mapping[str, Any]] = NOT_GIVEN,
    ) -> Tenant:
        """See :meth:`StrataAdmin.update_tenant` (``metadata=None`` removes it all,
        ``integrity_policy=None`` clears the tenant's own thresholds)."""
        return await self._transport.run(
            self._update_tenant(id, display_name, limits, weight, metadata, integrity_policy)
        )

    async def suspend_tenant(self, id: str) -> Tenant:
        return await self._transport.run(self._transition(id, "suspend"))

    async def resume_tenant(self, id: str) -> Tenant:
        return await self._transport.run(self._transition(id, "resume"))

    async def restore_tenant(self, id: str) -> Tenant:
        return await self._transport.run(self._transition(id, "restore"))

    @overload
    async def delete_tenant(self, id: str, *, hard: Literal[False] = False) -> Tenant: ...

    @overload
    async def delete_tenant(self, id: str, *, hard: Literal[True]) -> PurgedTenant: ...

    async def delete_tenant(self, id: str, *, hard: bool = False) -> Union[Tenant, PurgedTenant]:
        return await self._transport.run(self._delete_tenant(id, hard))

    async def purge_deleted(self, *, retention_secs: Optional[int] = None) -> List[str]:
        return await self._transport.run(self._purge_deleted(retention_secs))

    async def export_tenant(self, id: str, target: ExportTarget) -> int:
        return await aexport_to(
            target, lambda write: self._transport.download(self._export(id), write)
        )

    async def import_tenant(self, id: str, source: ImportSource) -> Tenant:
        if isinstance(source, bytes):
            return await self._transport.run(self._import(id, source))
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return await self._transport.run(self._import(id, _async_chunks(f)))
        return await self._transport.run(self._import(id, _async_chunks(source)))

    async def create_key(
        self,
        tenant: str,
        *,
        name: Optional[str] = None,
        permissions: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        domains: Optional[Sequence[str]] = None,
        expires_at: Optional[Millis] = None,
        expires_in_secs: Optional[int] = None,
    ) -> CreatedKey:
        return await self._transport.run(
            self._create_key(
                tenant, name, permissions, user_tokens, domains, expires_at, expires_in_secs
            )
        )

    async def list_keys(self, *, tenant: Optional[str] = None) -> List[ApiKey]:
        return await self._transport.run(self._list_keys(tenant))

    async def revoke_key(self, id: str) -> ApiKey:
        return await self._transport.run(self._revoke_key(id))

    async def rotate_key(
        self,
        id: str,
        *,
        grace_secs: Optional[int] = None,
        expires_at: Optional[Millis] = None,
        expires_in_secs: Optional[int] = None,
    ) -> RotatedKey:
        return await self._transport.run(
            self._rotate_key(id, grace_secs, expires_at, expires_in_secs)
        )

    async def audit(
        self,
        *,
        tenant: Optional[str] = None,
        action: Optional[str] = None,
        since: Optional[Millis] = None,
        until: Optional[Millis] = None,
        limit: Optional[int] = None,
        before: Optional[str] = None,
    ) -> List[AuditRow]:
        return await self._transport.run(
            self._audit(tenant, action, since, until, limit, before)
        )

    # One node's operations.

    async def residency(self) -> Dict[str, Any]:
        return await self._transport.run(self._residency())

    async def tenant_residency(self, id: str) -> TenantResidency:
        return await self._transport.run(self._tenant_residency(id))

    async def verify_tenant(self, id: str) -> VerifyReport:
        return await self._transport.run(self._verify(id))

    async def repair_tenant(self, id: str) -> RepairReport:
        """See :meth:`StrataAdmin.repair_tenant`."""
        return await self._transport.run(self._repair(id))

    async def running_migrations(self) -> List[RunningMigration]:
        """See :meth:`StrataAdmin.running_migrations`."""
        return await self._transport.run(self._running_migrations())

    async def tenant_integrity(self, id: str) -> Dict[str, Any]:
        return await self._transport.run(self._integrity(id))

    async def migrate_tenant(
        self,
        id: str,
        target: str,
        *,
        index_params: Optional[Mapping[str, Any]] = None,
        dry_run: bool = False,
        wait: bool = True,
        timeout: float = 600.0,
    ) -> MigrationReport:
        """See :meth:`StrataAdmin.migrate_tenant`."""
        report = await self._transport.run(self._migrate(id, target, index_params, dry_run))
        if wait and report.moves_data and not report.dry_run:
            _check_migration(id, await self.wait_for_migration(id, timeout=timeout))
        return report

    async def migration_status(self, id: str) -> MigrationStatus:
        return await self._transport.run(self._migration(id))

    async def cancel_migration(self, id: str, *, timeout: float = 600.0) -> MigrationStatus:
        """See :meth:`StrataAdmin.cancel_migration`."""
        status = await self._transport.run(self._cancel_migration(id))
        if status.moving:
            status = await self.wait_for_migration(id, timeout=timeout)
        return status

    async def wait_for_migration(
        self, id: str, *, timeout: float = 600.0, poll_interval: float = 0.25
    ) -> MigrationStatus:
        """See :meth:`StrataAdmin.wait_for_migration`."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.migration_status(id)
            if not status.pending:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"migration of {id} still {status.state} after {timeout} s")
            await asyncio.sleep(poll_interval)

    async def backup(
        self, name: Optional[str] = None, *, wait: bool = True, timeout: float = 3600.0
    ) -> BackupStatus:
        """See :meth:`StrataAdmin.backup`."""
        status = await self._transport.run(self._backup(name))
        if not wait:
            return status
        deadline = time.monotonic() + timeout
        while status.running:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"backup {status.name} still running after {timeout} s")
            await asyncio.sleep(0.25)
            status = await self.backup_status(status.name)
        _check_backup(status)
        return status

    async def backup_status(self, name: str) -> BackupStatus:
        return await self._transport.run(self._backup_status(name))

    async def stats(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> Dict[str, Any]:
        return await self._transport.run(self._stats(after, limit))
