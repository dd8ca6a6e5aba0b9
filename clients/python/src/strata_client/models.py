"""Typed views of the server's JSON: records, search hits, pages, tenants, keys, audit rows.

Plain dataclasses, built by ``from_json``; fields the server adds later are ignored, so a newer
server does not break an older client. Times are milliseconds since the Unix epoch, as the
server sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import (
    Any,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Union,
    cast,
)

from .errors import StrataError

__all__ = [
    "Confidence",
    "ConfidenceInput",
    "Record",
    "NewRecord",
    "WriteResult",
    "AdaptiveExplain",
    "Explain",
    "SearchHit",
    "SearchResult",
    "Page",
    "Collection",
    "TenantLimits",
    "TenantUsage",
    "Tenant",
    "PurgedTenant",
    "ApiKey",
    "CreatedKey",
    "RotatedKey",
    "AuditRow",
    "TenantResidency",
    "VerifyReport",
    "MigrationReport",
    "MigrationStatus",
    "Millis",
    "to_millis",
]

#: Milliseconds since the Unix epoch, or a ``datetime``. A naive ``datetime`` is read as local
#: time (``datetime.timestamp`` does so); pass timezone-aware ones to be unambiguous.
Millis = Union[int, datetime]


def to_millis(t: Millis) -> int:
    """Milliseconds since the epoch of an ``int`` (returned as is) or a ``datetime``."""
    if isinstance(t, datetime):
        return int(t.timestamp() * 1000)
    return int(t)


@dataclass
class Confidence:
    """How much a memory is believed; new memories start at even odds."""

    value: float = 0.5
    evidence_count: int = 0
    corroborations: int = 0
    contradictions: int = 0

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> Confidence:
        d = d or {}
        return cls(
            value=float(d.get("value", 0.5)),
            evidence_count=int(d.get("evidence_count", 0)),
            corroborations=int(d.get("corroborations", 0)),
            contradictions=int(d.get("contradictions", 0)),
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "value": self.value,
            "evidence_count": self.evidence_count,
            "corroborations": self.corroborations,
            "contradictions": self.contradictions,
        }


#: A confidence to write: a :class:`Confidence`, or a number in [0, 1] meaning
#: ``Confidence(value=x)`` with no evidence yet.
ConfidenceInput = Union[Confidence, float]


def confidence_json(c: ConfidenceInput) -> Dict[str, Any]:
    """The JSON form of a confidence given as a :class:`Confidence` or a number."""
    if isinstance(c, Confidence):
        return c.to_json()
    # `bool` is an `int` to Python; `True` is no confidence value.
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        return {"value": float(c)}
    raise TypeError(f"confidence must be a Confidence or a number, not {type(c).__name__}")


@dataclass
class Record:
    """A stored memory."""

    id: str
    #: The collection it lives in (the server's ``modality`` field).
    modality: str
    content: Optional[str] = None
    #: ``None`` when the record has none, and when not asked for: ``get``, ``list`` and the
    #: other record answers carry it only with ``include`` naming ``vector``, search hits
    #: never.
    vector: Optional[List[float]] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    #: Principals who may read it; empty means everyone in the tenant.
    user_tokens: List[str] = field(default_factory=list)
    memory_domain: str = "default"
    run_id: Optional[str] = None
    memory_scope: Optional[str] = None
    kind: Optional[str] = None
    created_at: int = 0
    updated_at: int = 0
    expires_at: Optional[int] = None
    confidence: Confidence = field(default_factory=Confidence)
    #: The fields the server sent. A record answer carries only what ``include`` named, and a
    #: field not sent holds its placeholder default here (``metadata`` ``{}``, ``confidence``
    #: 0.5, ``created_at`` 0...), not the stored value: check ``"metadata" in r.fields``
    #: before trusting one that the call may not have asked for.
    fields: FrozenSet[str] = field(default_factory=frozenset, compare=False, repr=False)

    @property
    def collection(self) -> str:
        """The collection it lives in; the same as ``modality``."""
        return self.modality

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Record:
        return cls(
            id=d["id"],
            modality=d.get("modality", "text"),
            content=d.get("content"),
            vector=d.get("vector"),
            metadata=dict(d.get("metadata") or {}),
            user_tokens=list(d.get("user_tokens") or []),
            memory_domain=d.get("memory_domain", "default"),
            run_id=d.get("run_id"),
            memory_scope=d.get("memory_scope"),
            kind=d.get("kind"),
            created_at=int(d.get("created_at", 0)),
            updated_at=int(d.get("updated_at", 0)),
            expires_at=d.get("expires_at"),
            confidence=Confidence.from_json(d.get("confidence")),
            fields=frozenset(d.keys()),
        )


@dataclass
class NewRecord:
    """One record of a batch write (a plain ``dict`` with the server's field names works too).

    Fields left ``None`` are not sent: the server assigns an id, uses the ``text`` collection,
    and takes ``user_tokens``, ``run_id`` and ``memory_scope`` from the call's scope.
    """

    content: Optional[str] = None
    vector: Optional[Sequence[float]] = None
    metadata: Optional[Mapping[str, Any]] = None
    #: Your own id, for idempotent upserts: ``[a-zA-Z0-9_.-]{1,64}``.
    id: Optional[str] = None
    #: The collection (sent as ``modality``).
    collection: Optional[str] = None
    kind: Optional[str] = None
    user_tokens: Optional[Sequence[str]] = None
    run_id: Optional[str] = None
    memory_scope: Optional[str] = None
    expires_at: Optional[Millis] = None
    #: A :class:`Confidence`, or a number in [0, 1] (``0.9`` is ``Confidence(value=0.9)``).
    confidence: Optional[ConfidenceInput] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.collection is not None:
            out["modality"] = self.collection
        if self.kind is not None:
            out["kind"] = self.kind
        if self.content is not None:
            out["content"] = self.content
        if self.vector is not None:
            out["vector"] = [float(x) for x in self.vector]
        if self.user_tokens is not None:
            out["user_tokens"] = list(self.user_tokens)
        if self.run_id is not None:
            out["run_id"] = self.run_id
        if self.memory_scope is not None:
            out["memory_scope"] = self.memory_scope
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.expires_at is not None:
            out["expires_at"] = to_millis(self.expires_at)
        if self.confidence is not None:
            out["confidence"] = confidence_json(self.confidence)
        return out


@dataclass
class WriteResult:
    """What happened to one written record."""

    id: str
    #: ``True`` for a new record; ``False`` when a client id replaced one, or on dedup.
    created: bool
    #: ``True`` when the run already held the same content; ``id`` is the existing record's.
    deduplicated: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WriteResult:
        return cls(
            id=d["id"],
            created=bool(d.get("created")),
            deduplicated=bool(d.get("deduplicated")),
        )


@dataclass
class AdaptiveExplain:
    """How adaptive reranking scored a hit (search with ``rerank="adaptive"`` and
    ``explain=True``): its score and rank before reranking, and the weighted contributions
    whose sum is the hit's score."""

    base_score: float = 0.0
    #: 1-based, in the candidate pool.
    base_rank: int = 0
    base: float = 0.0
    narrative: float = 0.0
    pheromone: float = 0.0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AdaptiveExplain:
        return cls(
            base_score=float(d.get("base_score", 0.0)),
            base_rank=int(d.get("base_rank", 0)),
            base=float(d.get("base", 0.0)),
            narrative=float(d.get("narrative", 0.0)),
            pheromone=float(d.get("pheromone", 0.0)),
        )

    def __getitem__(self, name: str) -> Any:
        """``explain.adaptive["pheromone"]``, as when this was a ``dict``."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """``explain.adaptive.get("pheromone")``, as when this was a ``dict``."""
        return self[name] if name in self.__dataclass_fields__ else default

    def to_dict(self) -> Dict[str, Any]:
        """The server's JSON object, for code that wants the ``dict`` this used to be."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Explain:
    """Per-channel scores and ranks of a hit (search with ``explain=True``)."""

    vector_score: Optional[float] = None
    vector_rank: Optional[int] = None
    text_score: Optional[float] = None
    text_rank: Optional[int] = None
    #: With ``rerank="adaptive"``: see :class:`AdaptiveExplain`.
    adaptive: Optional[AdaptiveExplain] = None
    #: With ``confidence_weight`` or a recency half-life: the score before them.
    base_score: Optional[float] = None
    #: With ``confidence_weight``: the record's confidence as it entered the score.
    confidence: Optional[float] = None
    #: With a recency half-life: the factor the score was multiplied by.
    recency_factor: Optional[float] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Explain:
        a = d.get("adaptive")
        return cls(
            vector_score=d.get("vector_score"),
            vector_rank=d.get("vector_rank"),
            text_score=d.get("text_score"),
            text_rank=d.get("text_rank"),
            adaptive=AdaptiveExplain.from_json(a) if isinstance(a, Mapping) else None,
            base_score=d.get("base_score"),
            confidence=d.get("confidence"),
            recency_factor=d.get("recency_factor"),
        )


@dataclass
class SearchHit:
    """One result: its id and score (higher is better), plus what the search's ``include``
    asked for. ``content``, ``metadata`` and ``vector`` are ``None`` when not included (or,
    for ``content`` and ``vector``, when the record has none); ``record`` is the whole record
    when ``"record"`` was included, which the client's ``search`` does by default."""

    id: str
    score: float
    explain: Optional[Explain] = None
    content: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None
    vector: Optional[List[float]] = None
    record: Optional[Record] = None
    #: On hits from another tenant's shared domain (``include_shared``): ``{"tenant", "domain",
    #: "share"}``, where the hit came from. ``None`` on the caller's own hits.
    source: Optional[Dict[str, str]] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchHit:
        e = d.get("explain")
        r = d.get("record")
        m = d.get("metadata")
        return cls(
            id=d["id"],
            score=float(d["score"]),
            explain=Explain.from_json(e) if isinstance(e, dict) else None,
            content=d.get("content"),
            metadata=dict(m) if isinstance(m, dict) else None,
            vector=d.get("vector"),
            record=Record.from_json(r) if isinstance(r, dict) else None,
            source=dict(d["source"]) if isinstance(d.get("source"), dict) else None,
        )


@dataclass
class Share:
    """A published domain: read-only to the named ``tenants`` that accepted it (``accepted``)
    and, with ``children``, to every child tenant of the owner. As a grantee sees it
    (:meth:`Strata.incoming_shares`), ``via`` says how it holds it (``named`` or
    ``children``), ``state`` whether it is ``offered`` (searches do not see it until
    :meth:`Strata.accept_share`) or ``accepted``, and ``tenants`` is empty."""

    id: str
    owner: str
    domain: str
    tenants: List[str] = field(default_factory=list)
    accepted: List[str] = field(default_factory=list)
    children: bool = False
    via: Optional[str] = None
    state: Optional[str] = None
    created_at: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Share:
        return cls(
            id=d["id"],
            owner=d["owner"],
            domain=d["domain"],
            tenants=list(d.get("tenants") or []),
            accepted=list(d.get("accepted") or []),
            children=bool(d.get("children", False)),
            via=d.get("via"),
            state=d.get("state"),
            created_at=int(d.get("created_at", 0)),
        )


@dataclass
class SearchResult:
    """The hits of a search, best first. Iterable, and ``len()`` counts the hits."""

    hits: List[SearchHit]
    #: ``vector``, ``text`` or ``hybrid``: the mode the server used.
    mode: str
    #: ``True`` when every channel was answered by an exact scan rather than the graph.
    exact: bool

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> SearchHit:
        return self.hits[i]

    @property
    def records(self) -> List[Record]:
        """The hits' whole records (searches that included ``"record"``)."""
        return [h.record for h in self.hits if h.record is not None]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchResult:
        return cls(
            hits=[SearchHit.from_json(h) for h in d.get("hits", [])],
            mode=d.get("mode", ""),
            exact=bool(d.get("exact")),
        )


@dataclass
class Page:
    """One page of a listing, in id order; pass ``next`` as ``after`` for the following one."""

    records: List[Record]
    #: ``None`` when this page reached the end.
    next: Optional[str]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Page:
        return cls(
            records=[Record.from_json(r) for r in d.get("records", [])],
            next=d.get("next"),
        )


@dataclass
class Collection:
    """A vector space with a fixed dimension and metric (``cosine``, ``dot`` or ``l2``)."""

    name: str
    dim: int
    metric: str
    created_at: int = 0
    #: The model the server embeds this collection's text with (``model_id``,
    #: ``weights_hash``), or ``None`` when it embeds nothing there.
    embedder: Optional[Dict[str, str]] = None
    #: How its text is analysed for BM25: ``standard``, ``english`` or ``none``.
    analyzer: str = "standard"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Collection:
        return cls(
            name=d["name"],
            dim=int(d["dim"]),
            metric=d.get("metric", "cosine"),
            created_at=int(d.get("created_at", 0)),
            embedder=dict(d["embedder"]) if d.get("embedder") else None,
            analyzer=d.get("analyzer", "standard"),
        )


@dataclass
class TenantLimits:
    """A tenant's quotas and admission limits; ``None`` means unlimited."""

    max_vectors: Optional[int] = None
    max_storage_bytes: Optional[int] = None
    max_collections: Optional[int] = None
    max_qps: Optional[float] = None
    burst: Optional[int] = None
    max_concurrent: Optional[int] = None
    max_spreading_depth: Optional[int] = None

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> TenantLimits:
        d = d or {}
        return cls(
            max_vectors=d.get("max_vectors"),
            max_storage_bytes=d.get("max_storage_bytes"),
            max_collections=d.get("max_collections"),
            max_qps=d.get("max_qps"),
            burst=d.get("burst"),
            max_concurrent=d.get("max_concurrent"),
            max_spreading_depth=d.get("max_spreading_depth"),
        )


@dataclass
class TenantUsage:
    records: int
    vectors: int
    storage_bytes: int
    collections: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TenantUsage:
        return cls(
            records=int(d.get("records", 0)),
            vectors=int(d.get("vectors", 0)),
            storage_bytes=int(d.get("storage_bytes", 0)),
            collections=int(d.get("collections", 0)),
        )


@dataclass
class Tenant:
    """A tenant as operators see it."""

    id: str
    #: ``active``, ``suspended`` or ``deleted``.
    status: str
    display_name: Optional[str] = None
    created_at: int = 0
    #: When its registry entry last changed (its creation time until then).
    updated_at: int = 0
    deleted_at: Optional[int] = None
    limits: TenantLimits = field(default_factory=TenantLimits)
    weight: int = 1
    #: Present on :meth:`StrataAdmin.get_tenant`; lists leave it out.
    usage: Optional[TenantUsage] = None
    #: ``shared`` (default) or ``partition``: see :meth:`StrataAdmin.migrate_tenant`.
    isolation: str = "shared"
    #: The tenant's own graph parameters (``m``, ``ef_construction``, ``ef_search``), if any.
    index_params: Optional[Dict[str, Any]] = None
    #: The parent tenant, if any.
    parent: Optional[str] = None
    #: Direct children; present on :meth:`StrataAdmin.get_tenant`.
    children: Optional[List[str]] = None
    #: The operator's metadata of the tenant (``{}`` if none); present on
    #: :meth:`StrataAdmin.get_tenant` and the create and update answers, ``None`` in
    #: :meth:`StrataAdmin.list_tenants` (and when its stored row is damaged).
    metadata: Optional[Dict[str, Any]] = None
    #: The tenant's own integrity thresholds, if set; ``None``: the server configuration's
    #: (:meth:`StrataAdmin.tenant_integrity` shows the policy in force and its source).
    integrity_policy: Optional[Dict[str, Any]] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Tenant:
        u = d.get("usage")
        return cls(
            id=d["id"],
            status=d.get("status", ""),
            display_name=d.get("display_name"),
            created_at=int(d.get("created_at", 0)),
            updated_at=int(d.get("updated_at", d.get("created_at", 0))),
            deleted_at=d.get("deleted_at"),
            limits=TenantLimits.from_json(d.get("limits")),
            weight=int(d.get("weight", 1)),
            usage=TenantUsage.from_json(u) if isinstance(u, dict) else None,
            isolation=d.get("isolation", "shared"),
            index_params=d.get("index_params"),
            parent=d.get("parent"),
            metadata=dict(d["metadata"]) if isinstance(d.get("metadata"), dict) else None,
            integrity_policy=(
                dict(d["integrity_policy"])
                if isinstance(d.get("integrity_policy"), dict)
                else None
            ),
            children=list(d["children"]) if isinstance(d.get("children"), list) else None,
        )


@dataclass
class PurgedTenant:
    """What :meth:`StrataAdmin.delete_tenant` with ``hard=True`` answers: the tenant is gone,
    and whether its bytes are gone from the server's data file too."""

    id: str
    #: ``"done"``: the data file was rewritten without the tenant's data before the answer
    #: (a read begun before still holds the old file until it ends). ``"pending"``: the erasure
    #: has committed (no request reads the data again) but the rewrite failed and is owed; the
    #: server retries it. It is complete once :meth:`StrataAdmin.stats` shows
    #: ``vacuums.erasure_pending`` false (or ``/metrics`` ``strata_erasure_pending 0``).
    erasure: Literal["done", "pending"]

    @property
    def erased(self) -> bool:
        """Whether none of the tenant's bytes remain in the data file (``erasure == "done"``)."""
        return self.erasure == "done"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PurgedTenant:
        """Reads a hard delete's answer.

        Raises :class:`StrataError` with code ``UNEXPECTED_RESPONSE`` when the answer does not
        say the erasure's state. The tenant is already gone then: the server answered after the
        irreversible delete succeeded, so do not retry the delete; check the erasure with
        :meth:`StrataAdmin.stats` instead.
        """
        erasure = d.get("erasure")
        # Read closed: an answer that does not say the erasure's state is not taken as done.
        if erasure not in ("done", "pending"):
            raise StrataError(
                "a hard delete's answer has no erasure state; the tenant is already deleted: "
                f"{dict(d)!r}",
                code="UNEXPECTED_RESPONSE",
                body=dict(d),
            )
        return cls(id=str(d["id"]), erasure=cast(Literal["done", "pending"], erasure))


@dataclass
class ApiKey:
    """An API key as listed: everything but its secret."""

    id: str
    #: The tenant id, or ``*`` for an operator key.
    tenant: str
    permissions: List[str]
    name: Optional[str] = None
    user_tokens: Optional[List[str]] = None
    domains: Optional[List[str]] = None
    created_at: int = 0
    expires_at: Optional[int] = None
    revoked_at: Optional[int] = None

    @classmethod
    def _fields(cls, d: Mapping[str, Any]) -> Dict[str, Any]:
        return dict(
            id=d["id"],
            tenant=d["tenant"],
            permissions=list(d.get("permissions") or []),
            name=d.get("name"),
            user_tokens=d.get("user_tokens"),
            domains=d.get("domains"),
            created_at=int(d.get("created_at", 0)),
            expires_at=d.get("expires_at"),
            revoked_at=d.get("revoked_at"),
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ApiKey:
        return cls(**cls._fields(d))


@dataclass
class CreatedKey(ApiKey):
    """A freshly minted key. ``key`` is the bearer secret, shown in this answer only."""

    key: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreatedKey:
        return cls(key=d["key"], **cls._fields(d))

    def __repr__(self) -> str:
        # Keep the secret out of logs and tracebacks.
        return f"CreatedKey(id={self.id!r}, tenant={self.tenant!r}, key='sk_…')"


@dataclass(repr=False)
class RotatedKey(CreatedKey):
    """A rotated key's successor (``key`` is its secret, shown in this answer only) and
    ``replaces``, the old key with the expiry (or revocation) the rotation gave it."""

    replaces: Optional[ApiKey] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RotatedKey:
        return cls(key=d["key"], replaces=ApiKey.from_json(d["replaces"]), **cls._fields(d))


@dataclass
class AuditRow:
    """One audit row: who did what, when, from where, and how it ended."""

    seq: int
    at: int
    actor: str
    #: What happened, e.g. ``memory.put``, ``tenant.suspend``, ``auth.failure``.
    action: str
    #: ``ok``, or the error code that refused it.
    outcome: str
    tenant: Optional[str] = None
    client: Optional[str] = None
    #: The ``x-request-id`` of the request, as the client saw it.
    request_id: Optional[str] = None
    detail: Any = None
    #: On a row an import brought (``actor`` is then ``imported``): the ``tenant`` and
    #: ``actor`` it named on the server that wrote it.
    imported: Optional[Dict[str, Any]] = None
    #: In the operator's listing: the row is from the server's own log (whose positions are
    #: counted apart from each tenant's).
    server_log: bool = False

    @property
    def cursor(self) -> str:
        """This row's place in a listing: pass it as ``before`` for the rows after it."""
        cursor = f"{self.at}:{self.seq}"
        if self.tenant is not None or self.server_log:
            cursor += f":{self.tenant or ''}"
        if self.server_log:
            cursor += ":s"
        return cursor

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AuditRow:
        return cls(
            seq=int(d.get("seq", 0)),
            at=int(d.get("at", 0)),
            actor=d.get("actor", ""),
            action=d.get("action", ""),
            outcome=d.get("outcome", ""),
            tenant=d.get("tenant"),
            client=d.get("client"),
            request_id=d.get("request_id"),
            detail=d.get("detail"),
            imported=d.get("imported"),
            server_log=bool(d.get("server_log", False)),
        )


@dataclass
class TenantResidency:
    """Whether a tenant's indexes are in memory, what they cost, and how often they were
    loaded and evicted under the server's memory budget."""

    resident: bool
    resident_bytes: int
    loads: int
    evictions: int
    #: Never evicted: ``partition`` tenants are pinned.
    pinned: bool
    #: Graphs still being built in the background (searched exactly meanwhile).
    graph_builds_pending: int = 0
    #: The search beam (``ef``) a query that gives none walks now on its loaded graphs:
    #: ``graph_ef_search_calibrated``, capped at 256 while the tenant's integrity state is
    #: ``stress`` or ``critical``; 0 without a loaded graph.
    graph_ef_search: int = 0
    #: The default beam its loaded graphs are calibrated to: the configured ``ef_search``,
    #: raised where a graph's calibration found the data needs it; 0 without a loaded graph.
    graph_ef_search_calibrated: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TenantResidency:
        return cls(
            resident=bool(d.get("resident")),
            resident_bytes=int(d.get("resident_bytes", 0)),
            loads=int(d.get("loads", 0)),
            evictions=int(d.get("evictions", 0)),
            pinned=bool(d.get("pinned")),
            graph_builds_pending=int(d.get("graph_builds_pending", 0)),
            graph_ef_search=int(d.get("graph_ef_search", 0)),
            graph_ef_search_calibrated=int(d.get("graph_ef_search_calibrated", 0)),
        )


@dataclass
class VerifyReport:
    """The answer of :meth:`StrataAdmin.verify_tenant`: ``ok`` is false when a problem was
    found; ``problems`` says which (at most a page of them, ``problem_count`` in all)."""

    tenant: str
    ok: bool
    keys: int
    records: int
    collections: int
    problems: List[str]
    problem_count: int
    warnings: List[str]
    indexes_loaded: bool
    usage_stored: Dict[str, Any]
    usage_recounted: Dict[str, Any]
    #: Whether the tenant's data lives in its own storage file (the ``dedicated`` level).
    dedicated_file: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VerifyReport:
        return cls(
            tenant=d["tenant"],
            ok=bool(d["ok"]),
            keys=int(d.get("keys", 0)),
            records=int(d.get("records", 0)),
            collections=int(d.get("collections", 0)),
            problems=list(d.get("problems") or []),
            problem_count=int(d.get("problem_count", 0)),
            warnings=list(d.get("warnings") or []),
            indexes_loaded=bool(d.get("indexes_loaded")),
            usage_stored=dict(d.get("usage_stored") or {}),
            usage_recounted=dict(d.get("usage_recounted") or {}),
            dedicated_file=bool(d.get("dedicated_file")),
        )


@dataclass
class MigrationReport:
    """What a migration between isolation levels moves and costs. With ``dry_run`` nothing
    happened; otherwise the migration has happened, or (a data move, without ``wait``) has
    started in the background (follow it with :meth:`StrataAdmin.wait_for_migration`)."""

    #: Levels: ``shared``, ``partition`` or ``dedicated``.
    from_level: str
    to_level: str
    dry_run: bool
    moves_data: bool
    records: int
    vectors: int
    bytes: int
    #: True when the target's graph parameters differ, so graphs are rebuilt in the
    #: background while the old ones keep serving.
    rebuilds_indexes: bool
    rebuild_vectors: int
    estimated_ms: Optional[int]
    index_params: Dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MigrationReport:
        return cls(
            from_level=d["from"],
            to_level=d["to"],
            dry_run=bool(d.get("dry_run")),
            moves_data=bool(d.get("moves_data")),
            records=int(d.get("records", 0)),
            vectors=int(d.get("vectors", 0)),
            bytes=int(d.get("bytes", 0)),
            rebuilds_indexes=bool(d.get("rebuilds_indexes")),
            rebuild_vectors=int(d.get("rebuild_vectors", 0)),
            estimated_ms=d.get("estimated_ms"),
            index_params=dict(d.get("index_params") or {}),
        )


@dataclass
class BackupStatus:
    """An online backup of the server's whole data directory: its progress, or how it ended."""

    name: str
    #: ``running``, ``done`` (the directory at ``path`` is a data directory a server starts
    #: on), ``failed`` (see ``error``; nothing is left under its name) or ``interrupted`` (cut
    #: short by a crash: its partial directory is left, see ``error``).
    state: str
    #: The backup's directory, as the server sees it.
    path: str
    #: When the server started it; ``None`` for one it did not run since its start (found on
    #: disk).
    started_at: Optional[int] = None
    finished_at: Optional[int] = None
    #: Rows of every table of every data file in the backup's snapshot, and those copied.
    rows_total: Optional[int] = None
    rows_copied: Optional[int] = None
    #: While it runs: ``snapshot``, ``index_files``, ``copying`` (the rows), ``compacting``
    #: or ``syncing``.
    phase: Optional[str] = None
    dedicated_files: Optional[int] = None
    index_files: Optional[int] = None
    bytes: Optional[int] = None
    error: Optional[str] = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BackupStatus:
        return cls(
            name=str(d["name"]),
            state=str(d["state"]),
            path=str(d.get("path", "")),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            rows_total=d.get("rows_total"),
            rows_copied=d.get("rows_copied"),
            phase=d.get("phase"),
            dedicated_files=d.get("dedicated_files"),
            index_files=d.get("index_files"),
            bytes=d.get("bytes"),
            error=d.get("error"),
        )


@dataclass
class MigrationStatus:
    """A tenant's isolation level and its last migration (kept across server restarts)."""

    level: str
    #: ``none`` when the tenant was never migrated; ``copying``, ``catching_up`` or
    #: ``cleaning_up`` while its data moves; then ``rebuilding``, ``done``, ``failed``,
    #: ``interrupted`` (a shutdown or crash stopped it before its flip: the tenant stayed at its
    #: old level; the server resumes it once restarted unless configured not to) or
    #: ``cancelled`` (an operator stopped it, :meth:`StrataAdmin.cancel_migration`).
    state: str
    from_level: Optional[str] = None
    to_level: Optional[str] = None
    started_at: Optional[int] = None
    finished_at: Optional[int] = None
    graph_builds_pending: int = 0
    #: Whether the last migration moved the tenant's data (to or from ``dedicated``), and
    #: its progress: storage keys copied of the total.
    moves_data: bool = False
    keys_copied: int = 0
    keys_total: int = 0
    #: Why the last data move failed, if it did (``state`` is then ``failed``).
    error: Optional[str] = None
    #: Whether the server will resume this ``interrupted`` move by itself (once restarted,
    #: when a move slot is free): :meth:`StrataAdmin.wait_for_migration` keeps waiting then.
    will_resume: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MigrationStatus:
        return cls(
            level=d["level"],
            state=str(d.get("state", "")),
            from_level=d.get("from"),
            to_level=d.get("to"),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            graph_builds_pending=int(d.get("graph_builds_pending", 0)),
            moves_data=bool(d.get("moves_data")),
            keys_copied=int(d.get("keys_copied", 0)),
            keys_total=int(d.get("keys_total", 0)),
            error=d.get("error"),
            will_resume=bool(d.get("will_resume")),
        )

    @property
    def moving(self) -> bool:
        """Whether its data move is under way (``copying``, ``catching_up`` or ``cleaning_up``;
        another migration of the tenant is refused meanwhile)."""
        return self.state in ("copying", "catching_up", "cleaning_up")

    @property
    def pending(self) -> bool:
        """Whether its data move has not ended for good: under way, or ``interrupted`` and
        to be resumed by the server (``will_resume``)."""
        return self.moving or (self.state == "interrupted" and self.will_resume)


@dataclass
class RunningMigration:
    """A data move under way on the server (:meth:`StrataAdmin.running_migrations`): the
    tenant, and its status as :meth:`StrataAdmin.migration_status` answers it."""

    tenant: str
    status: MigrationStatus

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunningMigration:
        return cls(tenant=d["tenant"], status=MigrationStatus.from_json(d["status"]))


@dataclass
class RepairReport:
    """The answer of :meth:`StrataAdmin.repair_tenant`: the ids of the records it removed
    because their stored bytes no longer decoded (empty when nothing was damaged)."""

    tenant: str
    removed: List[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RepairReport:
        return cls(tenant=d["tenant"], removed=[str(i) for i in d.get("removed") or []])


@dataclass
class Link:
    """A link between two memories of one tenant: ``source`` → ``target``, a ``relation``
    label and a ``weight`` in (0, 1]."""

    source: str
    target: str
    relation: str
    weight: float
    created_at: Millis

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Link:
        return cls(
            source=d["source"],
            target=d["target"],
            relation=d["relation"],
            weight=float(d["weight"]),
            created_at=int(d["created_at"]),
        )


@dataclass
class RecordLinks:
    """A memory's links to and from memories the request can see."""

    outgoing: List[Link]
    incoming: List[Link]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RecordLinks:
        return cls(
            outgoing=[Link.from_json(x) for x in d.get("outgoing", [])],
            incoming=[Link.from_json(x) for x in d.get("incoming", [])],
        )


@dataclass
class RecallHit(SearchHit):
    """A recall hit: a search hit whose ``score`` is its activation, plus how it was reached:
    ``via`` is ``"seed"`` or the list of steps (``{"from", "relation", "to"}``) from a seed."""

    activation: float = 0.0
    search_score: Optional[float] = None
    via: Any = "seed"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RecallHit:
        base = SearchHit.from_json(d)
        s = d.get("search_score")
        return cls(
            **base.__dict__,
            activation=float(d.get("activation", base.score)),
            search_score=float(s) if s is not None else None,
            via=d.get("via", "seed"),
        )


@dataclass
class RecallResult:
    """The hits of a recall, by activation. ``depth`` is the depth spread (capped by the
    tenant's ``max_spreading_depth``; ``depth_capped`` says when it was). ``spread_capped``
    says spreading stopped early, at the most records one recall looks at (100,000)."""

    hits: List[RecallHit]
    mode: str
    exact: bool
    depth: int
    depth_capped: bool = False
    spread_capped: bool = False

    def __iter__(self) -> Iterator[RecallHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> RecallHit:
        return self.hits[i]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RecallResult:
        return cls(
            hits=[RecallHit.from_json(h) for h in d.get("hits", [])],
            mode=d.get("mode", ""),
            exact=bool(d.get("exact")),
            depth=int(d.get("depth", 0)),
            depth_capped=bool(d.get("depth_capped", False)),
            spread_capped=bool(d.get("spread_capped", False)),
        )
