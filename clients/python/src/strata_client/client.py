"""The synchronous tenant client, :class:`Strata`."""

from __future__ import annotations

from types import TracebackType
from typing import (
    Any,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Type,
    Union,
    overload,
)

import httpx

from ._calls import DataCalls, Filter, RecordInput
from ._http import DEFAULT_TIMEOUT, DEFAULT_WRITE_TIMEOUT, SyncTransport, from_env
from ._scope import Scope, UserMatch
from .models import (
    AuditRow,
    Collection,
    ConfidenceInput,
    Link,
    Millis,
    Page,
    RecallResult,
    Record,
    RecordLinks,
    SearchResult,
    Share,
    WriteResult,
)
from .retry import RetryPolicy

__all__ = ["Strata"]


class Strata(DataCalls):
    """A tenant's client: memories, search, collections and the tenant's audit log.

    The tenant is the API key's; no call takes one. Scope fields given here are defaults for
    every call, which may override them one by one::

        client = Strata("http://127.0.0.1:7700", "sk_...")
        alice = client.scoped(user_tokens=["u:alice"])
        alice.add("Alice takes oat milk")           # private to u:alice
        alice.search("coffee")                      # sees it; client.search() does not

    ``url`` and ``api_key`` default to the ``STRATA_URL`` and ``STRATA_API_KEY`` environment
    variables. ``retries`` is a count or a :class:`RetryPolicy` (see :mod:`strata_client.retry`
    for what is retried); ``timeout`` is in seconds (``None``: no limit), except for writes the
    server embeds (records with ``content`` and no ``vector``), which wait ``write_timeout``
    (180 s by default: a full batch of long texts takes half a minute or more to embed). Pass
    ``http_client`` to configure proxies or TLS yourself; it is then yours to close.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
        retries: Union[int, RetryPolicy] = 3,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        http_client: Optional[httpx.Client] = None,
        write_timeout: Optional[float] = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self._transport = SyncTransport(
            from_env(url, "STRATA_URL", "STRATA_SERVER"),
            from_env(api_key, "STRATA_API_KEY"),
            timeout=timeout,
            retries=retries,
            http_client=http_client,
            write_timeout=write_timeout,
        )
        self._scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        self._owns_transport = True

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def scope(self) -> Scope:
        """The default scope fields of this client."""
        return self._scope

    def scoped(
        self,
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Strata:
        """A view with other default scope fields, sharing this client's connections.

        Closing the view does nothing; close the client it came from.
        """
        view = object.__new__(Strata)
        view._transport = self._transport
        view._scope = self._scope.override(
            user_tokens, memory_domain, run_id, memory_scope, user_match
        )
        view._owns_transport = False
        return view

    def close(self) -> None:
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> Strata:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # Memories.

    @overload
    def add(
        self,
        content: Union[str, RecordInput, None] = None,
        *,
        vector: Optional[Sequence[float]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
        collection: Optional[str] = None,
        kind: Optional[str] = None,
        expires_at: Optional[Millis] = None,
        confidence: Optional[ConfidenceInput] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> WriteResult: ...

    @overload
    def add(
        self,
        content: Sequence[RecordInput],
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> List[WriteResult]: ...

    def add(
        self,
        content: Union[str, RecordInput, Sequence[RecordInput], None] = None,
        *,
        vector: Optional[Sequence[float]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
        collection: Optional[str] = None,
        kind: Optional[str] = None,
        expires_at: Optional[Millis] = None,
        confidence: Optional[ConfidenceInput] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Union[WriteResult, List[WriteResult]]:
        """Writes one memory (``content`` and/or ``vector``, or a whole :class:`NewRecord`
        or dict), or a batch: a list of them, stored atomically (all or none, at most 1000).

        Without ``id`` the server assigns a UUIDv7; with one, the write is an upsert. A
        record without its own ``user_tokens`` gets the call's, so it is private to them;
        with no tokens at all it is shared by the whole tenant. In a ``run_id``, writing the
        same content again returns the existing record (``deduplicated``).
        """
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        call = self._add(
            content,
            scope,
            vector=vector,
            metadata=metadata,
            id=id,
            collection=collection,
            kind=kind,
            expires_at=expires_at,
            confidence=confidence,
        )
        result: Union[WriteResult, List[WriteResult]] = self._transport.run(call)
        return result

    def search(
        self,
        query: Optional[str] = None,
        *,
        vector: Optional[Sequence[float]] = None,
        k: int = 10,
        filter: Optional[Filter] = None,
        mode: Optional[str] = None,
        min_score: Optional[float] = None,
        explain: bool = False,
        collection: Optional[str] = None,
        fusion: Optional[Mapping[str, Any]] = None,
        ef: Optional[int] = None,
        include: Optional[Sequence[str]] = ("record",),
        rerank: Optional[str] = None,
        rerank_weights: Optional[Mapping[str, float]] = None,
        include_shared: Union[str, Sequence[str], None] = None,
        confidence_weight: Optional[float] = None,
        recency_half_life_secs: Optional[float] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> SearchResult:
        """Searches one collection (``text`` by default) by ``query`` (BM25), ``vector``, or
        both. ``mode`` is ``vector``, ``text`` or ``hybrid`` (default: what was given);
        ``fusion`` is ``{"method": "weighted", "alpha": 0.7}`` (the default) or ``{"method":
        "rrf", "k": 60}``; ``explain`` adds per-channel scores. Scope applies before the top
        ``k``. In a collection the server embeds, a ``query`` alone is embedded there and
        searched ``hybrid`` unless ``mode`` says otherwise.
        ``include`` says what each hit carries besides ``id`` and ``score``: any of
        ``"content"``, ``"metadata"``, ``"vector"`` and ``"record"`` (the whole record, by
        default here); ``None`` takes the server's default, ``content`` and ``metadata``.
        ``rerank="adaptive"`` re-ranks with what :meth:`feedback` taught the domain
        (``rerank_weights``: ``base``, ``narrative``, ``pheromone``).
        ``include_shared`` adds other tenants' domains this tenant was granted: ``"all"``, or
        share ids and ``"owner/domain"`` strings; their hits carry ``source``.
        ``confidence_weight`` (0 to 1) folds each record's confidence into its score and
        ``recency_half_life_secs`` decays older records' scores (default: the collection's);
        with ``explain`` each hit shows ``base_score``, ``confidence`` and ``recency_factor``.
        """
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(
            self._search(
                query,
                scope,
                vector=vector,
                k=k,
                filter=filter,
                mode=mode,
                min_score=min_score,
                explain=explain,
                collection=collection,
                fusion=fusion,
                ef=ef,
                include=include,
                rerank=rerank,
                rerank_weights=rerank_weights,
                include_shared=include_shared,
                confidence_weight=confidence_weight,
                recency_half_life_secs=recency_half_life_secs,
            )
        )

    def feedback(
        self,
        ids: Sequence[str],
        *,
        shown: Optional[Sequence[str]] = None,
        query: Optional[str] = None,
        vector: Optional[Sequence[float]] = None,
        collection: Optional[str] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Dict[str, Any]:
        """Tells the server which memories the agent used (``ids``) and, optionally, which it
        was shown (``shown``) and in what context (``query`` or ``vector``), for adaptive
        reranking in the scope's ``memory_domain``. Ids the caller cannot see are ignored like
        missing ones. Needs the ``write`` permission. Returns ``{"memory_domain": ...,
        "narrative_updated": ...}``.
        """
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(
            self._feedback(
                ids, scope, shown=shown, query=query, vector=vector, collection=collection
            )
        )

    def recall(
        self,
        query: Optional[str] = None,
        *,
        vector: Optional[Sequence[float]] = None,
        k: int = 10,
        filter: Optional[Filter] = None,
        mode: Optional[str] = None,
        collection: Optional[str] = None,
        include: Optional[Sequence[str]] = ("record",),
        depth: Optional[int] = None,
        seeds: Optional[int] = None,
        decay: Optional[float] = None,
        threshold: Optional[float] = None,
        max_fanout: Optional[int] = None,
        relations: Optional[Sequence[str]] = None,
        confidence_weight: Optional[float] = None,
        recency_half_life_secs: Optional[float] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> RecallResult:
        """Searches like :meth:`search`, then spreads activation from the best ``seeds`` hits
        over links, up to ``depth`` hops (capped by the tenant's ``max_spreading_depth``),
        through memories the scope can see only. Each hit says how it was reached (``via``)
        and its ``activation``. See the server's docs/memory-intelligence.md for the rule."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        options = {
            "depth": depth,
            "seeds": seeds,
            "decay": decay,
            "threshold": threshold,
            "max_fanout": max_fanout,
            "relations": list(relations) if relations is not None else None,
            "confidence_weight": confidence_weight,
            "recency_half_life_secs": recency_half_life_secs,
        }
        return self._transport.run(
            self._recall(
                query,
                scope,
                vector=vector,
                k=k,
                filter=filter,
                mode=mode,
                collection=collection,
                include=include,
                options=options,
            )
        )

    def add_evidence(
        self,
        id: str,
        *,
        signal: Optional[float] = None,
        corroborate: bool = False,
        contradict: bool = False,
        include: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Record:
        """Adds one piece of evidence about a memory (exactly one of ``signal`` in [0, 1],
        ``corroborate=True`` or ``contradict=True``) and returns it with its new confidence,
        without its vector unless ``include`` names it (as in :meth:`get`)."""
        body: Dict[str, Any] = {}
        if signal is not None:
            body["signal"] = signal
        if corroborate:
            body["corroborate"] = True
        if contradict:
            body["contradict"] = True
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(self._add_evidence(id, scope, body, include))

    def link(
        self,
        source: str,
        target: str,
        *,
        relation: str = "related",
        weight: float = 1.0,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Link:
        """Links two memories the scope can see; :class:`NotFoundError` if either is missing
        or invisible. Linking them again with the same relation sets the weight."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(
            self._link(source, target, scope, relation=relation, weight=weight)
        )

    def unlink(
        self,
        source: str,
        target: str,
        *,
        relation: str = "related",
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> None:
        """Removes a link; :class:`NotFoundError` if there is none the scope can see."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        self._transport.run(self._unlink(source, target, scope, relation=relation))

    def links(
        self,
        id: str,
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> RecordLinks:
        """A memory's outgoing and incoming links, to and from memories the scope can see."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(self._links(id, scope))

    def get(
        self,
        id: str,
        *,
        include: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Record:
        """A memory by id; :class:`NotFoundError` when missing *or invisible to the scope*.

        ``include`` names what it carries besides its id: ``content``, ``metadata``,
        ``vector``, ``record`` (every field but the vector). ``None`` (the default): the whole
        record without its vector (``vector`` is ``None``); ``["record", "vector"]`` for all of
        it; ``[]`` for its id only."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(self._get(id, scope, include))

    def update(
        self,
        id: str,
        *,
        content: Optional[str] = None,
        vector: Optional[Sequence[float]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        kind: Optional[str] = None,
        expires_at: Optional[Millis] = None,
        confidence: Optional[ConfidenceInput] = None,
        new_user_tokens: Optional[Sequence[str]] = None,
        new_run_id: Optional[str] = None,
        new_memory_scope: Optional[str] = None,
        move_to_domain: Optional[str] = None,
        clear: Sequence[str] = (),
        include: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Record:
        """Changes a memory (``PATCH``) and returns the new version. Fields left ``None`` stay;
        ``metadata`` is merged (a key set to ``None`` is removed). ``new_user_tokens``,
        ``new_run_id`` and ``new_memory_scope`` change the record's own scope fields, while
        ``user_tokens`` etc. are, as everywhere, the scope the request is made in.
        ``clear`` names fields to remove (``kind``, ``run_id``, ``memory_scope``,
        ``expires_at``, or ``metadata``: all of its keys). ``confidence`` is a
        :class:`Confidence` or a number (``0.9`` means ``Confidence(value=0.9)``).
        ``move_to_domain`` moves the memory to another memory domain; it keeps its id,
        metadata, confidence and links. The new version comes without its vector unless
        ``include`` names it (as in :meth:`get`).
        """
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(
            self._update(
                id,
                scope,
                content=content,
                vector=vector,
                metadata=metadata,
                kind=kind,
                expires_at=expires_at,
                confidence=confidence,
                new_user_tokens=new_user_tokens,
                new_run_id=new_run_id,
                new_memory_scope=new_memory_scope,
                move_to_domain=move_to_domain,
                clear=clear,
                include=include,
            )
        )

    def delete(
        self,
        id: str,
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> None:
        """Deletes a memory by id; :class:`NotFoundError` when missing or invisible."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        self._transport.run(self._delete(id, scope))

    def delete_where(
        self,
        filter: Optional[Filter] = None,
        *,
        all: bool = False,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> int:
        """Deletes every memory the scope sees that matches ``filter``; returns how many. The
        server deletes the matches in transactions of at most 1,000 records, so a crash part-way
        leaves some deleted and the rest in place: sending the call again deletes the rest. An
        empty or missing ``filter`` is refused (``BadRequestError``) unless ``all=True`` says
        to delete every memory the scope sees. A key bound to user tokens deletes only records
        of its own principals, never tenant-shared or co-owned ones."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(self._delete_where(filter, all, scope))

    def list(
        self,
        *,
        filter: Optional[Filter] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
        include: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Page:
        """One page of the memories the scope sees, in id order (``limit`` up to 1000, 100 by
        default; a page of large records may hold fewer, within the tenant's answer memory, and
        still has its ``next``). Pass the page's ``next`` as ``after`` for the following page,
        or use :meth:`iter_all`, which follows ``next`` until it is ``None``. Records come
        without their vectors unless ``include`` names them (as in :meth:`get`; ``[]`` lists ids
        only)."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(
            self._list(scope, filter=filter, after=after, limit=limit, include=include)
        )

    def iter_all(
        self,
        *,
        filter: Optional[Filter] = None,
        page_size: Optional[int] = None,
        include: Optional[Sequence[str]] = None,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> Iterator[Record]:
        """Every memory the scope sees that matches ``filter``, fetching pages as needed;
        without vectors unless ``include`` names them (as in :meth:`get`)."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        after: Optional[str] = None
        while True:
            page = self._transport.run(
                self._list(scope, filter=filter, after=after, limit=page_size, include=include)
            )
            yield from page.records
            if page.next is None:
                return
            after = page.next

    def count(
        self,
        filter: Optional[Filter] = None,
        *,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[UserMatch] = None,
    ) -> int:
        """How many memories the scope sees that match ``filter``."""
        scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        return self._transport.run(self._count(filter, scope))

    def history(
        self,
        *,
        action: Optional[str] = None,
        since: Optional[Millis] = None,
        until: Optional[Millis] = None,
        limit: Optional[int] = None,
        before: Optional[str] = None,
    ) -> List[AuditRow]:
        """The tenant's audit log, newest first (needs a key with ``admin`` and
        ``all_principals``, bound to neither domains nor user tokens): every write, delete and
        admin action, with its actor and request id. Filter by ``action`` (e.g.
        ``memory.delete``) and time; at most ``limit`` rows (100 by default, up to 1000). For
        the next, older page pass the last row's ``cursor`` as ``before``: pages neither lose
        nor repeat a row, even among rows of one millisecond."""
        return self._transport.run(self._history(action, since, until, limit, before))

    # Collections: tenant-wide vector spaces with a fixed dimension.

    def list_collections(self) -> List[Collection]:
        return self._transport.run(self._list_collections())

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        analyzer: Optional[str] = None,
        initial_confidence: Optional[float] = None,
        recency_half_life_secs: Optional[float] = None,
        link_runs: Optional[bool] = None,
        embed: Optional[bool] = None,
    ) -> Collection:
        """Creates a collection (needs ``admin``); ``metric`` is ``cosine``, ``dot`` or ``l2``.
        ``analyzer`` (``standard``, ``english``, ``none``) is how its text is searched;
        ``initial_confidence`` the confidence of records that give none (0.5);
        ``recency_half_life_secs`` the recency decay of searches that name none; with
        ``link_runs=True`` each new record of a ``run_id`` is linked (``next``) from the run's
        previous one, for :meth:`recall`. With ``embed=True`` the server's built-in model
        embeds its text as it does the ``text`` collection's (``dim`` must be the model's,
        384)."""
        options = dict(
            analyzer=analyzer,
            initial_confidence=initial_confidence,
            recency_half_life_secs=recency_half_life_secs,
            link_runs=link_runs,
            embed=embed,
        )
        return self._transport.run(self._create_collection(name, dim, metric, options))

    def delete_collection(self, name: str) -> int:
        """Deletes a collection and every record in it, every principal's (needs ``admin`` and
        ``all_principals``, bound to neither domains nor user tokens); returns how many. Once
        begun it runs to its end on the server even if this call times out or its connection
        drops. One cut short by a crash or an error leaves the collection missing and its name
        taken (a create is a conflict) until this is called again, which finishes it and
        returns how many that call deleted."""
        return self._transport.run(self._delete_collection(name))

    def create_share(
        self, domain: str, *, tenants: Sequence[str] = (), children: bool = False
    ) -> Share:
        """Publishes one of the tenant's domains read-only (needs ``admin``): to the named
        ``tenants`` and/or, with ``children=True``, to every child tenant. Only the domain's
        records without user tokens are shared."""
        return self._transport.run(self._create_share(domain, tenants, children))

    def list_shares(self) -> List[Share]:
        """The tenant's own published shares (needs ``admin``)."""
        return self._transport.run(self._list_shares())

    def revoke_share(self, id: str) -> Share:
        """Revokes a share (needs ``admin``); grantees see nothing of it from their next call."""
        return self._transport.run(self._revoke_share(id))

    def incoming_shares(self) -> List[Share]:
        """The shares this tenant holds (``state="accepted"``: other tenants' domains
        ``search`` may include) or is offered by name (``state="offered"``: not searched until
        accepted)."""
        return self._transport.run(self._incoming_shares())

    def accept_share(self, id: str) -> Share:
        """Accepts a share offered to this tenant by name (needs ``admin``, bound to neither
        domains nor user tokens): from the next call, ``include_shared`` may include it."""
        return self._transport.run(self._accept_share(id))

    def decline_share(self, id: str) -> Share:
        """Declines a share offered to this tenant by name, or gives up one it accepted (needs
        ``admin``, unbound): searches see nothing of it from the next call."""
        return self._transport.run(self._decline_share(id))
