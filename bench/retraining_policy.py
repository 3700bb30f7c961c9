"""Retraining policies compared on river's concept-drift streams: never, every N samples, refit's triggers.

A prequential simulation: every sample is first predicted by the model being served
(that is the served accuracy), then its label arrives. The refit policy runs the very
code the monitor runs — ``refit.core.triggers.evaluate`` with live accuracy fed by an
ADWIN detector on the error stream, ``refit.core.drift.detect_drift`` on a recent
window, and the safeguard ``refit.core.safeguard.judge`` on the newest holdout rows —
with a simulated clock (one sample per second). Training uses the model spec's
scikit-learn pipeline on the newest ``window`` training rows.

    .venv/bin/python bench/retraining_policy.py
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from river.datasets import synth

from refit.core.changes import ADWIN
from refit.core.drift import DriftPolicy, detect_drift
from refit.core.metrics import scores
from refit.core.safeguard import judge
from refit.core.split import is_holdout
from refit.core.triggers import Live, Signals, evaluate
from refit.specs import ModelSpec, TriggersSpec
from services.trainer.fit import build_pipeline

START = datetime(2026, 1, 1, tzinfo=UTC)


def stream(name: str, n: int, drifts: int, seed: int) -> tuple[list[list[float]], list[str], list[int]]:
    """``n`` samples with ``drifts`` abrupt concept changes at equal intervals."""
    if name == "sea":
        concepts = [synth.SEA(variant=v, seed=seed + i) for i, v in enumerate([3, 2, 0, 3, 1][:drifts + 1])]
    else:
        concepts = [synth.Agrawal(classification_function=f, seed=seed + i)
                    for i, f in enumerate([2, 6, 2, 4, 6][:drifts + 1])]
    per = n // (drifts + 1)
    xs, ys, marks = [], [], []
    for i, concept in enumerate(concepts):
        marks.append(i * per)
        for x, y in concept.take(per):
            xs.append([float(v) for v in x.values()])
            ys.append(str(int(y)))
    return xs, ys, marks


def spec_for(name: str, features: int, cooldown: float) -> ModelSpec:
    estimator = ({"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}} if name == "sea"
                 else {"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 8, "random_state": 0},
                       "scale": False})
    return ModelSpec.model_validate({
        "name": name, "task": "classification", "input": {"features": [f"f{i}" for i in range(features)]},
        "estimator": estimator, "safeguard": {"min_holdout": 50},
        "triggers": {"max_age_days": None, "performance_window": 200, "drift_window": 300, "min_new_samples": 100,
                     "cooldown_minutes": cooldown, "timeout_minutes": 1}})


@dataclass
class Policy:
    name: str
    model: object = None
    correct: list[bool] = field(default_factory=list)
    trainings: int = 0
    promotions: int = 0


def train(spec: ModelSpec, xs: list[list[float]], ys: list[str]) -> object:
    pipeline = build_pipeline(spec)
    pipeline.fit(np.array(xs), np.array(ys, dtype=object))
    return pipeline


def simulate(name: str, n: int, drifts: int, every: int, window: int, seed: int, holdout_rows: int = 100,
             cooldown: float = 0) -> list[Policy]:
    xs, ys, marks = stream(name, n, drifts, seed)
    spec = spec_for(name, len(xs[0]), cooldown)
    triggers: TriggersSpec = spec.triggers
    ids = [f"{name}-{i}" for i in range(n)]
    holdout = [is_holdout(s, 0.2, name) for s in ids]
    warm = 1000
    train_idx = [i for i in range(warm) if not holdout[i]]
    first = train(spec, [xs[i] for i in train_idx], [ys[i] for i in train_idx])
    never, periodic, refit = Policy("never"), Policy(f"every {every}"), Policy("refit triggers")
    for p in (never, periodic, refit):
        p.model, p.trainings, p.promotions = first, 1, 1
    recent_train: deque[int] = deque(train_idx, maxlen=window)
    recent_hold: deque[int] = deque((i for i in range(warm) if holdout[i]), maxlen=holdout_rows)
    errors: deque[float] = deque(maxlen=triggers.performance_window)
    adwin, changed, new, last_fired = ADWIN(), False, 0, None
    champion_scores = scores("classification", [ys[i] for i in recent_hold],
                             list(first.predict(np.array([xs[i] for i in recent_hold]))))
    reference = list(recent_hold)
    drift = None
    for i in range(warm, n):
        x = np.array([xs[i]])
        for p in (never, periodic, refit):
            p.correct.append(p.model.predict(x)[0] == ys[i])
        (recent_hold if holdout[i] else recent_train).append(i)
        new += 1
        error = 0.0 if refit.correct[-1] else 1.0
        adwin.update(error)
        errors.append(error)
        if adwin.drift_detected:
            changed = True
            keep = list(errors)[-min(adwin.width, len(errors)):]
            errors.clear()
            errors.extend(keep)
        if (i - warm) % every == every - 1:
            periodic.model = train(spec, [xs[j] for j in recent_train], [ys[j] for j in recent_train])
            periodic.trainings += 1
            periodic.promotions += 1
        if (i - warm) % 75 == 0 and len(reference) >= 30:
            current = list(range(max(warm, i - triggers.drift_window), i + 1))
            if len(current) >= 30:
                report = detect_drift({}, {}, {}, labels_reference=[ys[j] for j in reference],
                                      labels_current=[ys[j] for j in current],
                                      policy=DriftPolicy(alpha=triggers.drift_alpha))
                features = {f"f{k}": "numeric" for k in range(len(xs[0]))}
                feat = detect_drift({f: [xs[j][k] for j in reference] for k, f in enumerate(features)},
                                    {f: [xs[j][k] for j in current] for k, f in enumerate(features)}, features,
                                    policy=DriftPolicy(alpha=triggers.drift_alpha, share_threshold=triggers.drift_share))
                drifted = feat.drifted or bool(report.label and report.label.drifted)
                drift = {"drifted": drifted, "drifted_features": list(feat.drifted_features)}
        now = START + timedelta(seconds=i)
        live = Live("accuracy", 1 - float(np.mean(errors)), champion_scores["accuracy"], len(errors), changed) \
            if errors else None
        assessment = evaluate(triggers, Signals(now=now, new_samples=new, champion_since=None,
                                                last_fired_at=last_fired, drift=drift, live=live))
        if assessment.fire is not None:
            refit.trainings += 1
            last_fired, new, drift = now, 0, None
            candidate = train(spec, [xs[j] for j in recent_train], [ys[j] for j in recent_train])
            hold_x = np.array([xs[j] for j in recent_hold])
            truth = [ys[j] for j in recent_hold]
            cand = scores("classification", truth, list(candidate.predict(hold_x)))
            champ = scores("classification", truth, list(refit.model.predict(hold_x)))
            if judge(cand, champ, spec.safeguard).promote:
                refit.model, refit.promotions = candidate, refit.promotions + 1
                champion_scores, reference = cand, list(recent_hold)
                errors.clear()
                adwin, changed = ADWIN(), False
    return [never, periodic, refit]


def table(name: str, policies: list[Policy], n: int, drifts: int, segments: int = 8) -> str:
    size = len(policies[0].correct) // segments
    head = "| policy | served accuracy | trainings | promotions | " + " | ".join(
        f"{1000 + k * size}–{1000 + (k + 1) * size}" for k in range(segments)) + " |"
    rule = "|" + "---|" * (4 + segments)
    rows = [f"| {p.name} | {np.mean(p.correct):.3f} | {p.trainings} | {p.promotions} | " + " | ".join(
        f"{np.mean(p.correct[k * size:(k + 1) * size]):.3f}" for k in range(segments)) + " |" for p in policies]
    return "\n".join([f"**{name}** — {n} samples, {drifts} abrupt drifts", "", head, rule, *rows])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=9000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--window", type=int, default=600)
    parser.add_argument("--holdout", type=int, default=100, help="newest holdout rows the safeguard judges on")
    parser.add_argument("--cooldown", type=float, default=5.0, help="minutes; the simulated clock ticks a second per sample")
    args = parser.parse_args()
    for name, drifts in (("sea", 3), ("agrawal", 3)):
        started = time.perf_counter()
        policies = simulate(name, args.samples, drifts, args.every, args.window, seed=42,
                            holdout_rows=args.holdout, cooldown=args.cooldown)
        print(table(name, policies, args.samples, drifts))
        print(f"\n({time.perf_counter() - started:.1f} s)\n")


if __name__ == "__main__":
    main()
