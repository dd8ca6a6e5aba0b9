"""Errors: each refusal is an exception of its family, carrying the stable code, the HTTP
status, the message and the response's request id."""

from __future__ import annotations

import pytest

from strata_client import (
    AsyncStrata,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    Strata,
    StrataAdmin,
    StrataConnectionError,
    StrataError,
    TenantMismatchError,
)

from .conftest import NewTenant, Server, TenantKey


def test_foreign_ids_are_not_found(server: Server, client: Strata, new_tenant: NewTenant) -> None:
    mine = client.add("tenant A's memory", id="shared-name")
    other = new_tenant()
    with Strata(server.url, other.key) as b:
        with pytest.raises(NotFoundError) as e:
            b.get(mine.id)
        err = e.value
        assert (err.code, err.status, err.message) == ("NOT_FOUND", 404, "not found")
        assert err.request_id and len(err.request_id) >= 16
        assert err.request_id in str(err) and "NOT_FOUND" in str(err)
        # The same id in another tenant is another record: no conflict, no leak.
        assert b.add("tenant B's memory", id="shared-name").created
    assert client.get("shared-name").content == "tenant A's memory"


def test_bad_input_names_the_field(client: Strata) -> None:
    with pytest.raises(BadRequestError) as e:
        client.add("x", run_id="not a valid run!")
    assert (e.value.code, e.value.status) == ("BAD_REQUEST", 400)
    assert "run_id" in e.value.message
    # A domain that could not travel in its header is refused the same way by the client.
    with pytest.raises(BadRequestError) as e:
        client.add("x", memory_domain="not a valid domain!")
    assert (e.value.code, e.value.status) == ("BAD_REQUEST", None)
    assert "memory_domain" in e.value.message
    with pytest.raises(BadRequestError, match="filter"):
        client.count({"n": {"$regex": "a"}})
    with pytest.raises(BadRequestError, match="content"):
        client.add()


def test_unknown_keys_are_unauthorized(server: Server) -> None:
    with Strata(server.url, "sk_not_a_real_key") as c:
        with pytest.raises(AuthenticationError) as e:
            c.count()
    assert (e.value.code, e.value.status) == ("UNAUTHORIZED", 401)
    assert e.value.request_id


def test_missing_permissions_are_forbidden(server: Server, new_tenant: NewTenant) -> None:
    reader = new_tenant(permissions=["read"])
    with Strata(server.url, reader.key) as c:
        assert c.count() == 0
        with pytest.raises(PermissionDeniedError) as e:
            c.add("nope")
        assert (e.value.code, e.value.status) == ("FORBIDDEN", 403)
        with pytest.raises(PermissionDeniedError):
            c.history()
        with pytest.raises(PermissionDeniedError):
            c.create_collection("c", dim=2)


def test_operator_key_is_not_a_tenant_key(server: Server) -> None:
    with Strata(server.url, server.operator_key) as c:
        with pytest.raises(PermissionDeniedError) as e:
            c.count()
    assert e.value.code == "FORBIDDEN"


def test_naming_another_tenant_is_a_mismatch(server: Server, tenant: TenantKey) -> None:
    # The client never sends a tenant; a raw header naming another one is refused.
    import httpx

    with httpx.Client(headers={"x-tenant-id": "someone-else"}) as http:
        with Strata(server.url, tenant.key, http_client=http) as c:
            with pytest.raises(TenantMismatchError) as e:
                c.count()
    assert (e.value.code, e.value.status) == ("TENANT_MISMATCH", 403)


def test_quota_and_conflict(admin: StrataAdmin, client: Strata, tenant: TenantKey) -> None:
    client.create_collection("q", dim=2)
    with pytest.raises(ConflictError) as e:
        client.create_collection("q", dim=2)
    assert (e.value.code, e.value.status) == ("CONFLICT", 409)
    admin.update_tenant(tenant.id, limits={"max_vectors": 1})
    client.add("one", vector=[1, 0], collection="q")
    with pytest.raises(QuotaExceededError) as q:
        client.add("two", vector=[0, 1], collection="q")
    assert q.value.code == "QUOTA_EXCEEDED"
    assert q.value.message == "quota exceeded: max_vectors: 1 used of 1"
    assert isinstance(q.value, PermissionDeniedError)


def test_a_float_json_cannot_carry_is_refused_as_bad_input(client: Strata) -> None:
    client.create_collection("nan3", dim=3)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(BadRequestError, match="refused by the client") as e:
            client.add(vector=[0.5, bad, 0.5], collection="nan3")
        assert e.value.status is None and e.value.code == "BAD_REQUEST"  # nothing was sent
        assert isinstance(e.value, StrataError)
        with pytest.raises(BadRequestError):
            client.search(vector=[bad, 0.5, 0.5], collection="nan3")
    # Half a surrogate pair is no character: refused the same way, not a UnicodeEncodeError.
    with pytest.raises(BadRequestError, match="refused by the client") as e:
        client.add("bad \ud800 text")
    assert e.value.status is None
    # Everything else still travels as before, non-ASCII text included.
    assert client.add("café ☕", vector=[0.5, 0.25, 0.5], collection="nan3", id="ok").created
    assert client.get("ok").content == "café ☕"


def test_unreachable_server_is_a_connection_error(tenant: TenantKey) -> None:
    # Port 9 (discard) is closed on test machines; nothing was sent, so it was retried.
    with Strata("http://127.0.0.1:9", tenant.key, retries=1) as c:
        with pytest.raises(StrataConnectionError) as e:
            c.count()
    assert e.value.status is None and e.value.code == "CONNECTION_ERROR"
    assert isinstance(e.value, StrataError)
    # It says which server it could not reach.
    assert "http://127.0.0.1:9/v1/memories/count" in str(e.value)


def test_a_url_without_a_scheme_is_a_setup_mistake_not_a_server_down() -> None:
    for make in (Strata, AsyncStrata):
        with pytest.raises(ValueError, match="needs a scheme"):
            make("127.0.0.1:7700", "sk_x")


def test_missing_configuration_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATA_URL", raising=False)
    monkeypatch.delenv("STRATA_SERVER", raising=False)
    with pytest.raises(ValueError, match="STRATA_URL or STRATA_SERVER"):
        Strata(api_key="sk_x")


def test_the_clis_variables_serve_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from strata_client.admin import StrataAdmin

    monkeypatch.delenv("STRATA_URL", raising=False)
    monkeypatch.delenv("STRATA_OPERATOR_KEY", raising=False)
    monkeypatch.setenv("STRATA_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("STRATA_KEY", "sk_operator")
    with Strata(api_key="sk_x") as c:
        assert c.url.startswith("http://127.0.0.1:9")
    with StrataAdmin() as admin:
        assert admin._transport.url.startswith("http://127.0.0.1:9")
    # The client's own names win over the CLI's.
    monkeypatch.setenv("STRATA_URL", "http://127.0.0.1:8")
    with Strata(api_key="sk_x") as c:
        assert c.url.startswith("http://127.0.0.1:8")


@pytest.mark.parametrize("code", ["METADATA_DAMAGED", "INTEGRITY_POLICY_DAMAGED"])
def test_damaged_state_codes_are_conflicts(code: str) -> None:
    import httpx

    from strata_client.errors import error_from_response

    body = {"error": {"code": code, "message": "replace it with null"}}
    e = error_from_response(httpx.Response(409, json=body))
    assert isinstance(e, ConflictError)
    assert (e.code, e.status, e.message) == (code, 409, "replace it with null")


def test_dot_segments_and_empty_ids_are_refused_before_sending() -> None:
    # Port 9 has no server: a refusal here never reached the network.
    admin = StrataAdmin("http://127.0.0.1:9", "sk_unused")
    client = Strata("http://127.0.0.1:9", "sk_unused")
    for bad in ["..", ".", ""]:
        with pytest.raises(BadRequestError, match="cannot name anything in a URL path") as e:
            admin.tenant_residency(bad)
        assert e.value.status is None
        with pytest.raises(BadRequestError, match="cannot name anything"):
            client.get(bad)
    admin.close()
    client.close()
