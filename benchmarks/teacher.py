"""Teacher client throughput against the local test server with a fixed per-request latency.

Prints wall time for N requests sent one at a time and C at a time, the concurrent run's
fraction of the ideal N * latency / C, and the time of a fully cached rerun.
Run: .venv/bin/python benchmarks/teacher.py [N] [latency_s] [C]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chat_server import ChatServer  # noqa: E402

from restyle.teacher import Request, generate  # noqa: E402


def timed(n: int, cfg: dict, cache: Path, tag: str) -> float:
    reqs = [Request(f"{tag}-{i}", [{"role": "user", "content": f"{tag} {i}"}], "bench", "0",
                    {"max_tokens": 8}) for i in range(n)]
    start = time.perf_counter()
    results, _ = generate(reqs, cfg, cache, stage="bench")
    assert all(r.ok for r in results)
    return time.perf_counter() - start


def main(n: int = 64, latency: float = 0.2, c: int = 16) -> None:
    with ChatServer(latency=latency) as server, tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.db"
        cfg = {"backend": "openai", "model": "bench", "base_url": server.url}
        rows = [("sequential (C=1)", timed(n, {**cfg, "max_in_flight": 1}, cache, "seq"),
                 n * latency)]
        rows.append((f"concurrent (C={c})", timed(n, {**cfg, "max_in_flight": c}, cache, "con"),
                     n * latency / c))
        rows.append(("cached rerun", timed(n, {**cfg, "max_in_flight": c}, cache, "con"), 0.0))
    print(f"N={n} requests, server latency {latency} s\n")
    print(f"{'run':<20} {'wall s':>8} {'ideal s':>8} {'ideal/wall':>10}")
    for name, wall, ideal in rows:
        ratio = f"{ideal / wall:9.0%}" if ideal else f"{'-':>9}"
        print(f"{name:<20} {wall:8.2f} {ideal:8.2f} {ratio:>10}")


if __name__ == "__main__":
    main(*(int(a) if i != 1 else float(a) for i, a in enumerate(sys.argv[1:])))
