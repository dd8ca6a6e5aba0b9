"""A LangChain ``VectorStore`` backed by Strata (``pip install strata-client[langchain]``).

Each store is one Strata collection, whose dimension is the embedding's: it is created on the
first write if missing (which needs a key with ``admin``; create it beforehand otherwise) and
searched with ``modality`` set to it. The tenant comes from the client's key; the scope fields
given to the constructor apply to every call, so a store built with ``user_tokens=["u:alice"]``
writes memories private to Alice and finds only what Alice may see.

Document metadata is stored under one metadata key, ``langchain``, because Strata reserves
its record fields' names (``id``, ``content``, ``kind``...) at the top level of metadata,
while LangChain metadata may use any of them. Filters given to searches are written against
the document metadata and rewritten to that key: ``{"source": "a"}`` becomes
``{"langchain.source": "a"}``; the usual Strata operators apply (``$eq``, ``$ne``, ``$in``,
``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``, ``$and``, ``$or``). Metadata keys
may not be empty, start with ``$`` or contain ``.``; document ids must match
``[a-zA-Z0-9_.-]{1,64}``, and are unique in the tenant rather than per collection: an id that
another store of the tenant holds moves that document into this one.

Without an ``embedding`` (``embedding=None``) the server embeds: texts are written as content
only and queries are sent as text, so no model runs in the client. The collection must then
be one the server embeds (it declares an ``embedder``), by default the tenant's ``text``
collection; another collection gets one by a re-embed (``POST /v1/collections/{name}/reembed``).
Maximal marginal relevance needs the query's vector, so it needs an ``embedding``.
"""

from __future__ import annotations

import asyncio
import json
import math
import unicodedata
import uuid
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "strata_client.langchain needs langchain-core: pip install 'strata-client[langchain]'"
    ) from e

from ._scope import Scope
from .aio import AsyncStrata
from .client import Strata
from .errors import (
    BadRequestError,
    ConflictError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StrataError,
)
from .models import Collection, NewRecord, Record, SearchHit

__all__ = ["StrataVectorStore", "METADATA_KEY"]

#: The metadata key under which a document's metadata is stored.
METADATA_KEY = "langchain"
#: Records per write request, and ids per lookup: well inside the server's limits (1000
#: records per batch, 1024 values per ``$in``).
BATCH = 500
#: Bytes of JSON per write request, at most: half the server's default body limit (16 MiB),
#: which 500 records of long texts or wide vectors (3072 dimensions) can pass. A server
#: configured lower answers 413, and the batch is split in two and sent again.
BATCH_BYTES = 8 * 1024 * 1024

VST = TypeVar("VST", bound="StrataVectorStore")


def translate_filter(filter: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Rewrites a filter on document metadata into one on the records' metadata."""
    if not filter:
        return {}
    if not isinstance(filter, Mapping):
        raise TypeError(
            f"a filter is a dict of metadata keys to values or operators, such as "
            f"{{'source': 'a.pdf'}}, not a {type(filter).__name__}"
        )
    out: Dict[str, Any] = {}
    for key, value in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{key} takes a list of filters")
            out[key] = [translate_filter(f) for f in value]
        elif key.startswith("$"):
            raise ValueError(f"unknown top-level filter operator {key}")
        else:
            out[f"{METADATA_KEY}.{key}"] = value
    return out


#: What a document is made of: the records' vectors and other fields are not read.
DOCUMENT_FIELDS = ("content", "metadata")


def _document(record: Union[Record, SearchHit]) -> Document:
    metadata = (record.metadata or {}).get(METADATA_KEY)
    return Document(
        id=record.id,
        page_content=record.content or "",
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )


def _unit(v: Sequence[float]) -> List[float]:
    """``v`` scaled to length 1 (a zero vector stays zero: similar to nothing)."""
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v] if n > 0 else [0.0] * len(v)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def mmr_select(
    query: Sequence[float],
    candidates: Sequence[Sequence[float]],
    k: int,
    lambda_mult: float,
    relevance: Optional[Sequence[float]] = None,
) -> List[int]:
    """Maximal marginal relevance: indexes of ``k`` candidates, each chosen for similarity to
    the query minus its greatest similarity to those already chosen (cosine).

    Each candidate's greatest similarity to the chosen ones is kept and updated with the one
    chosen last, so a selection costs ``k * fetch_k`` dot products, not ``k^2 * fetch_k``;
    pure Python (numpy would be a heavy dependency for it)."""
    units = [_unit(c) for c in candidates]
    if relevance is None:
        q = _unit(query)
        relevance = [_dot(q, u) for u in units]
    redundancy = [-math.inf] * len(units)
    left = set(range(len(units)))
    chosen: List[int] = []
    while left and len(chosen) < k:
        def score(i: int) -> float:
            r = redundancy[i] if chosen else 0.0
            return lambda_mult * relevance[i] - (1 - lambda_mult) * r

        # Ties go to the earlier candidate (the better ranked by the server).
        best = min(left, key=lambda i: (-score(i), i))
        chosen.append(best)
        left.discard(best)
        for i in left:
            redundancy[i] = max(redundancy[i], _dot(units[i], units[best]))
    return chosen


def _json_size(i: int, record: NewRecord) -> int:
    """Bytes of ``record``'s JSON as sent (UTF-8); a record JSON cannot carry (a
    ``datetime`` in its metadata) is refused, before anything of the call is sent."""
    try:
        text = json.dumps(
            record.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        # Strict: half a surrogate pair has no UTF-8 form, and the request would fail to
        # encode after earlier batches of the call were written.
        return len(text.encode("utf-8"))
    except TypeError as e:
        raise BadRequestError(
            f"texts[{i}]: {e} (convert it to a string or a number first); refused by the "
            "client before sending",
            code="BAD_REQUEST",
        ) from None
    except ValueError as e:  # NaN or an infinity (pandas' missing values), or a lone surrogate
        why = " (NaN and infinities have no JSON form: use None)" if "float" in str(e) else ""
        raise BadRequestError(
            f"texts[{i}]: {e}{why}; refused by the client before sending",
            code="BAD_REQUEST",
        ) from None


def _batches(records: List[NewRecord]) -> List[List[NewRecord]]:
    """``records`` in write requests of at most ``BATCH`` records and ``BATCH_BYTES`` bytes
    (a record larger than that alone is sent alone, for the server to judge)."""
    out: List[List[NewRecord]] = []
    batch: List[NewRecord] = []
    size = 0
    for i, r in enumerate(records):
        n = _json_size(i, r) + 1
        if batch and (len(batch) == BATCH or size + n > BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append(r)
        size += n
    if batch:
        out.append(batch)
    return out


def _halved(batch: List[NewRecord], pending: List[List[NewRecord]]) -> bool:
    """Puts ``batch``'s two halves first in ``pending``, for a batch the server refused as too
    large (whole: a batch is atomic); ``False`` for a single record, which cannot be split."""
    if len(batch) < 2:
        return False
    half = len(batch) // 2
    pending[:0] = [batch[:half], batch[half:]]
    return True


def _partial(e: StrataError, written: List[str]) -> StrataError:
    """``e``, telling which documents earlier requests of the same call wrote: a call of
    several requests is not atomic, and a retry with these ids does not write them twice."""
    e.written_ids = list(written)
    if written:
        e.message += (
            f" ({len(written)} documents of this call were written by its earlier requests; "
            "their ids are in written_ids)"
        )
    return e


#: Code points that render as nothing, which the server counts as blank beside whitespace and
#: control characters: the same list as the server's (``is_invisible`` in Strata's text
#: rules), Unicode's default-ignorable code points and the format controls that show nothing
#: on their own. Other format characters (``U+0600``, say) are text to the server.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_INVISIBLE = frozenset(c for lo, hi in _INVISIBLE_RANGES for c in range(lo, hi + 1))


def _blank(text: str) -> bool:
    """Whether the server refuses ``text`` as blank: only whitespace, control characters,
    and characters that render as nothing."""
    return all(c.isspace() or unicodedata.category(c) == "Cc" or ord(c) in _INVISIBLE for c in text)


def _check_texts(texts: List[str]) -> None:
    """Refuses, before anything is written, a text the server would refuse in a later
    request after earlier ones were stored."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if _blank(text):
            raise BadRequestError(
                f"texts[{i}]: content: is empty or whitespace only (drop empty documents, "
                "which some loaders produce, before adding them); refused by the client "
                "before sending",
                code="BAD_REQUEST",
            )



def relevance(metric: str, score: float) -> float:
    """Strata's search score mapped into [0, 1], never decreasing as the score rises.

    - ``cosine``: the similarity itself, as LangChain's other stores give it (``1 -`` the
      cosine distance), a negative one as 0: a ``score_threshold`` carried over from them
      keeps its meaning (an unrelated text scores near 0, not near 0.5).
    - ``l2``: the score is the negative euclidean distance ``-d``, so ``1 / (1 + d)``: 1 for
      the same vector, towards 0 as the distance grows, whatever the vectors' lengths.
    - ``dot``: the dot product, unbounded for vectors that are not unit length, through the
      logistic function ``1 / (1 + exp(-score))``: 0.5 for orthogonal vectors.
    """
    if metric == "l2":
        return 1.0 / (1.0 + max(-score, 0.0))
    if metric == "dot":
        # Written so that exp never overflows: exp of a non-positive number is at most 1.
        if score >= 0:
            return 1.0 / (1.0 + math.exp(-score))
        e = math.exp(score)
        return e / (1.0 + e)
    # Cosine; clamped, as rounding may put a similarity a hair above 1.
    return min(max(score, 0.0), 1.0)


class StrataVectorStore(VectorStore):
    """LangChain vector store over one Strata collection.

    Give a :class:`~strata_client.Strata` client (for the sync methods) and/or an
    :class:`~strata_client.AsyncStrata` one (for the async methods; without one they run the
    sync methods in a thread, as LangChain does by default)::

        store = StrataVectorStore(
            client=Strata(url, api_key),
            embedding=OpenAIEmbeddings(),
            collection="docs",
            user_tokens=["u:alice"],
        )
        store.add_texts(["Alice takes oat milk"], metadatas=[{"topic": "coffee"}])
        store.similarity_search("coffee", k=3, filter={"topic": "coffee"})
    """

    def __init__(
        self,
        *,
        embedding: Optional[Embeddings] = None,
        client: Optional[Strata] = None,
        async_client: Optional[AsyncStrata] = None,
        collection: Optional[str] = None,
        metric: str = "cosine",
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[str] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> None:
        #: Whether the store made its client (from `url` and `api_key`), so closes it.
        self._owns_client = client is None and async_client is None
        if client is None and async_client is None:
            # `url` and `api_key` (or their environment variables) make a client here, which
            # is what `from_texts(..., url=..., api_key=...)` needs.
            client = Strata(url, api_key)
        self._client = client
        self._async_client = async_client
        self._embedding = embedding
        # With the server embedding, the tenant's `text` collection is the one it embeds.
        self.collection = collection or ("langchain" if embedding is not None else "text")
        self.metric = metric
        self.scope = Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match)
        #: The collection's dimension once it is known to exist.
        self._dim: Optional[int] = None

    def close(self) -> None:
        """Closes the client the store made from ``url`` and ``api_key`` (its connections);
        a client given to the store is left open, for its owner to close."""
        if self._owns_client and self._client is not None:
            self._client.close()

    def __enter__(self: VST) -> VST:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def embeddings(self) -> Optional[Embeddings]:
        """The client-side embedding, or ``None`` when the server embeds."""
        return self._embedding

    @property
    def client(self) -> Strata:
        if self._client is None:
            raise ValueError("this store was built with an async client only; use the a* methods")
        return self._client

    def _scope_args(self) -> Dict[str, Any]:
        s = self.scope
        return {
            "user_tokens": s.user_tokens,
            "memory_domain": s.memory_domain,
            "run_id": s.run_id,
            "memory_scope": s.memory_scope,
            "user_match": s.user_match,
        }

    def _in_collection(self, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        f: Dict[str, Any] = {"modality": self.collection}
        if extra:
            f.update(extra)
        return f

    # The collection: found or created on first use, its dimension checked.

    def _check(self, found_dim: int, dim: int) -> None:
        if found_dim != dim:
            raise ValueError(
                f"collection {self.collection} has dimension {found_dim}, "
                f"but the embeddings have {dim}"
            )

    def _adopt(self, found: Collection, dim: int) -> None:
        """Remembers an existing collection; its metric, not the constructor's, rules scores."""
        self._check(found.dim, dim)
        self._dim, self.metric = found.dim, found.metric

    def _adopt_server_embedded(self, found: Optional[Collection], write: bool) -> bool:
        """Without a client embedding: whether the collection exists, and that the server
        embeds it (a write to a missing collection cannot create one the server embeds)."""
        if found is None:
            if write:
                raise ValueError(
                    f"collection {self.collection} does not exist; without an embedding the "
                    "store writes to a collection the server embeds, such as `text`"
                )
            return False
        if found.embedder is None:
            raise ValueError(
                f"collection {self.collection} is not embedded by the server; give the store "
                "an embedding, use a collection the server embeds (`text`), or re-embed it"
            )
        self._dim, self.metric = found.dim, found.metric
        return True

    def _ensure_server_collection(self, write: bool) -> bool:
        if self._dim is not None:
            return True
        return self._adopt_server_embedded(self._find(self.client.list_collections()), write)

    async def _aensure_server_collection(self, client: AsyncStrata, write: bool) -> bool:
        if self._dim is not None:
            return True
        return self._adopt_server_embedded(self._find(await client.list_collections()), write)

    def _find(self, collections: List[Collection]) -> Optional[Collection]:
        return next((c for c in collections if c.name == self.collection), None)

    def _cannot_create(self, e: PermissionDeniedError) -> PermissionDeniedError:
        """``e``, saying that the store was creating its missing collection."""
        e.message = (
            f"collection {self.collection!r} does not exist, and the store could not create it "
            f"({e.message}); create it beforehand (Strata.create_collection) or give the "
            "store a key with admin"
        )
        return e

    def _ensure_collection(self, dim: int, create: bool) -> bool:
        """Whether the collection exists (creating it when ``create``)."""
        if self._dim is not None:
            self._check(self._dim, dim)
            return True
        found = self._find(self.client.list_collections())
        if found is None and create:
            try:
                found = self.client.create_collection(self.collection, dim, self.metric)
            except ConflictError:
                # Another writer created it first.
                found = self._find(self.client.list_collections())
            except PermissionDeniedError as e:
                raise self._cannot_create(e) from None
        if found is None:
            return False
        self._adopt(found, dim)
        return True

    async def _aensure_collection(self, client: AsyncStrata, dim: int, create: bool) -> bool:
        if self._dim is not None:
            self._check(self._dim, dim)
            return True
        found = self._find(await client.list_collections())
        if found is None and create:
            try:
                found = await client.create_collection(self.collection, dim, self.metric)
            except ConflictError:
                found = self._find(await client.list_collections())
            except PermissionDeniedError as e:
                raise self._cannot_create(e) from None
        if found is None:
            return False
        self._adopt(found, dim)
        return True

    # Writing.

    def _check_call(
        self,
        texts: List[str],
        metadatas: Optional[List[Dict[str, Any]]],
        ids: Optional[Sequence[Optional[str]]],
    ) -> Optional[List[Optional[str]]]:
        """Refuses, before anything is embedded, created or written, a call whose lists do
        not match; returns the ids to write under.

        In a store with a ``run_id`` the server deduplicates writes of the same content in
        the run: a second document with the text of an earlier one would come back with the
        earlier one's id, its own metadata dropped. LangChain stores each document added, so
        a text given no id there gets one here (a client id is never deduplicated)."""
        _check_texts(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        for i, metadata in enumerate(metadatas or []):
            # Before the texts are embedded or the collection created, not only when the
            # batches are sized.
            _json_size(i, NewRecord(content="", metadata={METADATA_KEY: dict(metadata or {})}))
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if ids is not None:
            # Refused before anything is written: the server refuses an id twice in one batch,
            # and across batches the later text would silently replace the earlier one.
            seen = set()
            for given in ids:
                if given is not None and given in seen:
                    raise ValueError(f"id {given!r} is given twice; each text needs its own id")
                seen.add(given)
        if self.scope.run_id is None:
            return list(ids) if ids is not None else None
        named: List[Optional[str]] = list(ids) if ids is not None else [None] * len(texts)
        return [i if i is not None else str(uuid.uuid4()) for i in named]

    def _records(
        self,
        texts: List[str],
        vectors: Sequence[Optional[List[float]]],
        metadatas: Optional[List[Dict[str, Any]]],
        ids: Optional[Sequence[Optional[str]]],
    ) -> List[NewRecord]:
        records = []
        for i, (text, vector) in enumerate(zip(texts, vectors)):
            metadata = metadatas[i] if metadatas else None
            records.append(
                NewRecord(
                    content=text,
                    vector=vector,
                    id=ids[i] if ids else None,
                    collection=self.collection,
                    metadata={METADATA_KEY: dict(metadata)} if metadata else None,
                )
            )
        return records

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Embeds and stores texts; a text whose id exists replaces that document."""
        texts = list(texts)
        if not texts:
            return []
        write_ids = self._check_call(texts, metadatas, ids)
        vectors: Sequence[Optional[List[float]]]
        if self._embedding is None:
            # Content only: the server embeds each text on write.
            self._ensure_server_collection(write=True)
            vectors = [None] * len(texts)
        else:
            vectors = self._embedding.embed_documents(texts)
            self._ensure_collection(len(vectors[0] or []), create=True)
        records = self._records(texts, vectors, metadatas, write_ids)
        out: List[str] = []
        pending = _batches(records)
        try:
            while pending:
                batch = pending.pop(0)
                try:
                    results = self.client.add(batch, **self._scope_args())
                except PayloadTooLargeError:
                    if not _halved(batch, pending):
                        raise
                    continue
                out.extend(r.id for r in results)
        except StrataError as e:
            raise _partial(e, out) from None
        return out

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> List[str]:
        if self._async_client is None:
            return await super().aadd_texts(texts, metadatas, ids=ids, **kwargs)
        texts = list(texts)
        if not texts:
            return []
        write_ids = self._check_call(texts, metadatas, ids)
        vectors: Sequence[Optional[List[float]]]
        if self._embedding is None:
            await self._aensure_server_collection(self._async_client, write=True)
            vectors = [None] * len(texts)
        else:
            vectors = await self._embedding.aembed_documents(texts)
            await self._aensure_collection(self._async_client, len(vectors[0] or []), create=True)
        records = self._records(texts, vectors, metadatas, write_ids)
        out: List[str] = []
        # Serialising every record to size the batches takes seconds of CPU for thousands of
        # large vectors: off the event loop, which the caller's other tasks share.
        pending = await asyncio.get_running_loop().run_in_executor(None, _batches, records)
        try:
            while pending:
                batch = pending.pop(0)
                try:
                    results = await self._async_client.add(batch, **self._scope_args())
                except PayloadTooLargeError:
                    if not _halved(batch, pending):
                        raise
                    continue
                out.extend(r.id for r in results)
        except StrataError as e:
            raise _partial(e, out) from None
        return out

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes these documents; ids of none are ignored (deleting is idempotent, as
        LangChain's indexing expects: a `False` there is a failed cleanup). With no ids, and
        only with
        ``delete_all=True``, every record of the collection that the store's scope sees:
        records written by other means too (the tenant's ``text`` collection also holds the
        memories an agent wrote through the API), so it is never the default."""
        if ids is None:
            self._check_delete_all(kwargs)
            self.client.delete_where(self._in_collection(), **self._scope_args())
            return True
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), BATCH):
            chunk = {"id": {"$in": wanted[start : start + BATCH]}}
            self.client.delete_where(self._in_collection(chunk), **self._scope_args())
        return True

    async def adelete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        if self._async_client is None:
            return await super().adelete(ids, **kwargs)
        if ids is None:
            self._check_delete_all(kwargs)
            await self._async_client.delete_where(self._in_collection(), **self._scope_args())
            return True
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), BATCH):
            chunk = {"id": {"$in": wanted[start : start + BATCH]}}
            await self._async_client.delete_where(
                self._in_collection(chunk), **self._scope_args()
            )
        return True

    def _check_delete_all(self, kwargs: Dict[str, Any]) -> None:
        if kwargs.get("delete_all") is not True:
            raise ValueError(
                f"delete() without ids would delete every record of collection "
                f"{self.collection!r} in this store's scope, including records not written "
                "through this store; pass delete_all=True to do that"
            )

    # Reading by id.

    @staticmethod
    def _in_order(ids: Sequence[str], records: Iterable[Record]) -> List[Document]:
        by_id = {r.id: r for r in records}
        return [_document(by_id[i]) for i in ids if i in by_id]

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The documents with these ids, in the order asked; missing ids are skipped."""
        found: List[Record] = []
        for start in range(0, len(ids), BATCH):
            chunk = {"id": {"$in": list(ids[start : start + BATCH])}}
            found.extend(
                self.client.iter_all(
                    filter=self._in_collection(chunk),
                    include=DOCUMENT_FIELDS,
                    **self._scope_args(),
                )
            )
        return self._in_order(ids, found)

    async def aget_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        if self._async_client is None:
            return await super().aget_by_ids(ids)
        found: List[Record] = []
        for start in range(0, len(ids), BATCH):
            chunk = {"id": {"$in": list(ids[start : start + BATCH])}}
            async for r in self._async_client.iter_all(
                filter=self._in_collection(chunk), include=DOCUMENT_FIELDS, **self._scope_args()
            ):
                found.append(r)
        return self._in_order(ids, found)

    # Searching.

    def _search_args(
        self,
        vector: Optional[List[float]],
        k: int,
        filter: Optional[Mapping[str, Any]],
        query: Optional[str] = None,
    ) -> Dict[str, Any]:
        # `vector` mode with a query alone: the server embeds the query, and scores stay the
        # metric's, as with a client vector.
        return dict(
            query=query,
            vector=vector,
            k=k,
            mode="vector",
            collection=self.collection,
            filter=translate_filter(filter) or None,
            # A Document needs the text and the metadata, not the whole record.
            include=["content", "metadata"],
            **self._scope_args(),
        )

    def similarity_search_with_score_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Tuple[Document, float]]:
        """Documents nearest to a vector, with Strata's scores (higher is closer: cosine
        similarity, dot product, or negative L2 distance, after the collection's metric)."""
        translate_filter(filter)
        if k == 0:
            return []  # a bad filter is refused even before the collection exists
        if not self._ensure_collection(len(embedding), create=False):
            return []
        result = self.client.search(**self._search_args(embedding, k, filter))
        return [(_document(h), h.score) for h in result.hits]

    async def asimilarity_search_with_score_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Tuple[Document, float]]:
        if self._async_client is None:
            pairs: List[Tuple[Document, float]] = await self._in_thread(
                self.similarity_search_with_score_by_vector, embedding, k, filter, **kwargs
            )
            return pairs
        translate_filter(filter)
        if k == 0:
            return []
        if not await self._aensure_collection(self._async_client, len(embedding), create=False):
            return []
        result = await self._async_client.search(**self._search_args(embedding, k, filter))
        return [(_document(h), h.score) for h in result.hits]

    @staticmethod
    async def _in_thread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_executor(None, f, *args, **kwargs)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        if self._embedding is None:
            translate_filter(filter)
            if k == 0:
                return []
            if not self._ensure_server_collection(write=False):
                return []
            result = self.client.search(**self._search_args(None, k, filter, query=query))
            return [(_document(h), h.score) for h in result.hits]
        vector = self._embedding.embed_query(query)
        return self.similarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        if self._embedding is None:
            if self._async_client is None:
                pairs: List[Tuple[Document, float]] = await self._in_thread(
                    self.similarity_search_with_score, query, k, filter, **kwargs
                )
                return pairs
            translate_filter(filter)
            if k == 0:
                return []
            if not await self._aensure_server_collection(self._async_client, write=False):
                return []
            args = self._search_args(None, k, filter, query=query)
            result = await self._async_client.search(**args)
            return [(_document(h), h.score) for h in result.hits]
        vector = await self._embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        pairs = await self.asimilarity_search_with_score(query, k, filter, **kwargs)
        return [d for d, _ in pairs]

    def similarity_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        pairs = self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [d for d, _ in pairs]

    async def asimilarity_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        pairs = await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [d for d, _ in pairs]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores in [0, 1] for ``similarity_search_with_relevance_scores``, rising with
        Strata's score, for vectors of any length (LangChain's own functions assume unit
        vectors): see :func:`relevance`.

        The metric is read when a score is mapped, after the search: LangChain asks for this
        function before it searches, and a store that has not met its collection yet still
        holds the constructor's metric then, not the collection's."""
        return lambda score: relevance(self.metric, score)

    # Maximal marginal relevance: search fetch_k by vector, with the candidates' stored
    # vectors included, and pick k.

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        if not self._ensure_collection(len(embedding), create=False):
            return []
        hits = self.client.search(**self._mmr_args(embedding, fetch_k, filter)).hits
        return self._mmr_pick(embedding, hits, k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        if self._async_client is None:
            docs: List[Document] = await self._in_thread(
                self.max_marginal_relevance_search_by_vector,
                embedding,
                k,
                fetch_k,
                lambda_mult,
                filter,
                **kwargs,
            )
            return docs
        if not await self._aensure_collection(self._async_client, len(embedding), create=False):
            return []
        result = await self._async_client.search(**self._mmr_args(embedding, fetch_k, filter))
        return self._mmr_pick(embedding, result.hits, k, lambda_mult)

    def _mmr_args(
        self,
        embedding: Optional[List[float]],
        fetch_k: int,
        filter: Optional[Mapping[str, Any]],
        query: Optional[str] = None,
    ) -> Dict[str, Any]:
        args = self._search_args(embedding, fetch_k, filter, query=query)
        args["include"] = ["content", "metadata", "vector"]
        return args

    def _mmr_pick(
        self,
        embedding: Optional[List[float]],
        hits: Sequence[SearchHit],
        k: int,
        lambda_mult: float,
    ) -> List[Document]:
        """``k`` of the ``hits`` by maximal marginal relevance. Without the query's vector (the
        server embedded the query) a hit's relevance is its score mapped by
        :func:`relevance`: the cosine similarity itself in a cosine collection, as the server's
        model's are."""
        candidates = [h for h in hits if h.vector]
        scored = [relevance(self.metric, c.score) for c in candidates]
        relevance_of = None if embedding is not None else scored
        vectors = [c.vector or [] for c in candidates]
        picked = mmr_select(embedding or [], vectors, k, lambda_mult, relevance_of)
        return [_document(candidates[i]) for i in picked]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        if self._embedding is None:
            translate_filter(filter)
            if k == 0 or not self._ensure_server_collection(write=False):
                return []
            hits = self.client.search(**self._mmr_args(None, fetch_k, filter, query=query)).hits
            return self._mmr_pick(None, hits, k, lambda_mult)
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        if self._embedding is None:
            if self._async_client is None:
                docs: List[Document] = await self._in_thread(
                    self.max_marginal_relevance_search,
                    query,
                    k,
                    fetch_k,
                    lambda_mult,
                    filter,
                    **kwargs,
                )
                return docs
            translate_filter(filter)
            client = self._async_client
            if k == 0 or not await self._aensure_server_collection(client, write=False):
                return []
            args = self._mmr_args(None, fetch_k, filter, query=query)
            return self._mmr_pick(None, (await client.search(**args)).hits, k, lambda_mult)
        embedding = self._embedding
        vector = await embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    # Construction from texts.

    @classmethod
    def from_texts(
        cls: Type[VST],
        texts: List[str],
        embedding: Optional[Embeddings],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> VST:
        """A store (``kwargs`` are the constructor's: ``client`` or ``url`` and ``api_key``,
        ``collection``, scope fields) holding ``texts``."""
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls: Type[VST],
        texts: List[str],
        embedding: Optional[Embeddings],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> VST:
        store = cls(embedding=embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store
