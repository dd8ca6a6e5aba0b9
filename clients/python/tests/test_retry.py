"""Retries: refusals the server marks as retryable (429, 503 OVERLOADED) are retried after the
time it asks for; other errors, and lost answers to non-idempotent writes, are not."""

from __future__ import annotations

import logging
import time
from typing import Callable, List

import httpx
import pytest

from strata_client import (
    AsyncStrata,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Strata,
    StrataAdmin,
    StrataConnectionError,
    TenantCriticalError,
    TenantStressedError,
)
from strata_client._scope import Scope

from .conftest import Server, TenantKey


@pytest.fixture
def limited(admin: StrataAdmin, tenant: TenantKey) -> TenantKey:
    """The tenant, allowed 5 requests a second with no burst beyond one."""
    t = admin.update_tenant(tenant.id, limits={"max_qps": 5, "burst": 1})
    assert t.limits.max_qps == 5 and t.limits.burst == 1
    return tenant


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "strata_client"]


def test_rate_limited_requests_are_retried(
    server: Server, limited: TenantKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="strata_client")
    with Strata(server.url, limited.key) as c:
        started = time.monotonic()
        # Writes without ids too: a 429 is refused before any work, so repeating is safe.
        for i in range(4):
            c.add(f"memory {i}")
        elapsed = time.monotonic() - started
        assert c.count() == 4
    logged = retries_logged(caplog)
    assert logged and all("RATE_LIMITED" in m for m in logged), logged
    # Three refills of one token at 5/s: at least ~0.6 s, honouring the server's wait.
    assert elapsed >= 0.5


def test_without_retries_the_error_says_when_to_retry(server: Server, limited: TenantKey) -> None:
    with Strata(server.url, limited.key, retries=0) as c:
        c.count()
        with pytest.raises(RateLimitError) as e:
            c.count()
    err = e.value
    assert (err.code, err.status) == ("RATE_LIMITED", 429)
    assert err.retry_after is not None and 0 < err.retry_after <= 0.25
    assert err.request_id


def test_waits_longer_than_allowed_are_not_taken(server: Server, limited: TenantKey) -> None:
    policy = RetryPolicy(max_retries=5, max_wait=0.001)
    with Strata(server.url, limited.key, retries=policy) as c:
        c.count()
        started = time.monotonic()
        with pytest.raises(RateLimitError):
            c.count()
        assert time.monotonic() - started < 0.15


async def test_async_client_retries_too(
    server: Server, limited: TenantKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="strata_client")
    async with AsyncStrata(server.url, limited.key) as c:
        for i in range(3):
            await c.add(f"async memory {i}")
        assert await c.count() == 3
    assert any("RATE_LIMITED" in m for m in retries_logged(caplog))


# The policy itself, without a server.


def _rate_limited(after: float) -> RateLimitError:
    return RateLimitError("slow down", code="RATE_LIMITED", status=429, retry_after=after)


def test_policy_honours_the_servers_wait() -> None:
    p = RetryPolicy(max_retries=2)
    delay = p.delay(_rate_limited(0.2), 0, idempotent=False)
    assert delay is not None and 0.2 < delay <= 0.23
    assert p.delay(_rate_limited(0.2), 2, idempotent=False) is None
    overloaded = OverloadedError("busy", code="OVERLOADED", status=503, retry_after=1.0)
    assert p.delay(overloaded, 0, idempotent=False) is not None


def test_policy_retries_lost_answers_only_when_safe() -> None:
    p = RetryPolicy()
    lost = StrataConnectionError("reset", code="CONNECTION_ERROR")
    assert p.delay(lost, 0, idempotent=True) is not None
    assert p.delay(lost, 0, idempotent=False) is None
    assert p.delay(lost, 0, idempotent=False, sent=False) is not None
    bad = BadRequestError("no", code="BAD_REQUEST", status=400)
    assert p.delay(bad, 0, idempotent=True) is None
    assert RetryPolicy(max_retries=0).delay(_rate_limited(0.1), 0, idempotent=True) is None


def test_policy_retries_a_gateways_transient_answers_only_when_safe() -> None:
    p = RetryPolicy()
    for status in (502, 503, 504):
        gateway = ServerError("bad gateway", code="UNEXPECTED_RESPONSE", status=status)
        assert p.delay(gateway, 0, idempotent=True) is not None, status
        assert p.delay(gateway, 0, idempotent=False) is None, status
    waited = ServerError("restarting", code="UNAVAILABLE", status=503, retry_after=0.5)
    delay = p.delay(waited, 0, idempotent=True)
    assert delay is not None and delay >= 0.5
    internal = ServerError("bug", code="INTERNAL", status=500)
    assert p.delay(internal, 0, idempotent=True) is None
    # A tenant's own integrity state lasts until it recovers: not repeated as it was.
    stressed = TenantStressedError("shed", code="TENANT_STRESSED", status=503, retry_after=1.0)
    critical = TenantCriticalError("refused", code="TENANT_CRITICAL", status=503)
    assert p.delay(stressed, 0, idempotent=True) is None
    assert p.delay(critical, 0, idempotent=True) is None


def test_a_write_without_ids_is_answered_once_when_repeated(client: Strata) -> None:
    # What a retry after a lost answer sends: the very same call, Idempotency-Key included.
    call = client._add(
        "written once however often it is sent",
        Scope.of(None, None, None, None, None),
        vector=None,
        metadata=None,
        id=None,
        collection=None,
        kind=None,
        expires_at=None,
        confidence=None,
    )
    assert call.idempotent and "Idempotency-Key" in call.headers
    first = client._transport.run(call)
    again = client._transport.run(call)
    assert first.id == again.id and first.created
    assert client.count() == 1
    # A new call is a new write, under a new key.
    client.add("written once however often it is sent", run_id="another-run")
    assert client.count() == 2


def test_writes_the_server_embeds_wait_longer_than_other_calls() -> None:
    # No request is sent: only the timeout each call would be sent with is looked at.
    c = Strata("http://127.0.0.1:9", "sk_unused", timeout=5, write_timeout=50)
    scope = Scope.of(None, None, None, None, None)

    def timeout_of(content: object, vector: object = None) -> object:
        call = c._add(
            content,  # type: ignore[arg-type]
            scope,
            vector=vector,  # type: ignore[arg-type]
            metadata=None,
            id=None,
            collection=None,
            kind=None,
            expires_at=None,
            confidence=None,
        )
        return c._transport._request_args(call)["timeout"]

    assert timeout_of("embedded by the server") == 50
    assert timeout_of("brings its own vector", vector=[0.5, 0.5]) == 5
    assert timeout_of([{"content": "a"}, {"content": "b", "vector": [0.5, 0.5]}]) == 50
    assert timeout_of([{"content": "b", "vector": [0.5, 0.5]}]) == 5
    # By default a batch of 1,000 long texts (half a minute or more to embed) fits.
    d = Strata("http://127.0.0.1:9", "sk_unused")
    assert d._transport.timeout == 30 and d._transport.write_timeout == 180
    c.close()
    d.close()


def test_slow_operator_calls_wait_without_a_read_timeout_and_are_not_repeated() -> None:
    # No request is sent: only how each call would be sent is looked at.
    admin = StrataAdmin("http://127.0.0.1:9", "sk_unused", timeout=5)
    client = Strata("http://127.0.0.1:9", "sk_unused", timeout=5)
    slow = [
        admin._delete_tenant("acme", True),
        admin._purge_deleted(None),
        admin._cancel_migration("acme"),
        admin._import("acme", b"{}"),
        client._delete_collection("notes"),
    ]
    for call in slow:
        timeout = admin._transport._request_args(call)["timeout"]
        assert isinstance(timeout, httpx.Timeout), call.path
        assert timeout.read is None and timeout.connect == 5, call.path
        assert not call.idempotent, call.path
    soft = admin._delete_tenant("acme", False)
    assert admin._transport._request_args(soft)["timeout"] == 5 and soft.idempotent
    for call in (client._revoke_share("s1"), client._decline_share("s1")):
        assert not call.idempotent, call.path
    admin.close()
    client.close()


def _lose_first_answer(then: int) -> Callable[[httpx.Request], httpx.Response]:
    """A transport whose first request reaches the server but loses its answer; the next
    ones are answered ``then``."""
    seen: List[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ReadError("connection reset", request=request)
        body = {"error": {"code": "NOT_FOUND", "message": "no such record"}}
        return httpx.Response(then, json=body if then == 404 else {})

    return handle


def test_a_retried_delete_that_finds_the_record_gone_is_done() -> None:
    fast = RetryPolicy(backoff=0.0)

    def losing_once(then: int) -> Strata:
        lost = httpx.Client(transport=httpx.MockTransport(_lose_first_answer(then)))
        return Strata("http://strata.test", "sk_unused", retries=fast, http_client=lost)

    assert losing_once(404).delete("m1") is None
    assert losing_once(404).unlink("m1", "m2") is None
    # Without a lost answer a 404 is the caller's to hear.
    gone = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404, json={})))
    plain = Strata("http://strata.test", "sk_unused", retries=fast, http_client=gone)
    with pytest.raises(NotFoundError):
        plain.delete("m1")
    # A move out of the request's domain is not repeated after a lost answer.
    with pytest.raises(StrataConnectionError):
        losing_once(200).update("m1", move_to_domain="archive")
