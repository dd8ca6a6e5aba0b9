"""The wire: a request described as data (:class:`Call`), and the sync and async loops that send
one with authentication, error mapping and retries.

Clients build a ``Call`` for each operation and hand it to their transport, so the sync and
async clients share everything but the sending.
"""

from __future__ import annotations

import asyncio
import json as _json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generic,
    Iterator,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import httpx

from ._version import __version__
from .errors import BadRequestError, StrataConnectionError, StrataError, error_from_response
from .retry import RetryPolicy

T = TypeVar("T")

logger = logging.getLogger("strata_client")

USER_AGENT = f"strata-client-python/{__version__}"
DEFAULT_TIMEOUT = 30.0
#: Seconds to wait for a write the server embeds (records with ``content`` and no ``vector``).
#: The server embeds a long paragraph in tens of milliseconds of one core, so a full batch of
#: 1,000 takes half a minute or more on a small machine; a shorter wait would report a write
#: that succeeded as failed.
DEFAULT_WRITE_TIMEOUT = 180.0

Params = Sequence[Tuple[str, str]]
Body = Union[bytes, Iterator[bytes], AsyncIterator[bytes]]


class _NoJson:
    """Marks a call without a JSON body (``None`` is a valid JSON body)."""


NO_JSON: Any = _NoJson()


def _json_body(value: Any) -> bytes:
    """``value`` as the JSON body the server reads; a float JSON cannot carry (NaN or an
    infinity, in a vector say) or a value JSON has no form for (a ``datetime`` in metadata)
    is refused here as a :class:`BadRequestError`, as the server would refuse it, rather than
    escaping as the encoder's ``ValueError`` or ``TypeError``."""
    try:
        text = _json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except TypeError as e:
        raise BadRequestError(
            f"body: {e} (convert it to a string or a number first); refused by the client "
            "before sending",
            code="BAD_REQUEST",
        ) from None
    except ValueError as e:  # UnicodeEncodeError (half a surrogate pair) is one too
        why = " (NaN and infinities have no JSON form)" if "float" in str(e) else ""
        raise BadRequestError(
            f"body: {e}{why}; refused by the client before sending",
            code="BAD_REQUEST",
        ) from None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = NO_JSON
    #: A raw body (imports); an iterator cannot be replayed, so such calls are not retried.
    content: Optional[Body] = None
    #: Safe to repeat after a lost answer; see :mod:`strata_client.retry`.
    idempotent: bool = True
    #: The server may embed texts for it: it waits ``write_timeout``, not ``timeout``.
    embeds: bool = False
    #: Nothing to send (an empty batch): answered ``parse(None)`` without a request.
    skip: bool = False
    #: The server may work for minutes before it answers (a hard delete rewrites the data
    #: file, a cancel waits for the move to stop): no read timeout. Such calls are sent with
    #: ``idempotent=False`` too: a repeat after a lost answer would report the work done by
    #: the first attempt as an error.
    slow: bool = False
    #: A delete of one thing: when a retry after a lost answer finds it gone (``404``), the
    #: lost attempt deleted it, and the call is answered as done (``parse(None)``).
    done_when_gone: bool = False

    @property
    def replayable(self) -> bool:
        return self.content is None or isinstance(self.content, bytes)


def from_env(value: Optional[str], name: str, *also: str) -> str:
    """``value``, or, when it is ``None``, the first of the environment variables ``name``
    and then ``also`` that is set (the ``strata`` CLI's names come second, so one set of
    variables serves both)."""
    found = value
    for var in (name, *also):
        if found is None:
            found = os.environ.get(var)
    if not found:
        names = " or ".join((name, *also))
        raise ValueError(f"no {names}: pass the value, or set the environment variable")
    return found


def no_answer(_: Any) -> None:
    """``parse`` for calls whose answer carries nothing the caller needs."""
    return None


def _connection_error(e: httpx.HTTPError) -> Tuple[StrataConnectionError, bool]:
    """The error for a failed exchange, and whether the request may have reached the server."""
    sent = not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    try:
        # Which server: a wrong URL or port is the usual cause, and the message should say it.
        to = f" ({e.request.method} {e.request.url})"
    except RuntimeError:  # an error raised before its request was built
        to = ""
    return (
        StrataConnectionError(f"{type(e).__name__}: {e}{to}", code="CONNECTION_ERROR"),
        sent,
    )


def _gone_after_loss(call: Call[Any], response: httpx.Response, lost: bool) -> bool:
    """Whether ``response`` is a ``404`` to a retried delete whose earlier attempt may have
    reached the server: that attempt deleted the thing, and only its answer was lost."""
    return call.done_when_gone and lost and response.status_code == 404


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as e:
        raise StrataError(
            f"the server answered {response.status_code} with a body that is not JSON",
            code="UNEXPECTED_RESPONSE",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=response.text,
        ) from e


class _Base:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: Optional[float],
        retries: Union[int, RetryPolicy],
        write_timeout: Optional[float] = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        if not url:
            raise ValueError("url is required, e.g. http://127.0.0.1:7700")
        # Without a scheme every call would fail as a connection error, which reads as a
        # server that is down rather than a mistake in the setup.
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} needs a scheme: http:// or https://, e.g. http://{url}")
        if not token:
            raise ValueError("an API key is required")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.write_timeout = write_timeout
        self.retry = RetryPolicy.of(retries)
        self._auth = {"authorization": f"Bearer {token}", "user-agent": USER_AGENT}

    def _request_args(self, call: Call[Any]) -> Dict[str, Any]:
        headers = dict(self._auth)
        headers.update(call.headers)
        args: Dict[str, Any] = {
            "method": call.method,
            "url": self.url + call.path,
            "params": list(call.params) or None,
            "headers": headers,
            "timeout": self._timeout(call),
        }
        if not isinstance(call.json, _NoJson):
            args["content"] = _json_body(call.json)
            headers["content-type"] = "application/json"
        if call.content is not None:
            args["content"] = call.content
        return args

    def _timeout(self, call: Call[Any]) -> Any:
        if call.slow:
            # Connecting, sending and waiting for a pool slot keep their bound.
            return httpx.Timeout(self.timeout, read=None)
        return self.write_timeout if call.embeds else self.timeout

    def _next_delay(
        self, call: Call[Any], error: StrataError, attempt: int, sent: bool = True
    ) -> Optional[float]:
        if not call.replayable:
            return None
        delay = self.retry.delay(error, attempt, idempotent=call.idempotent, sent=sent)
        if delay is not None:
            logger.info(
                "retrying %s %s in %.3fs after %s (retry %d of %d)",
                call.method,
                call.path,
                delay,
                error.code,
                attempt + 1,
                self.retry.max_retries,
            )
        return delay


class SyncTransport(_Base):
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        retries: Union[int, RetryPolicy] = 3,
        http_client: Optional[httpx.Client] = None,
        write_timeout: Optional[float] = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        super().__init__(
            url, token, timeout=timeout, retries=retries, write_timeout=write_timeout
        )
        self._owns_http = http_client is None
        self.http = http_client if http_client is not None else httpx.Client()

    def run(self, call: Call[T]) -> T:
        if call.skip:
            return call.parse(None)
        attempt = 0
        lost = False  # an earlier attempt may have reached the server, its answer lost
        while True:
            error: StrataError
            try:
                response = self.http.request(**self._request_args(call))
            except httpx.HTTPError as e:
                error, sent = _connection_error(e)
                lost = lost or sent
                delay = self._next_delay(call, error, attempt, sent)
                if delay is None:
                    raise error from e
            else:
                if response.is_success or _gone_after_loss(call, response, lost):
                    return call.parse(_decode(response) if response.is_success else None)
                error = error_from_response(response)
                delay = self._next_delay(call, error, attempt)
                if delay is None:
                    raise error
            time.sleep(delay)
            attempt += 1

    def download(self, call: Call[Any], write: Callable[[bytes], Any]) -> int:
        """Streams a response body into ``write``; returns the bytes written. Not retried:
        part of the body may already be written."""
        args = self._request_args(call)
        try:
            with self.http.stream(**args) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                total = 0
                for chunk in response.iter_bytes():
                    write(chunk)
                    total += len(chunk)
                return total
        except httpx.HTTPError as e:
            raise _connection_error(e)[0] from e

    def close(self) -> None:
        if self._owns_http:
            self.http.close()


class AsyncTransport(_Base):
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        retries: Union[int, RetryPolicy] = 3,
        http_client: Optional[httpx.AsyncClient] = None,
        write_timeout: Optional[float] = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        super().__init__(
            url, token, timeout=timeout, retries=retries, write_timeout=write_timeout
        )
        self._owns_http = http_client is None
        self.http = http_client if http_client is not None else httpx.AsyncClient()

    async def run(self, call: Call[T]) -> T:
        if call.skip:
            return call.parse(None)
        attempt = 0
        lost = False  # an earlier attempt may have reached the server, its answer lost
        while True:
            error: StrataError
            try:
                response = await self.http.request(**self._request_args(call))
            except httpx.HTTPError as e:
                error, sent = _connection_error(e)
                lost = lost or sent
                delay = self._next_delay(call, error, attempt, sent)
                if delay is None:
                    raise error from e
            else:
                if response.is_success or _gone_after_loss(call, response, lost):
                    return call.parse(_decode(response) if response.is_success else None)
                error = error_from_response(response)
                delay = self._next_delay(call, error, attempt)
                if delay is None:
                    raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def download(self, call: Call[Any], write: Callable[[bytes], Any]) -> int:
        args = self._request_args(call)
        try:
            async with self.http.stream(**args) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response)
                total = 0
                async for chunk in response.aiter_bytes():
                    write(chunk)
                    total += len(chunk)
                return total
        except httpx.HTTPError as e:
            raise _connection_error(e)[0] from e

    async def close(self) -> None:
        if self._owns_http:
            await self.http.aclose()
