"""A Strata server started from a built binary for one benchmark run, and a tiny JSON client.

Shared by the scripts in this folder: each starts its own server on a free loopback port with a
throwaway data directory, so runs never touch a real deployment.
"""

import contextlib
import json
import os
import subprocess
import tempfile
import urllib.request

OPERATOR_KEY = "bench-operator-key-0123456789abcdef"


def call(url, key, path, body=None, method=None, timeout=300):
    """One request; returns the decoded JSON answer (raises on a non-2xx status)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data,
                                 method=method or ("POST" if data else "GET"))
    req.add_header("authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as res:
        return json.loads(res.read() or b"null")


@contextlib.contextmanager
def serve(binary, model_dir, embedder=True):
    """Runs `binary serve` until the block ends; yields its base URL."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update({
            "STRATA__SERVER__LISTEN": "127.0.0.1:0",
            "STRATA__SERVER__DATA_DIR": os.path.join(tmp, "data"),
            "STRATA_OPERATOR_KEY": OPERATOR_KEY,
            "STRATA__EMBEDDER__ENABLED": "true" if embedder else "false",
            "STRATA__EMBEDDER__AUTO_FETCH": "false",
            "STRATA__EMBEDDER__MODEL_DIR": model_dir,
            "RUST_LOG": "warn",
        })
        with open(os.path.join(tmp, "server.log"), "wb") as log:
            server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE,
                                      stderr=log, stdin=subprocess.DEVNULL)
            try:
                url = None
                for line in server.stdout:
                    line = line.decode().strip()
                    if line.startswith("listening on "):
                        url = line.removeprefix("listening on ")
                        break
                if url is None:
                    raise RuntimeError(f"the server exited before listening; see {log.name}")
                yield url
            finally:
                server.terminate()
                server.wait()
