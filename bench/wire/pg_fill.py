"""Writes PostgreSQL COPY text for the side-by-side run on stdout.

`pg_fill.py memories TENANTS RECORDS PREFIX`: rows `tenant, id, content, embedding` with the
records `strata bench search --tenants TENANTS --records RECORDS` writes into Strata
(`PREFIX-000` …, or `PREFIX` alone for one tenant).
`pg_fill.py queries N`: rows `qid, v` with the N query vectors the load generators send.
"""

from __future__ import annotations

import sys

import numpy as np

from vectors import literal, vectors


def tenant_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n <= 1 else [f"{prefix}-{i:03}" for i in range(n)]


def main() -> None:
    out = sys.stdout
    if sys.argv[1] == "memories":
        tenants, records, prefix = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        vs = vectors(np.arange(records))
        lits = [literal(v) for v in vs]
        for t in tenant_names(prefix, tenants):
            for i, lit in enumerate(lits):
                out.write(f"{t}\tm{i}\t{t} memory {i}\t{lit}\n")
    elif sys.argv[1] == "queries":
        n = int(sys.argv[2])
        for q, v in enumerate(vectors(np.arange(5_000_000, 5_000_000 + n))):
            out.write(f"{q}\t{literal(v)}\n")
    else:
        sys.exit(f"unknown table {sys.argv[1]}")


if __name__ == "__main__":
    main()
