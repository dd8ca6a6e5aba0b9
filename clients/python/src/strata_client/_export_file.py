"""Writing a tenant's export: whole or not at all.

An export written straight into its path truncated whatever was there before the request was
even answered, so a failed export (a wrong id, a lost connection) left an empty or half-written
file where a good one had been. Here a path is written as a temporary file beside it (same
directory, so the rename cannot cross file systems), synced, and renamed over the path only once
the export is complete: its last line is the end line. Anything else removes the temporary file
and leaves the path as it was. A path that is not a regular file (``/dev/stdout``, a pipe) is
written directly; a link is written through (the file it names is replaced).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Awaitable, Callable, Iterator, Tuple

from .errors import StrataError

Write = Callable[[bytes], Any]

#: The end line is short; this much of the stream's end always holds it whole.
_TAIL_BYTES = 64 * 1024


class _Tail:
    """Passes a stream through, keeping its end to check for the export's end line."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        self._write(chunk)
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:]

    def check(self) -> None:
        last = self._tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            ended = json.loads(last).get("type") == "end"
        except (ValueError, AttributeError):
            ended = False
        if not ended:
            raise StrataError(
                "the export stopped before its end line: it is incomplete",
                code="INCOMPLETE_EXPORT",
            )


def _temporary_beside(path: os.PathLike[str] | str) -> Tuple[str, str, IO[bytes]]:
    """The destination (links followed), and a new temporary file beside it, owner-only."""
    dest = os.path.realpath(os.fspath(path))
    directory, name = os.path.split(dest)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".partial")
    return dest, tmp, os.fdopen(fd, "wb")


def _commit(f: IO[bytes], tmp: str, dest: str) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    if os.path.exists(dest):
        shutil.copymode(dest, tmp)
    os.replace(tmp, dest)


def _is_special(path: os.PathLike[str] | str) -> bool:
    return os.path.exists(path) and not os.path.isfile(path)


@contextlib.contextmanager
def _into(target: Any) -> Iterator[_Tail]:
    """The function to stream an export into ``target``; on leaving without an error, checks
    the end line and (for a path) renames the written file over the path."""
    if not isinstance(target, (str, os.PathLike)) or _is_special(target):
        with contextlib.ExitStack() as stack:
            if isinstance(target, (str, os.PathLike)):
                target = stack.enter_context(open(target, "wb"))
            tail = _Tail(target.write)
            yield tail
            tail.check()
        return
    dest, tmp, f = _temporary_beside(target)
    try:
        tail = _Tail(f.write)
        yield tail
        tail.check()
        _commit(f, tmp, dest)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def export_to(target: Any, download: Callable[[Write], int]) -> int:
    """Runs ``download`` (which streams the export into the function it is given) into
    ``target``, a path or a binary file; the bytes written. Raises if the export is
    incomplete (a path is then left as it was)."""
    with _into(target) as write:
        return download(write)


async def aexport_to(target: Any, download: Callable[[Write], Awaitable[int]]) -> int:
    """:func:`export_to` with an asynchronous ``download``."""
    with _into(target) as write:
        return await download(write)
