"""Test harness: runs the real ``strata`` binary once per session on port 0 with a temporary
data directory and a fixed operator key, reads the address it prints, and stops it at the end.

The binary is ``$STRATA_BIN`` (the Rust test that runs this suite sets it), or else
``target/debug/strata`` at the repository root. A missing binary fails the run: a suite that
silently skipped itself would pass without testing anything.

Most tests run a server without the built-in embedder (text mode results are pinned). The
``embedder_server`` fixture opts in: a second server that embeds with the model in
``$STRATA_MODEL_DIR`` (an absolute path; the Rust test sets it), or else the repository's
``models/all-MiniLM-L6-v2``; a missing model fails those tests with how to fetch it.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, AsyncIterator, Callable, Iterator, Optional, Sequence

import pytest

from strata_client import AsyncStrata, Strata, StrataAdmin

REPO_ROOT = Path(__file__).resolve().parents[3]
OPERATOR_KEY = "python-test-operator-key-0123456789abcdef"
STARTUP_SECS = 30


@dataclass
class Server:
    url: str
    operator_key: str
    log: Path


@dataclass
class TenantKey:
    """A tenant made for one test, and the secret of a key for it."""

    id: str
    key: str


def _binary() -> Path:
    configured = os.environ.get("STRATA_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "strata"
    if not path.is_file():
        pytest.fail(
            f"no strata binary at {path}: run `cargo build -p strata`, or set STRATA_BIN",
            pytrace=False,
        )
    return path


def _read_address(stdout: IO[bytes]) -> Optional[str]:
    """The URL from the server's ``listening on URL`` line. A thread reads stdout, so a server
    that hangs cannot hang the suite, and keeps draining it so the server never blocks on a
    full pipe."""
    lines: queue.Queue[Optional[str]] = queue.Queue()

    def pump() -> None:
        for raw in stdout:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=STARTUP_SECS)
        except queue.Empty:
            return None
        if line is None:
            return None
        if line.startswith("listening on "):
            return line[len("listening on ") :].strip()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("strata"))


@pytest.fixture(scope="session")
def embedder_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server running the built-in embedder from the model directory, never fetching."""
    configured = os.environ.get("STRATA_MODEL_DIR")
    model = Path(configured) if configured else REPO_ROOT / "models" / "all-MiniLM-L6-v2"
    if not (model / "model.safetensors").is_file():
        pytest.fail(
            f"no model in {model}: run scripts/fetch-model.sh, or set STRATA_MODEL_DIR",
            pytrace=False,
        )
    env = {
        "STRATA__EMBEDDER__ENABLED": "true",
        "STRATA__EMBEDDER__AUTO_FETCH": "false",
        "STRATA__EMBEDDER__MODEL_DIR": str(model.resolve()),
    }
    yield from start_server(tmp_path_factory.mktemp("strata-embedder"), env)


def start_server(root: Path, extra_env: Optional[dict] = None) -> Iterator[Server]:
    """Runs the binary on a data directory under ``root`` until the generator is closed;
    ``extra_env`` overrides the environment (e.g. to turn the embedder on)."""
    log_path = root / "server.log"
    env = dict(os.environ)
    env.pop("STRATA_CONFIG", None)
    env.update(
        {
            "STRATA__SERVER__LISTEN": "127.0.0.1:0",
            "STRATA__SERVER__DATA_DIR": str(root / "data"),
            "STRATA__SERVER__BACKUP_DIR": str(root / "backups"),
            "STRATA_OPERATOR_KEY": OPERATOR_KEY,
            # No built-in embedder: the suite pins text-mode results, and must not fetch the
            # model into its working directory.
            "STRATA__EMBEDDER__ENABLED": "false",
            "RUST_LOG": "warn",
        }
    )
    env.update(extra_env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(_binary()), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    assert process.stdout is not None
    url = _read_address(process.stdout)
    if url is None:
        process.kill()
        process.wait()
        pytest.fail(
            f"the server did not print its address; its log:\n{log_path.read_text()}",
            pytrace=False,
        )
    try:
        yield Server(url=url, operator_key=OPERATOR_KEY, log=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[StrataAdmin]:
    with StrataAdmin(server.url, server.operator_key) as a:
        yield a


_counter = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses: tenants and collections live for the whole session."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


NewTenant = Callable[..., TenantKey]


@pytest.fixture
def new_tenant(admin: StrataAdmin) -> NewTenant:
    """Makes a tenant and one key for it that speaks for the whole tenant (``admin`` and
    ``all_principals`` included: deleting a collection and the audit log need both) unless
    other permissions are given; further keyword arguments go to ``create_key``."""

    def make(
        permissions: Sequence[str] = ("read", "write", "admin", "all_principals"),
        **key_args: object
    ) -> TenantKey:
        tenant = unique("t")
        admin.create_tenant(tenant)
        key = admin.create_key(tenant, permissions=list(permissions), **key_args)  # type: ignore[arg-type]
        return TenantKey(tenant, key.key)

    return make


@pytest.fixture
def tenant(new_tenant: NewTenant) -> TenantKey:
    return new_tenant()


@pytest.fixture
def client(server: Server, tenant: TenantKey) -> Iterator[Strata]:
    with Strata(server.url, tenant.key) as c:
        yield c


@pytest.fixture
async def aclient(server: Server, tenant: TenantKey) -> AsyncIterator[AsyncStrata]:
    async with AsyncStrata(server.url, tenant.key) as c:
        yield c
