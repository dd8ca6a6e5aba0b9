"""Requests of the tenant API (memories, search, collections, audit), built as :class:`Call`
values that :class:`~strata_client.Strata` sends synchronously and
:class:`~strata_client.AsyncStrata` asynchronously. Everything about the API's shapes lives
here once.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from ._http import NO_JSON, Call, no_answer
from ._scope import Scope
from .errors import BadRequestError
from .models import (
    AuditRow,
    Collection,
    ConfidenceInput,
    Link,
    Millis,
    NewRecord,
    Page,
    RecallResult,
    Record,
    RecordLinks,
    SearchResult,
    Share,
    WriteResult,
    confidence_json,
    to_millis,
)

#: A record to write: a :class:`NewRecord` or a ``dict`` with the server's field names
#: (``collection`` is accepted for ``modality``).
RecordInput = Union[NewRecord, Mapping[str, Any]]
Filter = Mapping[str, Any]


def _no_results(_: Any) -> List[WriteResult]:
    return []


def _segment(s: str) -> str:
    """``s`` as one URL path segment. ``.`` and ``..`` are refused: HTTP clients resolve them
    as dot segments, so ``tenant_residency("..")`` would reach another route and read its
    answer as the tenant's; an empty one names nothing."""
    if s in ("", ".", ".."):
        raise BadRequestError(
            f"{s!r} cannot name anything in a URL path; refused by the client before sending",
            code="BAD_REQUEST",
        )
    return quote(s, safe="")


def record_json(r: RecordInput) -> Dict[str, Any]:
    if isinstance(r, NewRecord):
        return r.to_json()
    if not isinstance(r, Mapping):
        raise TypeError(f"a record must be a NewRecord or a dict, not {type(r).__name__}")
    out = dict(r)
    if "collection" in out:
        if "modality" in out:
            raise ValueError("give a record's collection as `collection` or `modality`, not both")
        out["modality"] = out.pop("collection")
    if out.get("vector") is not None:
        out["vector"] = [float(x) for x in out["vector"]]
    if out.get("expires_at") is not None:
        out["expires_at"] = to_millis(out["expires_at"])
    if out.get("confidence") is not None and not isinstance(out["confidence"], Mapping):
        out["confidence"] = confidence_json(out["confidence"])
    return out


def _with_include(call: Call[Any], include: Optional[Sequence[str]]) -> Call[Any]:
    """``call`` with ``include`` in its query string (comma-separated; ``[]`` asks for ids
    only). ``None`` leaves it out: the server then answers whole records without vectors."""
    if include is None:
        return call
    if isinstance(include, str):
        raise TypeError("include must be a list of field names")
    return dataclasses.replace(call, params=[*call.params, ("include", ",".join(include))])


def _results(d: Any) -> List[WriteResult]:
    return [WriteResult.from_json(x) for x in d["results"]]


def _collections(d: Any) -> List[Collection]:
    return [Collection.from_json(c) for c in d["collections"]]


def _rows(d: Any) -> List[AuditRow]:
    return [AuditRow.from_json(r) for r in d["rows"]]


def audit_params(
    tenant: Optional[str],
    action: Optional[str],
    since: Optional[Millis],
    until: Optional[Millis],
    limit: Optional[int],
    before: Optional[str] = None,
) -> List[Tuple[str, str]]:
    params: List[Tuple[str, str]] = []
    if tenant is not None:
        params.append(("tenant", tenant))
    if action is not None:
        params.append(("action", action))
    if since is not None:
        params.append(("since", str(to_millis(since))))
    if until is not None:
        params.append(("until", str(to_millis(until))))
    if limit is not None:
        params.append(("limit", str(limit)))
    if before is not None:
        params.append(("before", before))
    return params


def _search_body(
    k: int,
    include: Optional[Sequence[str]],
    query: Optional[str],
    vector: Optional[Sequence[float]],
    collection: Optional[str],
    filter: Optional[Filter],
    mode: Optional[str],
) -> Dict[str, Any]:
    """The fields a search and a recall share."""
    body: Dict[str, Any] = {"k": k}
    if include is not None:
        body["include"] = list(include)
    if query is not None:
        body["query"] = query
    if vector is not None:
        body["vector"] = [float(x) for x in vector]
    if collection is not None:
        body["modality"] = collection
    if filter is not None:
        body["filter"] = dict(filter)
    if mode is not None:
        body["mode"] = mode
    return body


#: Record fields that ``update(clear=[...])`` may clear (sent as ``null``).
CLEARABLE_FIELDS = ("kind", "run_id", "memory_scope", "expires_at", "metadata")

class DataCalls:
    """Builds the tenant API's requests under a default scope (see :mod:`._scope`)."""

    _scope: Scope

    def _call(
        self,
        method: str,
        path: str,
        parse: Any,
        scope: Scope,
        *,
        json: Any = NO_JSON,
        idempotent: bool = True,
        done_when_gone: bool = False,
    ) -> Call[Any]:
        scope = self._scope.updated(scope)
        return Call(
            method,
            path,
            parse,
            params=scope.params(),
            headers=scope.headers(),
            json=json,
            idempotent=idempotent,
            done_when_gone=done_when_gone,
        )

    def _add(
        self,
        content: Union[str, RecordInput, Sequence[RecordInput], None],
        scope: Scope,
        *,
        vector: Optional[Sequence[float]],
        metadata: Optional[Mapping[str, Any]],
        id: Optional[str],
        collection: Optional[str],
        kind: Optional[str],
        expires_at: Optional[Millis],
        confidence: Optional[ConfidenceInput],
    ) -> Call[Any]:
        if content is None or isinstance(content, str):
            record = NewRecord(
                content=content,
                vector=vector,
                metadata=metadata,
                id=id,
                collection=collection,
                kind=kind,
                expires_at=expires_at,
                confidence=confidence,
            ).to_json()
            return self._write(record, WriteResult.from_json, scope, [record])
        fields = [
            ("vector", vector),
            ("metadata", metadata),
            ("id", id),
            ("collection", collection),
            ("kind", kind),
            ("expires_at", expires_at),
            ("confidence", confidence),
        ]
        given = [name for name, v in fields if v is not None]
        if given:
            raise TypeError(
                f"a record given whole takes its fields from it; {', '.join(given)} "
                "given for the call too"
            )
        if isinstance(content, (NewRecord, Mapping)):
            one = record_json(content)
            return self._write(one, WriteResult.from_json, scope, [one])
        records = [record_json(r) for r in content]
        if not records:
            # Nothing to write: the server refuses an empty batch as a likely mistake, but a
            # caller handing over whatever list it has means "nothing", not an error.
            return Call("POST", "/v1/memories", _no_results, skip=True)
        return self._write({"records": records}, _results, scope, records)

    def _write(
        self, body: Dict[str, Any], parse: Any, scope: Scope, records: List[Dict[str, Any]]
    ) -> Call[Any]:
        call = self._call("POST", "/v1/memories", parse, scope, json=body)
        # Texts without vectors are embedded by the server: the call may take much longer.
        embeds = any(r.get("content") is not None and r.get("vector") is None for r in records)
        call = dataclasses.replace(call, embeds=embeds)
        if all(r.get("id") is not None for r in records):
            return call  # Upserts by id are idempotent as they are.
        # A record without an id could be stored twice by a retry after a lost answer; under an
        # Idempotency-Key (the same for every attempt of this call) the server answers a retry
        # with the first answer instead.
        headers = {**call.headers, "Idempotency-Key": str(uuid.uuid4())}
        return dataclasses.replace(call, headers=headers)

    def _search(
        self,
        query: Optional[str],
        scope: Scope,
        *,
        vector: Optional[Sequence[float]],
        k: int,
        filter: Optional[Filter],
        mode: Optional[str],
        min_score: Optional[float],
        explain: bool,
        collection: Optional[str],
        fusion: Optional[Mapping[str, Any]],
        ef: Optional[int],
        include: Optional[Sequence[str]],
        rerank: Optional[str] = None,
        rerank_weights: Optional[Mapping[str, float]] = None,
        include_shared: Union[str, Sequence[str], None] = None,
        confidence_weight: Optional[float] = None,
        recency_half_life_secs: Optional[float] = None,
    ) -> Call[SearchResult]:
        body = _search_body(k, include, query, vector, collection, filter, mode)
        if include_shared is not None:
            body["include_shared"] = (
                include_shared if isinstance(include_shared, str) else list(include_shared)
            )
        if min_score is not None:
            body["min_score"] = min_score
        if explain:
            body["explain"] = True
        if fusion is not None:
            body["fusion"] = dict(fusion)
        if ef is not None:
            body["ef"] = ef
        if rerank is not None:
            body["rerank"] = rerank
        if rerank_weights is not None:
            body["rerank_weights"] = dict(rerank_weights)
        if confidence_weight is not None:
            body["confidence_weight"] = confidence_weight
        if recency_half_life_secs is not None:
            body["recency_half_life_secs"] = recency_half_life_secs
        return self._call("POST", "/v1/search", SearchResult.from_json, scope, json=body)

    def _feedback(
        self,
        ids: Sequence[str],
        scope: Scope,
        *,
        shown: Optional[Sequence[str]],
        query: Optional[str],
        vector: Optional[Sequence[float]],
        collection: Optional[str],
    ) -> Call[Dict[str, Any]]:
        body: Dict[str, Any] = {"ids": list(ids)}
        if shown is not None:
            body["shown"] = list(shown)
        if query is not None:
            body["query"] = query
        if vector is not None:
            body["vector"] = [float(x) for x in vector]
        if collection is not None:
            body["modality"] = collection
        # Not idempotent: a repeat after a lost answer would reinforce twice.
        return self._call(
            "POST", "/v1/feedback", lambda d: dict(d), scope, json=body, idempotent=False
        )

    def _recall(
        self,
        query: Optional[str],
        scope: Scope,
        *,
        vector: Optional[Sequence[float]],
        k: int,
        filter: Optional[Filter],
        mode: Optional[str],
        collection: Optional[str],
        include: Optional[Sequence[str]],
        options: Mapping[str, Any],
    ) -> Call[RecallResult]:
        body = _search_body(k, include, query, vector, collection, filter, mode)
        body.update({key: v for key, v in options.items() if v is not None})
        return self._call("POST", "/v1/recall", RecallResult.from_json, scope, json=body)

    def _add_evidence(
        self,
        id: str,
        scope: Scope,
        body: Dict[str, Any],
        include: Optional[Sequence[str]] = None,
    ) -> Call[Record]:
        # Not idempotent: a repeat after a lost answer would count the evidence twice.
        call = self._call(
            "POST",
            f"/v1/memories/{_segment(id)}/evidence",
            Record.from_json,
            scope,
            json=body,
            idempotent=False,
        )
        return _with_include(call, include)

    def _link(
        self, source: str, target: str, scope: Scope, *, relation: str, weight: float
    ) -> Call[Link]:
        body = {"source": source, "target": target, "relation": relation, "weight": weight}
        # The same link again only sets its weight again: safe to repeat.
        return self._call("POST", "/v1/links", Link.from_json, scope, json=body)

    def _unlink(self, source: str, target: str, scope: Scope, *, relation: str) -> Call[None]:
        body = {"source": source, "target": target, "relation": relation}
        return self._call(
            "POST", "/v1/links/delete", no_answer, scope, json=body, done_when_gone=True
        )

    def _links(self, id: str, scope: Scope) -> Call[RecordLinks]:
        return self._call(
            "GET", f"/v1/memories/{_segment(id)}/links", RecordLinks.from_json, scope
        )

    def _get(
        self, id: str, scope: Scope, include: Optional[Sequence[str]] = None
    ) -> Call[Record]:
        call = self._call("GET", f"/v1/memories/{_segment(id)}", Record.from_json, scope)
        return _with_include(call, include)

    def _update(
        self,
        id: str,
        scope: Scope,
        *,
        content: Optional[str],
        vector: Optional[Sequence[float]],
        metadata: Optional[Mapping[str, Any]],
        kind: Optional[str],
        expires_at: Optional[Millis],
        confidence: Optional[ConfidenceInput],
        new_user_tokens: Optional[Sequence[str]],
        new_run_id: Optional[str],
        new_memory_scope: Optional[str],
        move_to_domain: Optional[str] = None,
        clear: Sequence[str] = (),
        include: Optional[Sequence[str]] = None,
    ) -> Call[Record]:
        if isinstance(new_user_tokens, str):
            raise TypeError("new_user_tokens must be a list of strings")
        if isinstance(clear, str):
            raise TypeError("clear must be a list of field names")
        unknown = [f for f in clear if f not in CLEARABLE_FIELDS]
        if unknown:
            raise ValueError(
                f"clear: {unknown!r} cannot be cleared; only {list(CLEARABLE_FIELDS)!r}"
            )
        patch = NewRecord(
            content=content,
            vector=vector,
            metadata=metadata,
            kind=kind,
            expires_at=expires_at,
            confidence=confidence,
            user_tokens=new_user_tokens,
            run_id=new_run_id,
            memory_scope=new_memory_scope,
        ).to_json()
        for name in clear:
            if name in patch:
                raise ValueError(f"clear: {name!r} is also given a new value")
            patch[name] = None
        if move_to_domain is not None:
            patch["move_to_domain"] = move_to_domain
        # A move out of the domain the request names cannot be repeated: the retry would look
        # for the record where it no longer is (404).
        call = self._call(
            "PATCH",
            f"/v1/memories/{_segment(id)}",
            Record.from_json,
            scope,
            json=patch,
            idempotent=move_to_domain is None,
        )
        return _with_include(call, include)

    def _delete(self, id: str, scope: Scope) -> Call[None]:
        return self._call(
            "DELETE", f"/v1/memories/{_segment(id)}", no_answer, scope, done_when_gone=True
        )

    def _delete_where(self, filter: Optional[Filter], all: bool, scope: Scope) -> Call[int]:
        body: Dict[str, Any] = {}
        if filter is not None:
            body["filter"] = dict(filter)
        if all:
            body["all"] = True
        return self._call(
            "POST",
            "/v1/memories/delete",
            lambda d: int(d["deleted"]),
            scope,
            json=body,
        )

    def _list(
        self,
        scope: Scope,
        *,
        filter: Optional[Filter],
        after: Optional[str],
        limit: Optional[int],
        include: Optional[Sequence[str]] = None,
    ) -> Call[Page]:
        body: Dict[str, Any] = {}
        if include is not None:
            if isinstance(include, str):
                raise TypeError("include must be a list of field names")
            body["include"] = list(include)
        if filter is not None:
            body["filter"] = dict(filter)
        if after is not None:
            body["after"] = after
        if limit is not None:
            body["limit"] = limit
        return self._call("POST", "/v1/memories/list", Page.from_json, scope, json=body)

    def _count(self, filter: Optional[Filter], scope: Scope) -> Call[int]:
        body = {} if filter is None else {"filter": dict(filter)}
        return self._call("POST", "/v1/memories/count", lambda d: int(d["count"]), scope, json=body)

    # Collections and the audit log are tenant-wide: no scope fields (the server refuses
    # them on the audit log, rather than silently ignoring them).

    @staticmethod
    def _list_collections() -> Call[List[Collection]]:
        return Call("GET", "/v1/collections", _collections)

    @staticmethod
    def _create_collection(
        name: str, dim: int, metric: str, options: Mapping[str, Any] = {}
    ) -> Call[Collection]:
        body: Dict[str, Any] = {"name": name, "dim": dim, "metric": metric}
        body.update({k: v for k, v in options.items() if v is not None})
        # A repeat after a lost answer would be 409 CONFLICT, which would mislead.
        return Call("POST", "/v1/collections", Collection.from_json, json=body, idempotent=False)

    @staticmethod
    def _delete_collection(name: str) -> Call[int]:
        # Deletes every record of the collection before it answers; a repeat would count
        # only what it deleted itself, or find no collection.
        return Call(
            "DELETE",
            f"/v1/collections/{_segment(name)}",
            lambda d: int(d["deleted_records"]),
            slow=True,
            idempotent=False,
        )

    # Shares are the tenant's too: no scope fields.

    @staticmethod
    def _create_share(domain: str, tenants: Sequence[str], children: bool) -> Call[Share]:
        if isinstance(tenants, str):
            raise TypeError("tenants must be a list of tenant ids")
        return Call(
            "POST",
            "/v1/shares",
            Share.from_json,
            json={"domain": domain, "tenants": list(tenants), "children": children},
            idempotent=False,
        )

    @staticmethod
    def _list_shares() -> Call[List[Share]]:
        return Call("GET", "/v1/shares", lambda d: [Share.from_json(s) for s in d["shares"]])

    @staticmethod
    def _revoke_share(id: str) -> Call[Share]:
        # Answered with the share as revoked: a repeat would find none (404).
        return Call("DELETE", f"/v1/shares/{_segment(id)}", Share.from_json, idempotent=False)

    @staticmethod
    def _incoming_shares() -> Call[List[Share]]:
        return Call(
            "GET", "/v1/shares/incoming", lambda d: [Share.from_json(s) for s in d["shares"]]
        )

    @staticmethod
    def _accept_share(id: str) -> Call[Share]:
        return Call("POST", f"/v1/shares/incoming/{_segment(id)}/accept", Share.from_json)

    @staticmethod
    def _decline_share(id: str) -> Call[Share]:
        # Answered with the offer as declined: a repeat would find none (404).
        return Call(
            "POST",
            f"/v1/shares/incoming/{_segment(id)}/decline",
            Share.from_json,
            idempotent=False,
        )

    @staticmethod
    def _history(
        action: Optional[str],
        since: Optional[Millis],
        until: Optional[Millis],
        limit: Optional[int],
        before: Optional[str] = None,
    ) -> Call[List[AuditRow]]:
        return Call(
            "GET",
            "/v1/audit",
            _rows,
            params=audit_params(None, action, since, until, limit, before),
        )
