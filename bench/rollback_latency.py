"""Rollback latency: from the API call to the last inference replica answering with the target version.

Starts a real local stack (embedded broker, four services, two inference replicas),
makes two champions from the digits demo data, then alternates rollbacks. The
baseline, measured in the same run, is the rollback API call itself (decision
recorded, signed and acknowledged by the broker); the ratio says how much the
propagation to every replica (consume, verify, fetch, load, warm up, swap) adds.

    .venv/bin/python bench/rollback_latency.py --rollbacks 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from refit.demo import two_champions
from refit.stack import Stack

REPO = Path(__file__).resolve().parent.parent
TOKEN = {"authorization": "Bearer refit-local-token"}


def served(client: httpx.Client, url: str, row: dict[str, float]) -> int:
    return int(client.post(f"{url}/v1/models/digits/predict", json={"features": row}).json()["version"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollbacks", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        specs = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
        specs["models"] = [m for m in specs["models"] if m["name"] == "digits"]
        (Path(tmp) / "models.yaml").write_text(yaml.safe_dump(specs))
        stack = Stack(Path(tmp) / "state", Path(tmp) / "models.yaml", inference_replicas=args.replicas).start()
        try:
            run(stack, args.rollbacks)
        finally:
            stack.stop()


def run(stack: Stack, rollbacks: int) -> None:
    monitor, replicas = stack.url("monitor"), [stack.url(r) for r in stack.replicas]
    with httpx.Client(timeout=30) as client:
        _, _, row = two_champions(client, stack.url("ingest"), monitor, replicas, "refit-local-token")
        api_s, propagate_s = [], []
        for _ in range(rollbacks):
            started = time.perf_counter()
            response = client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "bench"}, headers=TOKEN)
            api_s.append(time.perf_counter() - started)
            target = response.json()["version"]
            pending = set(replicas)
            while pending:
                pending = {u for u in pending if served(client, u, row) != target}
            propagate_s.append(time.perf_counter() - started)
    ms = lambda xs, q: 1000 * statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else 1000 * xs[0]  # noqa: E731
    print(f"rollbacks: {rollbacks}, replicas: {len(replicas)}")
    print(f"baseline  API call (decision recorded+published): p50 {ms(api_s, 50):.1f} ms  p95 {ms(api_s, 95):.1f} ms")
    print(f"API call -> last replica serving:                 p50 {ms(propagate_s, 50):.1f} ms  "
          f"p95 {ms(propagate_s, 95):.1f} ms  max {1000 * max(propagate_s):.1f} ms")
    print(f"ratio (p50 last replica / p50 API call): {statistics.median(propagate_s) / statistics.median(api_s):.2f}")


if __name__ == "__main__":
    main()
