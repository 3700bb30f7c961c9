"""From sample to serving: how long from the answer to the sample that makes a model due to the moment
every replica answers with the model trained on it.

    .venv/bin/python bench/sample_to_serving.py --waves 20

A real local stack (the embedded broker by default, ``--broker kafka`` for Apache Kafka), the
repo's digits spec (a logistic regression) with ``training.min_new_samples`` at 60% of ``--wave-rows``
(a fifth of the rows go to the monitor's holdout: each wave makes the model due once), and
``--replicas`` inference replicas. A first champion, then ``--waves`` waves: each posts
``--wave-rows`` new digits rows in one batch; the clock starts at the 202 of that post (the broker
acknowledged every row, the last of them makes the model due), and stops when every replica has
answered a prediction with the new version (each polled back to back).

The safeguard's tolerance is wide here (every candidate promoted): what is measured is the path,
not the verdict. The stages come from the services' own log lines (one clock, one machine):

- ``to trainer``: from the 202 to the trainer's ``training`` line (consume, wake, read the window);
- ``fit``, ``convert``, ``check`` (and the trainer's other stages): its ``candidate published`` line;
- ``to decision``: from ``candidate published`` to the monitor's ``decided`` (publish, consume, judge);
- ``to swap``: from ``decided`` to the replica's ``serving`` line, which carries ``fetch``, ``load``
  and ``warm`` (the rest is publishing the decision and the replica's consume);
- ``to answer``: from ``serving`` to the first answer seen with the new version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs")]

from refit.datasets import sample_rows  # noqa: E402
from refit.demo import post_rows, wait_for_decisions  # noqa: E402
from refit.stack import Stack  # noqa: E402


def specs_file(directory: Path, wave_rows: int) -> Path:
    digits = next(m for m in yaml.safe_load((REPO / "config" / "models.yaml").read_text())["models"]
                  if m["name"] == "digits")
    digits["training"]["min_new_samples"] = int(wave_rows * 0.6)
    digits["safeguard"]["metrics"] = [{"name": m, "max_relative_degradation": 1.0}
                                      for m in ("accuracy", "f1_macro", "f1_weighted")]
    digits["triggers"] = {"drift": False, "performance": False, "max_age_days": None}
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [digits]}))
    return path


def log_lines(path: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if f'"event": "{event}"' in line or f'"event":"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def wait_serving(client: httpx.Client, urls: list[str], row: dict[str, float], version: int,
                 timeout_s: float) -> dict[str, float]:
    """Poll every replica back to back until each answers with ``version``: when each first did."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(urls):
        if time.monotonic() > deadline:
            raise RuntimeError(f"v{version} not served by every replica within {timeout_s} s")
        for url in urls:
            if url in seen:
                continue
            response = client.post(url, json={"features": row})
            if response.status_code == 200 and response.json()["version"] == version:
                seen[url] = time.time()
    return seen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waves", type=int, default=20, help="measured waves (at most 50)")
    parser.add_argument("--wave-rows", type=int, default=100, help="rows per wave: the model's min_new_samples")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--broker", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a wave may take before giving up")
    args = parser.parse_args()
    args.waves = min(args.waves, 50)
    rows = [{**r, "source": "bench"} for r in sample_rows("digits", 7)]
    first, rest = rows[:400], rows[400:]
    needed = args.waves * args.wave_rows
    waves = [[{**r, "idempotency_key": f"w{i}-{r['idempotency_key']}"} for r in
              (rest * (needed // len(rest) + 1))[i * args.wave_rows:(i + 1) * args.wave_rows]]
             for i in range(args.waves)]
    with tempfile.TemporaryDirectory(prefix="refit-s2s-") as tmp:
        stack = Stack(Path(tmp) / "stack", specs_file(Path(tmp), args.wave_rows), inference_replicas=args.replicas,
                      broker=args.broker)
        results: list[dict[str, float]] = []
        try:
            stack.start()
            replicas = [f"{stack.url(r)}/v1/models/digits/predict" for r in stack.replicas]
            probe = rows[0]["features"]
            with httpx.Client(timeout=30) as client:
                post_rows(client, stack.url("ingest"), "digits", first, batch=500)
                wait_for_decisions(client, stack.url("monitor"), "digits", 1, 120)
                time.sleep(3)  # the first rows may have made it due more than once: the last of those
                version = wait_for_decisions(client, stack.url("monitor"), "digits", 1, 120)[0]["version"]
                wait_serving(client, replicas, probe, version, 120)
                skip = len(log_lines(stack.state_dir / "logs" / "trainer.log", "candidate published"))
                print(f"first champion v{version} served by {len(replicas)} replica(s); {args.waves} waves of "
                      f"{args.wave_rows} rows", flush=True)
                for number, wave in enumerate(waves, 1):
                    response = client.post(f"{stack.url('ingest')}/v1/samples:batch",
                                           json={"model": "digits", "samples": wave})
                    started = time.time()
                    response.raise_for_status()
                    version += 1
                    seen = wait_serving(client, replicas, probe, version, args.timeout)
                    results.append({"started": started, "served": max(seen.values()), "version": version})
                    print(f"  wave {number:2}: v{version} served {max(seen.values()) - started:6.3f} s after the 202",
                          flush=True)
        finally:
            stack.stop()
        logs = stack.state_dir / "logs"
        stages = breakdown(results, logs, stack.replicas, skip)
    report(results, stages, args)


def breakdown(results: list[dict[str, float]], logs: Path, replicas: list[str], skip: int) -> list[dict[str, float]]:
    """Each wave's stages from the services' log lines (after the ``skip`` trainings before the waves,
    the n-th training is wave n's)."""
    trainings = log_lines(logs / "trainer.log", "training")[skip:]
    published = log_lines(logs / "trainer.log", "candidate published")[skip:]
    decided = log_lines(logs / "monitor.log", "decided")[skip:]
    serving = {r: [s for s in log_lines(logs / f"{r}.log", "serving")] for r in replicas}
    out = []
    for i, wave in enumerate(results):
        if i >= min(len(trainings), len(published), len(decided)):
            break
        swap = max((s for s in (v for r in replicas for v in serving[r] if v.get("version") == wave["version"])),
                   key=at, default=None)
        stage = {"to trainer": at(trainings[i]) - wave["started"]}
        stage |= {k: float(v) for k, v in published[i].get("stages", {}).items()}
        stage["to decision"] = at(decided[i]) - at(published[i])
        if swap is not None:
            stage["to swap"] = at(swap) - at(decided[i])
            stage |= {f"  {k}": float(v) for k, v in (swap.get("stages") or {}).items()}
            stage["to answer"] = wave["served"] - at(swap)
        out.append(stage)
    return out


def report(results: list[dict[str, float]], stages: list[dict[str, float]], args: argparse.Namespace) -> None:
    totals = [r["served"] - r["started"] for r in results]
    print(f"\nsample to serving, {len(totals)} waves of {args.wave_rows} rows, {args.replicas} replica(s), "
          f"{args.broker} broker:")
    print(f"  p50 {statistics.median(totals):.3f} s   p95 {percentile(totals, 0.95):.3f} s   "
          f"max {max(totals):.3f} s   min {min(totals):.3f} s")
    names = list(dict.fromkeys(k for s in stages for k in s))
    print("\n| stage | p50 s | p95 s |\n|---|---|---|")
    for name in names:
        values = [s[name] for s in stages if name in s]
        print(f"| {name} | {statistics.median(values):.3f} | {percentile(values, 0.95):.3f} |")
    print(f"| **total** | **{statistics.median(totals):.3f}** | **{percentile(totals, 0.95):.3f}** |")


if __name__ == "__main__":
    main()
