"""When the client retries a request by itself, and how long it waits first.

Strata refuses work it will not do *before* doing any of it: a tenant over its rate
(``429 RATE_LIMITED``) or concurrency limit (``429 CONCURRENCY_LIMITED``), a tenant whose
unread answers hold its memory budget (``429 ANSWER_MEMORY_LIMITED``), or a full worker queue
(``503 OVERLOADED``), is answered before the request touches storage, with the wait in
``retry_after_ms`` and ``Retry-After``. Retrying those is therefore safe for every request,
writes included, and the client does so by default, waiting as long as the server asked.

A gateway's ``502``/``504`` and a ``503`` other than a tenant's own integrity state (the server
restarting behind a proxy, its storage failing) are retried like a broken connection: only for
idempotent requests, after a backoff (or the wait the answer asked for). ``TENANT_STRESSED`` and
``TENANT_CRITICAL`` are not: they last until the tenant recovers, and a stressed tenant is asked
to send less, not the same again.

A broken connection is different: the server may have applied a write whose answer was lost.
Those are retried only when the request was never sent (connect failures) or is idempotent:
reads, searches, listings, counts, patches, deletes, and writes. A write whose records all
carry client ids is an upsert, which lands on the same record however often it is repeated;
any other write is sent with an ``Idempotency-Key`` header, the same for every attempt, so the
server answers a retry with the first attempt's answer instead of storing the records twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Union

from .errors import (
    OverloadedError,
    RateLimitError,
    ServerError,
    StrataConnectionError,
    StrataError,
    TenantCriticalError,
    TenantStressedError,
)

#: Statuses of a server or gateway that may answer differently a moment later.
_TRANSIENT_STATUSES = (502, 503, 504)

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how patiently, to retry. ``RetryPolicy(max_retries=0)`` disables it.

    Pass one as ``retries=`` to a client, or an ``int`` for ``max_retries`` alone.
    """

    #: Retries after the first attempt.
    max_retries: int = 3
    #: The longest single wait, in seconds. When the server asks for more, the error is
    #: raised at once: waiting less than asked would only be refused again.
    max_wait: float = 30.0
    #: First wait of the exponential backoff used when the server gave no time (connection
    #: failures), in seconds; it doubles each attempt up to ``max_backoff``.
    backoff: float = 0.2
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.max_wait < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("waits must be 0 or more")

    @classmethod
    def of(cls, retries: Union[int, RetryPolicy]) -> RetryPolicy:
        return retries if isinstance(retries, RetryPolicy) else cls(max_retries=retries)

    def delay(
        self, error: StrataError, attempt: int, *, idempotent: bool, sent: bool = True
    ) -> Optional[float]:
        """Seconds to wait before retry number ``attempt + 1``, or ``None`` to give up.

        ``sent`` is ``False`` when the request never left the client (connect failures).
        """
        if attempt >= self.max_retries:
            return None
        if isinstance(error, (RateLimitError, OverloadedError)):
            wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
        elif isinstance(error, StrataConnectionError) and (idempotent or not sent):
            wait = self._backoff(attempt)
        elif idempotent and _transient(error):
            wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
        else:
            return None
        if wait > self.max_wait:
            return None
        # Never earlier than asked (a token bucket refills exactly on time), plus a little
        # jitter so clients refused together do not come back together.
        return wait + random.uniform(0.005, 0.005 + 0.1 * wait)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2**attempt)))


def _transient(error: StrataError) -> bool:
    """A server's or gateway's answer that may differ a moment later (see the module's
    documentation); never a tenant's own integrity state."""
    return (
        isinstance(error, ServerError)
        and not isinstance(error, (TenantStressedError, TenantCriticalError))
        and error.status in _TRANSIENT_STATUSES
    )
