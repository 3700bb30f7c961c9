"""The live-error detectors on the errors of real fitted models (docs/drift.md).

Offline, no stack, seeded. Three measurements:

* **false alarms**: 100 models (a depth-6 tree, or a ridge regression every third seed) fitted on 400
  rows of a stationary 5-feature linear-plus-sine stream (normal noise, or Student-t(3) on odd seeds),
  each watched over 10,000 further samples with the monitor's regression signal (absolute error over
  three times the holdout RMSE, capped at 1), the detector primed with the 100 holdout rows;
* **the first change of bench/freshness.py's abrupt regression**, replayed for 12 random 80/20
  splits of its first 500 samples (the trainer's holdout split is another random one): samples from
  the change to each detector's first alarm;
* **false alarms on classifications**: 40 models (logistic regressions on river's SEA, depth-8 trees
  on its Agrawal functions) fitted on 400 samples, each watched over 10,000 further samples of the
  same concept (0/1 errors; the models' error rates span 0.3% to 15%): ADWIN and the Bernoulli CUSUM.

    .venv/bin/python bench/detectors.py                  # about 20 s
    .venv/bin/python bench/detectors.py --h 31,36,24     # CUSUM thresholds to compare
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.tree import DecisionTreeRegressor

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs"), str(REPO / "bench")]

import freshness as fresh  # noqa: E402
from refit.core.changes import ADWIN, CUSUM, BernoulliCUSUM, ChangeDetector  # noqa: E402
from refit.specs import ModelSpec  # noqa: E402
from services.trainer.fit import build_pipeline  # noqa: E402


def signal(model: object, xs: np.ndarray, ys: np.ndarray, rmse: float) -> np.ndarray:
    return np.minimum(np.abs(model.predict(xs) - ys) / (3 * rmse), 1.0)  # type: ignore[attr-defined]


def alarms(make: Callable[[], ChangeDetector], prime: Sequence[float], live: Sequence[float]) -> list[int]:
    """Where a fresh detector, first fed ``prime``, alarms in ``live``."""
    detector, found = make(), []
    for value in prime:
        detector.update(value)
    for i, value in enumerate(live):
        detector.update(value)
        if detector.drift_detected:
            found.append(i)
    return found


def false_alarms(detectors: dict[str, Callable[[], ChangeDetector]], models: int = 100,
                 samples: int = 10_000) -> dict[str, int]:
    counts = dict.fromkeys(detectors, 0)
    for seed in range(models):
        rng = np.random.default_rng(1000 + seed)
        n = 500 + samples
        x = rng.normal(size=(n, 5))
        noise = rng.standard_t(3, size=n) * 2 if seed % 2 else rng.normal(scale=2.0, size=n)
        y = x @ (rng.normal(size=5) * 10) + np.sin(2 * x[:, 2]) * 5 + noise
        model = (DecisionTreeRegressor(max_depth=6, random_state=0) if seed % 3 else Ridge()).fit(x[:400], y[:400])
        rmse = float(np.sqrt(np.mean((model.predict(x[400:500]) - y[400:500]) ** 2)))
        values = signal(model, x[400:], y[400:], rmse)
        for name, make in detectors.items():
            counts[name] += len(alarms(make, values[:100], values[100:]))
    return counts


def first_change_delays(detectors: dict[str, Callable[[], ChangeDetector]], splits: int = 12) -> dict[str, list]:
    stream = fresh.streams(5000)["reg-abrupt"]()
    spec = ModelSpec.model_validate(fresh.spec_of(stream))
    xs, ys, first = stream.xs, np.asarray(stream.ys, float), fresh.FIRST
    change = stream.changes[0]
    delays: dict[str, list] = {name: [] for name in detectors}
    for seed in range(splits):
        held = np.random.default_rng(seed).random(first) < 0.2
        model = build_pipeline(spec).fit(xs[:first][~held], ys[:first][~held])
        rmse = float(np.sqrt(np.mean((model.predict(xs[:first][held]) - ys[:first][held]) ** 2)))
        prime = signal(model, xs[:first][held], ys[:first][held], rmse)
        live = signal(model, xs[first:], ys[first:], rmse)
        for name, make in detectors.items():
            found = [i - change for i in alarms(make, prime, live) if i >= change]
            delays[name].append(found[0] if found else None)
    return delays


def classification_false_alarms(models: int = 40, samples: int = 10_000) -> tuple[dict[str, int], list[float]]:
    import itertools

    from river.datasets import synth
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    detectors: dict[str, Callable[[], ChangeDetector]] = {"ADWIN": ADWIN, "Bernoulli CUSUM": BernoulliCUSUM}
    counts, rates = dict.fromkeys(detectors, 0), []
    for seed in range(models):
        if seed % 2:
            stream, model = synth.SEA(variant=seed % 4, seed=seed), LogisticRegression(max_iter=500)
        else:
            stream = synth.Agrawal(classification_function=[2, 4, 6, 1][seed // 2 % 4], seed=seed)
            model = DecisionTreeClassifier(max_depth=8, random_state=0)
        rows = list(itertools.islice(stream, 400 + samples))
        x = np.array([list(features.values()) for features, _ in rows])
        y = np.array([label for _, label in rows])
        errors = (model.fit(x[:400], y[:400]).predict(x[400:]) != y[400:]).astype(float)
        rates.append(float(errors.mean()))
        for name, make in detectors.items():
            counts[name] += len(alarms(make, [], errors.tolist()))
    return counts, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h", default="31,36,24", help="CUSUM thresholds (k = 0.125)")
    args = parser.parse_args()
    detectors: dict[str, Callable[[], ChangeDetector]] = {"ADWIN": ADWIN}
    for h in args.h.split(","):
        detectors[f"CUSUM h={h}"] = lambda h=float(h): CUSUM(h=h)  # type: ignore[misc]
    raised = false_alarms(detectors)
    delays = first_change_delays(detectors)
    print("| detector | false alarms in 1,000,000 samples | first change of the abrupt regression: delay per split "
          "| median |\n|---|---|---|---|")
    for name in detectors:
        found = [d for d in delays[name] if d is not None]
        median = f"{np.median(found):.0f}" if len(found) == len(delays[name]) else "not all found"
        print(f"| {name} | {raised[name]} | {', '.join(str(d) for d in sorted(found))} | {median} |")
    counts, rates = classification_false_alarms()
    print(f"\nClassifications, {len(rates)} models x 10,000 samples (error rates {min(rates):.3f} to {max(rates):.3f}):")
    print("| detector | false alarms |\n|---|---|")
    for name, count in counts.items():
        print(f"| {name} | {count} |")


if __name__ == "__main__":
    main()
