"""Freshness under drift, through the real stack: refit against never retraining and retraining every 250.

Prequential, as a user would run it: for each chunk of a stream, predict it with the inference
replica (that is the served quality), then post its labels to ingest, and wait until what they
caused has landed (the monitor observed and evaluated them; a training they asked for is decided and
served): paced by events, not wall time, so a run is the same on an idle or a loaded machine, and
refit, like every-250 whose model serves at once, loses no samples to the time a training takes (a
user's stream whose labels come slower than a training is the case measured; ``--pace`` paces by
the clock instead, where detection and training race the stream). The monitor evaluates its triggers
every 0.1 s here (``REFIT_MONITOR_TRIGGER_INTERVAL_S``, 1 s in a local stack) to keep a run short. The
local stack is real (embedded broker, the four services as processes); the model spec gives a
stream only its name, task, inputs and estimator, and otherwise the defaults a user would get,
but for the two settings counted in wall-clock time, which a bench compresses (a 30-minute
cooldown and a 7-day age limit would never come due within it): ``triggers.cooldown_minutes: 0``
and ``triggers.max_age_days: null``, the same for every stream.

Baselines, computed in the same run with the same estimator (the spec's pipeline), the same first
model and the same chunks: **never** serves the first model forever; **every-250** retrains on
the newest 600 rows every 250 samples and always serves the result.

Streams (nothing downloaded: river's generators and numpy, seeded): SEA and Agrawal with abrupt
changes; SEA with a gradual change (``ConceptDriftStream``, width 1,000); two regressions built
here, abrupt (piecewise linear, the weights jump) and gradual (the weights rotate).

    .venv/bin/python bench/freshness.py                 # --samples 5000 --chunk 50, event-paced
    .venv/bin/python bench/freshness.py --streams sea   # one stream

Bounded: every stream is at most ``--samples`` samples after a first model on 500, and the
whole run stops at ``--time-limit`` seconds. Prints one table (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from river.datasets import synth

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs")]

from refit.specs import ModelSpec  # noqa: E402
from refit.stack import Stack  # noqa: E402
from services.trainer.fit import build_pipeline  # noqa: E402

TOKEN = {"authorization": "Bearer refit-local-token"}
FIRST = 500  # samples the first model is trained on, before the prequential stream
EVERY, WINDOW = 250, 600  # the every-250 baseline


@dataclass
class Stream:
    name: str
    task: str
    features: list[str]
    estimator: dict[str, Any]
    xs: np.ndarray
    ys: list[Any]
    changes: list[int]  # sample indices (after FIRST) where a change begins


def _river(name: str, concepts: Iterator[tuple[dict[str, float], Any]], n: int, changes: list[int],
           estimator: dict[str, Any]) -> Stream:
    rows = [(list(map(float, x.values())), str(int(y))) for x, y in (next(concepts) for _ in range(n))]
    features = [f"x{i}" for i in range(len(rows[0][0]))]
    return Stream(name, "classification", features, estimator, np.array([r[0] for r in rows]),
                  [r[1] for r in rows], changes)


def _chained(generators: list[Any], per: int) -> Iterator[tuple[dict[str, float], Any]]:
    for generator in generators:
        yield from generator.take(per)


LR = {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}
TREE = {"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 8, "random_state": 0},
        "scale": False}
TREE_REG = {"class": "sklearn.tree.DecisionTreeRegressor", "params": {"max_depth": 6, "random_state": 0},
            "scale": False}


def streams(samples: int, seed: int = 7) -> dict[str, Callable[[], Stream]]:
    total = FIRST + samples
    thirds = [samples // 3, 2 * samples // 3]

    def sea() -> Stream:
        per = math.ceil(total / 3)
        gens = [synth.SEA(variant=v, seed=seed + i) for i, v in enumerate([3, 2, 0])]
        return _river("sea-abrupt", _chained(gens, per), total, [FIRST + c - FIRST for c in
                                                                   [per - FIRST, 2 * per - FIRST]], LR)

    def agrawal() -> Stream:
        per = math.ceil(total / 3)
        gens = [synth.Agrawal(classification_function=f, seed=seed + i) for i, f in enumerate([2, 6, 4])]
        return _river("agrawal-abrupt", _chained(gens, per), total, [per - FIRST, 2 * per - FIRST], TREE)

    def gradual() -> Stream:
        drift = synth.ConceptDriftStream(stream=synth.SEA(variant=0, seed=seed),
                                         drift_stream=synth.SEA(variant=2, seed=seed + 1),
                                         position=FIRST + samples // 2, width=1000, seed=seed)
        return _river("sea-gradual", iter(drift), total, [samples // 2], LR)

    def regression(kind: str) -> Stream:
        rng = np.random.default_rng(seed)
        d = 5
        x = rng.normal(size=(total, d))
        w0 = rng.normal(size=d) * 10
        if kind == "abrupt":
            weights = np.empty((total, d))
            cuts = [0, FIRST + thirds[0], FIRST + thirds[1], total]
            for k in range(3):
                weights[cuts[k]:cuts[k + 1]] = w0 if k == 0 else rng.normal(size=d) * 10
            changes = thirds
        else:  # the weights rotate in the plane of the first two features over the second half
            angle = np.clip((np.arange(total) - FIRST - samples / 2) / (samples / 2), 0, 1) * np.pi
            weights = np.tile(w0, (total, 1))
            weights[:, 0] = w0[0] * np.cos(angle) - w0[1] * np.sin(angle)
            weights[:, 1] = w0[0] * np.sin(angle) + w0[1] * np.cos(angle)
            changes = [samples // 2]
        y = np.einsum("ij,ij->i", x, weights) + np.sin(2 * x[:, 2]) * 5 + rng.normal(scale=2.0, size=total)
        return Stream(f"regression-{kind}", "regression", [f"x{i}" for i in range(d)], TREE_REG, x,
                      [float(v) for v in y], changes)

    return {"sea": sea, "agrawal": agrawal, "sea-gradual": gradual,
            "reg-abrupt": lambda: regression("abrupt"), "reg-gradual": lambda: regression("gradual")}


def spec_of(stream: Stream) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "fresh", "task": stream.task, "input": {"kind": "numeric",
                                                                            "features": stream.features},
                            "estimator": stream.estimator,
                            "triggers": {"cooldown_minutes": 0, "max_age_days": None}}
    if stream.task == "classification":
        spec["labels"] = sorted(set(stream.ys))
    return spec


def quality(task: str, predicted: list[Any], truth: list[Any]) -> float:
    if task == "classification":
        return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    return float(math.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(truth, float)) ** 2)))


@dataclass
class Outcome:
    history: dict[str, Any] = field(default_factory=dict)  # what the monitor recorded, for reading after
    served: list[Any] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    trainings: int = 0
    promotions: int = 0
    rejections: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def baselines(stream: Stream, chunk: int) -> tuple[Outcome, Outcome]:
    spec = ModelSpec.model_validate(spec_of(stream))

    def fit(lo: int, hi: int) -> Any:
        model = build_pipeline(spec)
        return model.fit(stream.xs[lo:hi], stream.ys[lo:hi])

    first = fit(0, FIRST)
    never, every = Outcome(trainings=1), Outcome(trainings=1)
    current = first
    for start in range(FIRST, len(stream.ys), chunk):
        rows = stream.xs[start:start + chunk]
        never.served.extend(first.predict(rows).tolist())
        every.served.extend(current.predict(rows).tolist())
        seen = start + len(rows) - FIRST
        if seen // EVERY > (seen - len(rows)) // EVERY:
            current = fit(max(0, start + len(rows) - WINDOW), start + len(rows))
            every.trainings += 1
    return never, every


def settle(client: httpx.Client, monitor: str, replica: str, posted: int, pending: int | None) -> int | None:
    """Wait until what the posted samples cause has landed: the monitor observed them and evaluated its
    triggers after them, no training is in flight, the newest candidate is decided (or still pending
    5 s after it arrived: the safeguard defers it until enough holdout rows of the current concept are
    there, and it waits for rows, not for time), and the replica serves the champion. Returns the version
    still pending, if any. A run is then the same whatever the machine's load."""
    deadline, first_pending = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        state = client.get(f"{monitor}/v1/models/fresh/triggers").json()
        if state["evaluated"] >= posted and state["in_flight"] is None:
            versions = client.get(f"{monitor}/v1/models/fresh/versions").json()
            newest = max(versions, key=lambda v: v["version"])
            champion = next((v["version"] for v in versions if v["champion"]), None)
            waiting = newest["version"] if newest["status"] == "pending" else None
            served = client.get(f"{replica}/v1/models").json()[0]["version"]
            if waiting is not None and waiting != pending:
                first_pending = first_pending or time.monotonic()
                if time.monotonic() - first_pending > 5:
                    pending = waiting
            if (waiting is None or waiting == pending) and served == champion:
                return waiting
        time.sleep(0.05)
    raise TimeoutError(f"the stack did not settle within 120 s after {posted} samples")


def through_refit(stream: Stream, chunk: int, pace: float, state: Path) -> Outcome:
    spec_path = state / "models.yaml"
    spec_path.write_text(yaml.safe_dump({"models": [spec_of(stream)]}))
    stack = Stack(state_dir=state / "stack", specs_path=spec_path,
                  env={"REFIT_MONITOR_TRIGGER_INTERVAL_S": "0.1"}).start()
    out = Outcome()
    try:
        ingest, monitor, replica = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
        with httpx.Client(timeout=60) as client:
            def post(lo: int, hi: int) -> None:
                samples = [{"features": dict(zip(stream.features, map(float, stream.xs[i]), strict=True)),
                            "label": stream.ys[i], "idempotency_key": f"s{i}"} for i in range(lo, hi)]
                client.post(f"{ingest}/v1/samples:batch", json={"model": "fresh", "samples": samples}
                            ).raise_for_status()

            post(0, FIRST)
            # the first model learns from all of them: a request before the trainer stored them all would
            # train on fewer, and each run would start from another model
            deadline = time.monotonic() + 60
            while sum(client.get(f"{stack.url('trainer')}/v1/stats").json()[part].get("fresh", 0)
                      for part in ("samples", "holdout_skipped", "quarantined")) < FIRST:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the trainer did not store the first {FIRST} samples within 60 s")
                time.sleep(0.1)
            client.post(f"{monitor}/v1/models/fresh/retrain", json={"reason": "first model"}, headers=TOKEN)
            deadline = time.monotonic() + 120
            while client.get(f"{replica}/v1/models").json()[0]["version"] is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no first model within 120 s")
                time.sleep(0.2)
            started, pending = time.monotonic(), None
            for k, start in enumerate(range(FIRST, len(stream.ys), chunk)):
                rows = [dict(zip(stream.features, map(float, x), strict=True)) for x in stream.xs[start:start + chunk]]
                body = client.post(f"{replica}/v1/models/fresh/predict", json={"instances": rows}).json()
                out.served.extend(p["label"] if stream.task == "classification" else p["value"]
                                  for p in body["predictions"])
                out.versions.extend([body["version"]] * len(rows))
                post(start, start + len(rows))
                if pace:
                    time.sleep(max(0.0, started + (k + 1) * chunk / pace - time.monotonic()))
                else:
                    pending = settle(client, monitor, replica, start + len(rows), pending)
            if pace:
                time.sleep(3)  # the last decisions land
            versions = client.get(f"{monitor}/v1/models/fresh/versions").json()
            decisions = client.get(f"{monitor}/v1/models/fresh/decisions?limit=1000").json()
            triggers = client.get(f"{monitor}/v1/models/fresh/triggers").json()
            fired = triggers["fired"]
            out.history = {"decisions": decisions, "triggers": triggers,
                           "served_versions": [[i, v] for i, v in enumerate(out.versions)
                                               if i == 0 or out.versions[i - 1] != v]}
        out.trainings = len(versions)
        out.promotions = sum(d["event_type"] == "ModelPromoted" for d in decisions)
        out.rejections = sum(d["event_type"] == "CandidateRejected" for d in decisions)
        for v in versions:
            out.kinds[v["trigger"]] = out.kinds.get(v["trigger"], 0) + 1
        out.kinds["fired:" + ",".join(sorted({f["kind"] for f in fired}))] = len(fired)
    finally:
        stack.stop()
    return out


def recovery(stream: Stream, outcome: Outcome, chunk: int) -> list[int | None]:
    """Samples after each change until refit served a version first served after it."""
    found: list[int | None] = []
    for change in stream.changes:
        before = outcome.versions[change - 1] if change > 0 else None
        later = next((i for i in range(change, len(outcome.versions)) if outcome.versions[i] != before), None)
        found.append(None if later is None else later - change)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="sea,agrawal,sea-gradual,reg-abrupt,reg-gradual",
                        help="comma-separated, run one after the other (default: all five)")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--pace", type=float, default=0.0,
                        help="samples per second; 0 (the default): after each chunk, wait until what it caused "
                             "landed (see settle)")
    parser.add_argument("--time-limit", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "freshness.md")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    makers = streams(args.samples)
    lines = ["| stream | metric | never | every-250 | refit | refit − every-250 | trainings refit / every-250 "
             "| promoted / rejected | trigger kinds | samples to a new version after each change |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    deadline = time.monotonic() + args.time_limit
    for name in args.streams.split(","):
        if time.monotonic() > deadline:
            print(f"time limit reached: {name} and later streams not run")
            break
        stream = makers[name]()
        truth = stream.ys[FIRST:]
        never, every = baselines(stream, args.chunk)
        with tempfile.TemporaryDirectory(prefix="refit-fresh-") as tmp:
            refit = through_refit(stream, args.chunk, args.pace, Path(tmp))
        metric = "accuracy" if stream.task == "classification" else "RMSE"
        q = [quality(stream.task, o.served, truth) for o in (never, every, refit)]
        gap = (f"{(q[2] - q[1]) * 100:+.1f} points" if stream.task == "classification"
               else f"{(q[2] / q[1] - 1) * 100:+.1f}%")
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(refit.kinds.items()))
        line = (f"| {stream.name} | {metric} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {gap} | "
                f"{refit.trainings} / {every.trainings} | {refit.promotions} / {refit.rejections} | {kinds} | "
                f"{recovery(stream, refit, args.chunk)} |")
        lines.append(line)
        print(line, flush=True)
        (args.out.parent / f"freshness-{name}.json").write_text(json.dumps(
            {"changes": stream.changes, "quality": dict(zip(("never", "every-250", "refit"), q)), **refit.history},
            indent=1, default=str))
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"`{' '.join(sys.argv)}`\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
