"""Hot swap under load: prediction latency while champions swap, against a steady phase.

Starts a real local stack (embedded broker, four services, two inference replicas), makes two
champions from the digits demo data, then runs a bounded load (``--clients`` threads, each its
own ``httpx.Client``, spread over the replicas, sending one-row predictions back to back) through
two phases of the same run:

- **steady** (the baseline): no swaps, half of ``--steady-s`` seconds before the swaps and half
  after them (so a drift of the machine's background load biases neither phase);
- **swaps**: ``--rollbacks`` rollbacks alternating between the two champions; after each, the
  bench waits until every replica answers with the new version, then ``--gap-s`` more.

Every response is checked: status 200, and its version is a champion whose *serving interval*
overlaps the request. Version v becomes champion by a decision made during the rollback call
that names it (the interval starts when that call was sent) and stops being served once every
replica was seen answering with the next champion (the interval ends there: a replica never
swaps back without a decision). Reported: requests, failures, p50/p99 per phase and the ratio
p99 swaps / p99 steady. ``tests/chaos/test_swap_under_load.py`` runs the same measurement.

    .venv/bin/python bench/swap_under_load.py --rollbacks 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
TOKEN = {"authorization": "Bearer refit-local-token"}


@dataclass(frozen=True)
class Outcome:
    replica: str
    started: float   # time.monotonic()
    ended: float
    status: int | None
    version: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class Load:
    """``clients`` threads sending one-row predictions back to back, spread over the replicas.

    Bounded in count (``max_requests`` over all threads) and time (``max_seconds``); every
    outcome is kept with its start and end (monotonic clock).
    """

    def __init__(self, replicas: list[str], row: dict[str, float], clients: int = 4,
                 max_requests: int = 200_000, max_seconds: float = 120.0) -> None:
        self.replicas, self.row, self.clients = replicas, row, clients
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.halt = threading.Event()
        self.outcomes: list[Outcome] = []   # list.append is atomic under the GIL
        self._threads = [threading.Thread(target=self._run, args=(replicas[i % len(replicas)],), daemon=True)
                         for i in range(clients)]

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self.halt.set()
        for thread in self._threads:
            thread.join(30)
        return self.outcomes

    def _run(self, url: str) -> None:
        body = {"features": self.row}
        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set() and time.monotonic() < self._deadline \
                    and len(self.outcomes) < self.max_requests:
                started = time.monotonic()
                try:
                    response = client.post(f"{url}/v1/models/digits/predict", json=body)
                except httpx.HTTPError as exc:
                    self.outcomes.append(Outcome(url, started, time.monotonic(), None, None, repr(exc)))
                    self.halt.wait(0.01)  # a replica that is down is not hammered
                    continue
                ended = time.monotonic()
                version = response.json().get("version") if response.status_code == 200 else None
                self.outcomes.append(Outcome(url, started, ended, response.status_code, version))


@dataclass
class Swap:
    version: int
    requested: float          # monotonic, before the rollback call was sent
    answered: float           # monotonic, the call returned
    decided_at: str           # the decision's occurred_at (UTC), as the monitor recorded it
    everywhere: float = math.inf   # monotonic, every replica seen answering with this version
    everywhere_wall: float = math.inf  # the same moment on the wall clock (time.time())

    @property
    def decision_to_serving(self) -> float:
        """Seconds from the decision (its occurred_at, the monitor's clock: the same machine) to every replica."""
        return self.everywhere_wall - datetime.fromisoformat(self.decided_at).timestamp()


@dataclass
class Result:
    outcomes: list[Outcome]      # every request of the run
    steady: list[Outcome]        # ended before the first rollback call or started after the last swap
    swapping: list[Outcome]      # started and ended within the swap phase
    swaps: list[Swap]
    intervals: list[tuple[int, float, float]]
    wrong_version: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @staticmethod
    def quantile_ms(outcomes: list[Outcome], q: int) -> float:
        latencies = [o.ended - o.started for o in outcomes if o.ok]
        return 1000 * statistics.quantiles(latencies, n=100, method="inclusive")[q - 1]

    @property
    def ratio(self) -> float:
        return self.quantile_ms(self.swapping, 99) / self.quantile_ms(self.steady, 99)


def served(client: httpx.Client, url: str, row: dict[str, float]) -> int | None:
    response = client.post(f"{url}/v1/models/digits/predict", json={"features": row})
    return int(response.json()["version"]) if response.status_code == 200 else None


def serving_intervals(initial: int, swaps: list[Swap]) -> list[tuple[int, float, float]]:
    """(version, from, to): from when the call that made it champion was sent (the first
    champion: always) until every replica was seen answering with the next one."""
    starts = [(initial, -math.inf), *((s.version, s.requested) for s in swaps)]
    ends = [s.everywhere for s in swaps] + [math.inf]
    return [(version, start, end) for (version, start), end in zip(starts, ends, strict=True)]


def wrong_versions(outcomes: list[Outcome], intervals: list[tuple[int, float, float]]) -> list[Outcome]:
    """Responses whose version was not being served at any moment of the request."""
    return [o for o in outcomes if o.ok and not any(
        v == o.version and start <= o.ended and o.started <= end for v, start, end in intervals)]


def measure(monitor: str, replicas: list[str], row: dict[str, float], rollbacks: int = 20, clients: int = 4,
            steady_s: float = 4.0, gap_s: float = 0.1, max_seconds: float = 120.0,
            max_requests: int = 200_000, targets: list[int] | None = None) -> Result:
    """Both phases under one load; the stack must already serve two champions of digits.

    Without ``targets`` each rollback returns to the champion just replaced, which every replica
    keeps loaded; with ``targets`` (three or more versions, cycled) every swap loads a session.
    """
    with httpx.Client(timeout=30) as client:
        initial = served(client, replicas[0], row)
        assert initial is not None and all(served(client, u, row) == initial for u in replicas)
        load = Load(replicas, row, clients, max_requests, max_seconds).start()
        try:
            time.sleep(steady_s / 2)
            swaps_from = time.monotonic()
            swaps = []
            for number in range(rollbacks):
                requested = time.monotonic()
                body: dict[str, object] = {"reason": "swap under load"}
                if targets:
                    body["to_version"] = targets[number % len(targets)]
                response = client.post(f"{monitor}/v1/models/digits/rollback", json=body, headers=TOKEN)
                assert response.status_code == 200, response.text
                event = response.json()
                swap = Swap(int(event["version"]), requested, time.monotonic(), str(event["occurred_at"]))
                swaps.append(swap)
                pending, give_up = set(replicas), time.monotonic() + 30
                while pending:
                    pending = {u for u in pending if served(client, u, row) != swap.version}
                    if pending:
                        assert time.monotonic() < give_up, f"{sorted(pending)} never served v{swap.version}"
                        time.sleep(0.01)
                swap.everywhere, swap.everywhere_wall = time.monotonic(), time.time()
                time.sleep(gap_s)
            swaps_to = time.monotonic()
            time.sleep(steady_s / 2)
        finally:
            outcomes = load.stop()
    steady = [o for o in outcomes if o.ended <= swaps_from or o.started >= swaps_to]
    swapping = [o for o in outcomes if o.started >= swaps_from and o.ended <= swaps_to]
    intervals = serving_intervals(initial, swaps)
    return Result(outcomes, steady, swapping, swaps, intervals, wrong_versions(outcomes, intervals))


def report(result: Result) -> str:
    total = len(result.outcomes)
    spans = [s.everywhere - s.requested for s in result.swaps]
    decided = [s.decision_to_serving for s in result.swaps]
    lines = [
        f"requests {total} (steady {len(result.steady)}, during swaps {len(result.swapping)}), "
        f"failures {len(result.failures)}, wrong version {len(result.wrong_version)}",
        f"swaps {len(result.swaps)}: call -> every replica serving p50 {1000 * statistics.median(spans):.0f} ms, "
        f"max {1000 * max(spans):.0f} ms",
        f"decision -> every replica serving p50 {1000 * statistics.median(decided):.0f} ms, "
        f"max {1000 * max(decided):.0f} ms",
        f"steady      p50 {result.quantile_ms(result.steady, 50):.1f} ms  "
        f"p99 {result.quantile_ms(result.steady, 99):.1f} ms",
        f"swaps       p50 {result.quantile_ms(result.swapping, 50):.1f} ms  "
        f"p99 {result.quantile_ms(result.swapping, 99):.1f} ms",
        f"ratio p99 swaps / p99 steady: {result.ratio:.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    from refit.stack import Stack
    from refit.demo import champions

    parser = argparse.ArgumentParser()
    parser.add_argument("--rollbacks", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steady-s", type=float, default=8.0)
    parser.add_argument("--gap-s", type=float, default=0.2)
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--load-each-swap", action="store_true",
                        help="three champions, cycled, so that every swap loads a session (default: rollbacks "
                             "alternate between two champions, each kept loaded by every replica)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per replica")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        specs = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
        specs["models"] = [m for m in specs["models"] if m["name"] == "digits"]
        (Path(tmp) / "models.yaml").write_text(yaml.safe_dump(specs))
        stack = Stack(Path(tmp) / "state", Path(tmp) / "models.yaml", inference_replicas=2,
                      env={"REFIT_INFERENCE_WORKERS": str(args.workers)}).start()
        try:
            monitor, replicas = stack.url("monitor"), [stack.url(r) for r in stack.replicas]
            with httpx.Client(timeout=30) as client:
                versions, row = champions(client, stack.url("ingest"), monitor, replicas, "refit-local-token",
                                          3 if args.load_each_swap else 2)
            result = measure(monitor, replicas, row, args.rollbacks, args.clients, args.steady_s, args.gap_s,
                             args.max_seconds, targets=versions if args.load_each_swap else None)
        finally:
            stack.stop()
    print(f"replicas 2 × {args.workers} worker(s), clients {args.clients}, rollbacks {args.rollbacks}, "
          f"{'every swap loads a session' if args.load_each_swap else 'alternating between two kept champions'}")
    print(report(result))


if __name__ == "__main__":
    main()
