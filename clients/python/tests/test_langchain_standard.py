"""LangChain's own standard suite for vector stores, run against the real server.

Every standard test runs (sync and async, ``get_by_ids`` included); none is skipped. Each test
gets an empty store: a fresh collection, deleted afterwards with everything in it.
"""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from strata_client import AsyncStrata, Strata
from strata_client.langchain import StrataVectorStore

from .conftest import Server, TenantKey, unique


class TestStrataVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    async def vectorstore(
        self, server: Server, tenant: TenantKey
    ) -> AsyncIterator[StrataVectorStore]:
        collection = unique("lc")
        with Strata(server.url, tenant.key) as client:
            async with AsyncStrata(server.url, tenant.key) as async_client:
                store = StrataVectorStore(
                    client=client,
                    async_client=async_client,
                    embedding=self.get_embeddings(),
                    collection=collection,
                )
                try:
                    yield store
                finally:
                    if collection in [c.name for c in client.list_collections()]:
                        client.delete_collection(collection)


class TestStrataVectorStoreSyncClientOnly(VectorStoreIntegrationTests):
    """The same suite with only a sync client: the async methods then run the sync ones in a
    thread, LangChain's default."""

    @pytest.fixture
    def vectorstore(self, server: Server, tenant: TenantKey) -> Iterator[StrataVectorStore]:
        with Strata(server.url, tenant.key) as client:
            yield StrataVectorStore(
                client=client, embedding=self.get_embeddings(), collection=unique("lc")
            )
