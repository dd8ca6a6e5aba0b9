"""Exceptions raised by the client: one per family of the server's stable error codes.

Every error the server answers with becomes a :class:`StrataError` subclass carrying the
stable ``code`` (``NOT_FOUND``, ``RATE_LIMITED``, ...), the HTTP ``status``, the server's
``message`` and the ``request_id`` from the response's ``x-request-id`` header, which is also
the id of the audit row the server wrote about the request.

Branch on the class for a family and on ``code`` for the exact reason::

    try:
        client.get("pref-1")
    except NotFoundError:
        ...
    except PermissionDeniedError as e:
        if e.code == "TENANT_SUSPENDED":
            ...
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Type

import httpx

__all__ = [
    "StrataError",
    "StrataConnectionError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "TenantMismatchError",
    "ScopeForbiddenError",
    "TenantSuspendedError",
    "QuotaExceededError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "OverloadedError",
]


class StrataError(Exception):
    """Base class of every error this package raises."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The server's stable error code, e.g. ``NOT_FOUND``; ``CONNECTION_ERROR`` when no
        #: answer arrived, ``UNEXPECTED_RESPONSE`` when it was not Strata's error shape.
        self.code = code
        #: The HTTP status, or ``None`` when no response arrived.
        self.status = status
        #: The response's ``x-request-id``: quote it when asking an operator about a failure.
        self.request_id = request_id
        #: Seconds the server asked the client to wait before retrying (429 and 503 only).
        self.retry_after = retry_after
        #: The decoded response body, for anything the fields above do not cover.
        self.body = body
        #: For a call made of several requests (the LangChain store's ``add_texts``): the ids
        #: that requests before the failing one wrote, which stay written.
        self.written_ids: List[str] = []

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.code}{status}: {self.message}{request}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class StrataConnectionError(StrataError):
    """No answer: the server could not be reached, or the connection broke or timed out."""


class BadRequestError(StrataError):
    """400 ``BAD_REQUEST``: invalid input; the message names the field at fault."""


class AuthenticationError(StrataError):
    """401 ``UNAUTHORIZED``: the key is missing, unknown, expired or revoked."""


class PermissionDeniedError(StrataError):
    """403: the credential may not do this. ``code`` says why; subclasses name each reason."""


class TenantMismatchError(PermissionDeniedError):
    """403 ``TENANT_MISMATCH``: the request named a tenant other than its key's."""


class ScopeForbiddenError(PermissionDeniedError):
    """403 ``SCOPE_FORBIDDEN``: the scope asked for more than the key grants."""


class TenantSuspendedError(PermissionDeniedError):
    """403 ``TENANT_SUSPENDED``: the tenant is suspended by its operator; data is kept."""


class QuotaExceededError(PermissionDeniedError):
    """403 ``QUOTA_EXCEEDED``: the write would pass a quota; the message names it, its limit
    and, for a key that may read the tenant's usage, the usage before the write
    (``quota exceeded: max_vectors: 1000 used of 1000``)."""


class NotFoundError(StrataError):
    """404 ``NOT_FOUND``: missing, in another tenant, or invisible to this scope (all alike)."""


class ConflictError(StrataError):
    """409 ``CONFLICT``: the name or id is taken (possibly by a record outside the scope);
    or 409 ``METADATA_DAMAGED``: a merge patch of a tenant's damaged metadata (replace it
    with ``metadata=None`` first); or 409 ``INTEGRITY_POLICY_DAMAGED``: the tenant's stored
    integrity policy is unreadable (an operator replaces it with ``integrity_policy=None``)."""


class PayloadTooLargeError(StrataError):
    """413 ``PAYLOAD_TOO_LARGE``: the body is larger than the server accepts."""


class RateLimitError(StrataError):
    """429 ``RATE_LIMITED``, ``CONCURRENCY_LIMITED`` or ``ANSWER_MEMORY_LIMITED`` (the tenant's
    unread answers hold its budget of server memory); ``retry_after`` says when to retry."""


class ServerError(StrataError):
    """5xx: the server failed (``INTERNAL``) or cannot serve now (``UNAVAILABLE``)."""


class OverloadedError(ServerError):
    """503 ``OVERLOADED``: the shared worker queue is full; ``retry_after`` says when."""


class TenantStressedError(ServerError):
    """503 ``TENANT_STRESSED``: the tenant's own integrity state is ``stress`` and it sheds
    its most expensive searches (a large ``k`` or ``ef``); ask for less, or retry after
    ``retry_after``. Other tenants are not affected."""


class TenantCriticalError(ServerError):
    """503 ``TENANT_CRITICAL``: the tenant's own integrity state is ``critical`` and its writes
    are refused until it recovers (its reads still work). Not retried by the client: it lasts
    until an operator or the server's own repair brings the tenant back."""


_BY_CODE: Dict[str, Type[StrataError]] = {
    "BAD_REQUEST": BadRequestError,
    "UNAUTHORIZED": AuthenticationError,
    "FORBIDDEN": PermissionDeniedError,
    "TENANT_MISMATCH": TenantMismatchError,
    "SCOPE_FORBIDDEN": ScopeForbiddenError,
    "TENANT_SUSPENDED": TenantSuspendedError,
    "QUOTA_EXCEEDED": QuotaExceededError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "METADATA_DAMAGED": ConflictError,
    "INTEGRITY_POLICY_DAMAGED": ConflictError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "RATE_LIMITED": RateLimitError,
    "CONCURRENCY_LIMITED": RateLimitError,
    "ANSWER_MEMORY_LIMITED": RateLimitError,
    "OVERLOADED": OverloadedError,
    "TENANT_STRESSED": TenantStressedError,
    "TENANT_CRITICAL": TenantCriticalError,
}

# When the body is not Strata's (a proxy answered, say), the status alone picks the family.
_BY_STATUS: Dict[int, Type[StrataError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}


def _retry_after(response: httpx.Response, error: Dict[str, Any]) -> Optional[float]:
    """The wait the server asked for: ``retry_after_ms`` (exact) before ``Retry-After`` (s)."""
    ms = error.get("retry_after_ms")
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000.0
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            # An HTTP date is allowed by RFC 9110 but Strata never sends one.
            return None
    return None


def error_from_response(response: httpx.Response) -> StrataError:
    """Builds the exception for a non-2xx response."""
    request_id = response.headers.get("x-request-id")
    body: Any = None
    error: Dict[str, Any] = {}
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = response.text
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if code is not None and code in _BY_CODE:
        cls = _BY_CODE[code]
    elif response.status_code >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(response.status_code, StrataError)
    return cls(
        message or (response.reason_phrase or "unexpected response"),
        code=code or "UNEXPECTED_RESPONSE",
        status=response.status_code,
        request_id=request_id,
        retry_after=_retry_after(response, error),
        body=body,
    )
