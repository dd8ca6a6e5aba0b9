"""An export written to a path appears whole or not at all (``_export_file``), checked with
a stand-in for the download: no server needed."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from strata_client import StrataError
from strata_client._export_file import aexport_to, export_to

WHOLE = b'{"type":"tenant","id":"t"}\n{"type":"end","records":0}\n'


def stream(body: bytes, fail_after: int = -1) -> Callable[[Callable[[bytes], Any]], int]:
    """A download of ``body`` in small chunks, raising after ``fail_after`` of them."""

    def download(write: Callable[[bytes], Any]) -> int:
        for i in range(0, len(body), 7):
            if i // 7 == fail_after:
                raise ConnectionError("connection lost")
            write(body[i : i + 7])
        return len(body)

    return download


def test_a_whole_export_replaces_the_file_keeping_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"older\n")
    os.chmod(path, 0o640)
    assert export_to(path, stream(WHOLE)) == len(WHOLE)
    assert path.read_bytes() == WHOLE
    assert (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["t.ndjson"]


@pytest.mark.parametrize(
    "download",
    [stream(WHOLE, fail_after=3), stream(WHOLE[:-20]), stream(b"")],
    ids=["lost connection", "no end line", "empty"],
)
def test_an_incomplete_export_leaves_the_file_as_it_was(
    tmp_path: Path, download: Callable[[Callable[[bytes], Any]], int]
) -> None:
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"precious\n")
    with pytest.raises((StrataError, ConnectionError)) as raised:
        export_to(path, download)
    if isinstance(raised.value, StrataError):
        assert raised.value.code == "INCOMPLETE_EXPORT"
    assert path.read_bytes() == b"precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.ndjson"]


def test_a_link_is_written_through_and_a_file_object_directly(tmp_path: Path) -> None:
    real = tmp_path / "real.ndjson"
    real.write_bytes(b"older\n")
    link = tmp_path / "link.ndjson"
    link.symlink_to(real)
    export_to(link, stream(WHOLE))
    assert link.is_symlink() and real.read_bytes() == WHOLE
    buffer = io.BytesIO()
    assert export_to(buffer, stream(WHOLE)) == len(WHOLE)
    assert buffer.getvalue() == WHOLE
    with pytest.raises(StrataError):
        export_to(io.BytesIO(), stream(WHOLE[:-20]))


async def test_the_async_export_keeps_the_file_when_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"precious\n")

    async def cut_short(write: Callable[[bytes], Any]) -> int:
        write(WHOLE[:-20])
        return len(WHOLE) - 20

    async def whole(write: Callable[[bytes], Any]) -> int:
        write(WHOLE)
        return len(WHOLE)

    with pytest.raises(StrataError):
        await aexport_to(path, cut_short)
    assert path.read_bytes() == b"precious\n"
    await aexport_to(path, whole)
    assert path.read_bytes() == WHOLE
    assert [p.name for p in tmp_path.iterdir()] == ["t.ndjson"]
