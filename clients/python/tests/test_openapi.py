"""The server's OpenAPI document is valid and true.

Valid: it passes ``openapi-spec-validator``, every operation has a unique id, and every JSON
body and answer has a schema. True: schemathesis generates requests from the document (bodies,
query parameters, headers) and sends them to the real server; no answer may be a 5xx, and every
answer must have a documented status, content type and a body matching its schema. Tenant
routes run with a key that holds every permission, admin routes with the operator key, each
against its own server, so neither pass disturbs the rest of the suite.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from strata_client import StrataAdmin

from .conftest import Server, start_server, unique

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Examples per operation; `STRATA_API_EXAMPLES` raises it for a longer hunt.
EXAMPLES = int(os.environ.get("STRATA_API_EXAMPLES", "40"))
EXPLORE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def document(fresh_server: Server) -> Dict[str, Any]:
    answer = httpx.get(f"{fresh_server.url}/openapi.json")
    answer.raise_for_status()
    doc: Dict[str, Any] = answer.json()
    return doc


def test_the_document_is_valid_openapi(document: Dict[str, Any]) -> None:
    validate(document)
    ids = [
        op["operationId"]
        for item in document["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert len(ids) == len(set(ids)), sorted(ids)
    for path, item in document["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                assert body.get("schema"), f"{method} {path}: request body without schema"
            for status, answer in op["responses"].items():
                if path == "/openapi.json":
                    continue
                content = answer.get("content", {})
                assert content, f"{method} {path} {status}: no content"
                for media, c in content.items():
                    assert c.get("schema"), f"{method} {path} {status} {media}: no schema"
    codes = document["components"]["schemas"]["ErrorCode"]["enum"]
    assert {"BAD_REQUEST", "UNAUTHORIZED", "TENANT_MISMATCH", "RATE_LIMITED"} <= set(codes)
    search = document["paths"]["/v1/search"]["post"]
    params = {p["name"] for p in search["parameters"]}
    assert {"user_tokens", "memory_domain", "run_id", "memory_scope", "X-Strata-Domain"} <= params


@pytest.fixture(scope="module")
def tenant_key(fresh_server: Server) -> str:
    with StrataAdmin(fresh_server.url, fresh_server.operator_key) as admin:
        tenant = unique("api")
        admin.create_tenant(tenant)
        key = admin.create_key(
            tenant, permissions=["read", "write", "admin", "all_principals"]
        )
        return key.key


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """Imports are JSON lines; a generated string body is sent as it is."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def operations(document: Dict[str, Any], admin: bool) -> List[Any]:
    schema = schemathesis.openapi.from_dict(document)
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith("/v1/admin") == admin:
            out.append(op)
    return out


def explore(op: Any, base_url: str, key: str) -> None:
    """Sends `EXAMPLES` generated requests for one operation and checks every answer."""

    @EXPLORE
    @given(case=op.as_strategy())
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            checks=CHECKS,
        )

    check()


def test_tenant_routes_answer_as_documented(
    document: Dict[str, Any], fresh_server: Server, tenant_key: str
) -> None:
    ops = operations(document, admin=False)
    assert len(ops) >= 15
    for op in ops:
        explore(op, fresh_server.url, tenant_key)


def test_admin_routes_answer_as_documented(
    document: Dict[str, Any], fresh_server: Server
) -> None:
    ops = operations(document, admin=True)
    assert len(ops) >= 12
    for op in ops:
        explore(op, fresh_server.url, fresh_server.operator_key)
