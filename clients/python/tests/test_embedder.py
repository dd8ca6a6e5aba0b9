"""The built-in embedder through the client and the LangChain store, with no model in the
client: text is written as text, questions are asked as text, and the server embeds both."""

from __future__ import annotations

from typing import Iterator

import pytest

from strata_client import AsyncStrata, Strata, StrataAdmin
from strata_client.langchain import StrataVectorStore

from .conftest import Server, unique

# The target and distractors share no word with the question, so only meaning can rank them.
TARGET = "Alice takes oat milk in her coffee"
DISTRACTORS = [
    "The server restarts every night at 3am",
    "Bob parked his car in the garage",
    "The quarterly report is due on Friday",
    "Paris is the capital of France",
    "Carol is learning to play the violin",
]
PARAPHRASE = "which drink do they prefer?"
DIM = 384


@pytest.fixture
def ekey(embedder_server: Server) -> str:
    """A key (read, write, admin) of a fresh tenant on the server that embeds."""
    with StrataAdmin(embedder_server.url, embedder_server.operator_key) as admin:
        tenant = unique("t")
        admin.create_tenant(tenant)
        return admin.create_key(tenant, permissions=["read", "write", "admin"]).key


@pytest.fixture
def eclient(embedder_server: Server, ekey: str) -> Iterator[Strata]:
    with Strata(embedder_server.url, ekey) as c:
        yield c


def test_text_only_add_is_embedded_and_found_by_a_paraphrase(eclient: Strata) -> None:
    [text] = [c for c in eclient.list_collections() if c.name == "text"]
    assert text.embedder is not None and text.dim == DIM
    results = eclient.add([{"content": c} for c in DISTRACTORS[:2] + [TARGET] + DISTRACTORS[2:]])
    target = results[2].id
    stored = eclient.get(target, include=["record", "vector"])
    assert stored.vector is not None and len(stored.vector) == DIM

    found = eclient.search(PARAPHRASE, k=3)
    assert found.mode == "hybrid"
    assert found.hits[0].record.id == target
    # By meaning alone too: the vector channel ranks it first.
    assert eclient.search(PARAPHRASE, k=1, mode="vector").hits[0].record.id == target


async def test_the_async_client_adds_and_finds_text_alone(
    embedder_server: Server, ekey: str
) -> None:
    async with AsyncStrata(embedder_server.url, ekey) as c:
        written = await c.add([{"content": t} for t in [TARGET] + DISTRACTORS])
        found = await c.search(PARAPHRASE, k=1)
        assert found.hits[0].record.id == written[0].id


def test_langchain_store_without_client_embeddings(eclient: Strata) -> None:
    store = StrataVectorStore(client=eclient, user_tokens=["u:alice"])
    assert store.embeddings is None and store.collection == "text"
    ids = store.add_texts(
        [TARGET] + DISTRACTORS, metadatas=[{"n": i} for i in range(len(DISTRACTORS) + 1)]
    )
    # Stored as text by the client, embedded by the server.
    record = eclient.get(ids[0], include=["vector"], user_tokens=["u:alice"])
    assert record.vector is not None and len(record.vector) == DIM

    [(doc, score)] = store.similarity_search_with_score(PARAPHRASE, k=1)
    assert doc.id == ids[0] and doc.page_content == TARGET and doc.metadata == {"n": 0}
    assert 0.0 < score <= 1.0  # cosine: the query was embedded by the same model
    docs = store.similarity_search(PARAPHRASE, k=2, filter={"n": {"$gte": 1}})
    assert ids[0] not in [d.id for d in docs] and len(docs) == 2
    # Another principal's store sees none of Alice's documents.
    bob = StrataVectorStore(client=eclient, user_tokens=["u:bob"])
    assert bob.similarity_search(PARAPHRASE, k=3) == []
    # Maximal marginal relevance without a client embedding: relevance is the server's score.
    mmr = store.max_marginal_relevance_search(PARAPHRASE, k=2, fetch_k=5, lambda_mult=1.0)
    assert [d.id for d in mmr][:1] == [ids[0]] and len(mmr) == 2
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert len(retriever.invoke(PARAPHRASE)) == 2


async def test_langchain_store_without_client_embeddings_async(
    embedder_server: Server, ekey: str
) -> None:
    async with AsyncStrata(embedder_server.url, ekey) as ac:
        store = StrataVectorStore(async_client=ac)
        ids = await store.aadd_texts([TARGET] + DISTRACTORS)
        docs = await store.asimilarity_search(PARAPHRASE, k=1)
        assert [d.id for d in docs] == [ids[0]]
        mmr = await store.amax_marginal_relevance_search(PARAPHRASE, k=1, lambda_mult=1.0)
        assert [d.id for d in mmr] == [ids[0]]


def test_langchain_store_refuses_a_collection_the_server_does_not_embed(
    eclient: Strata,
) -> None:
    name = unique("plain")
    eclient.create_collection(name, DIM)
    store = StrataVectorStore(client=eclient, collection=name)
    with pytest.raises(ValueError, match="not embedded by the server"):
        store.add_texts(["x"])
    missing = StrataVectorStore(client=eclient, collection=unique("missing"))
    with pytest.raises(ValueError, match="does not exist"):
        missing.add_texts(["x"])
    assert missing.similarity_search("x") == []
    assert missing.max_marginal_relevance_search("x") == []
