"""What the trigger engine observes per model between evaluations.

Every labeled sample that arrives is first scored by the champion (prequential: before anyone
trains on it), feeding a rolling live metric and change detectors on the error stream (ADWIN, and a
CUSUM that finds a moderate rise sooner: standardised for a regression's errors, the Bernoulli
likelihood ratio for a classification's). A recent
window of inputs is kept for the drift tests, which compare it with a reference window (the
holdout rows that had arrived when the champion was promoted). Synchronous and CPU-bound: the
engine calls :func:`score` and :func:`drift` from a worker thread.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from refit.core.changes import ADWIN, CUSUM, BernoulliCUSUM, change_point, restored_cusum
from refit.core.drift import DriftPolicy, check_level, detect_drift
from refit.core.filerows import FILE_SOURCE
from refit.core.triggers import Live
from refit.events import SampleIngested
from refit.specs import ModelSpec, TriggersSpec
from services.monitor.challengers import Challenger, Shadows, challenge
from services.monitor.registry import Holdout
from services.monitor.sessions import Champion

_PENDING_MAX = 5000
KEEP = 4 * _PENDING_MAX  # observed samples kept per model: the scored ones a change is located in
_MIN_SEGMENT = 10  # samples on either side of a located change
Signal = tuple[int, str, datetime, float]  # position, sample id, arrival, the detector's input for it
_SHADOW_MAX = 50_000  # rows per model: about 15 MB
log = structlog.get_logger("monitor.observer")


@dataclass
class Observed:
    """What the engine keeps in memory per model. Durable: every sample observed is in the trigger
    store under a per-model sequence (``seen`` is the latest), and :meth:`state` is saved after every
    evaluation, so :meth:`restored` rebuilds exactly what a restart would otherwise forget."""

    pending: deque[tuple[int, SampleIngested]] = field(default_factory=lambda: deque(maxlen=_PENDING_MAX))
    recent: deque[SampleIngested] = field(default_factory=lambda: deque(maxlen=500))
    version: int | None = None
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    detector: ADWIN = field(default_factory=ADWIN)
    cusum: CUSUM | None = None  # beside ADWIN: finds a moderate rise of the errors sooner
    change_detected: bool = False
    drift: dict[str, Any] | None = None
    held: tuple[str, ...] = ()
    # The samples scored, oldest first, and the ones since a change ADWIN just detected (not yet recorded).
    scored: deque[tuple[str, datetime]] = field(default_factory=lambda: deque(maxlen=KEEP))
    # The detector's input, per sample: the current champion's only, from position ``signals_from`` on
    # (its holdout rows first, then the samples it scored). ``unsaved`` holds them until the store has them.
    signals: deque[Signal] = field(default_factory=lambda: deque(maxlen=KEEP))
    signals_from: int = 0
    unsaved: list[Signal] = field(default_factory=list)
    change: list[tuple[str, datetime]] | None = None
    change_by: str = ""  # the detector that found it
    challengers: dict[int, Challenger] = field(default_factory=dict)  # by version
    # Positions in the model's sequence of observed samples: the latest, the latest scored, the latest
    # when evidence was last consumed, and when drift was last tested.
    seen: int = 0
    scored_upto: int = 0
    consumed_at: int = 0
    checked_at: int = 0
    evaluated: int = 0  # the latest position the triggers were evaluated at (in memory: a bench paces on it)
    drift_checks: int = 0  # drift tests against this champion's reference: each spends part of drift_alpha
    shadows: Shadows = field(default_factory=lambda: Shadows(_SHADOW_MAX))  # served rows waiting for labels
    files: Counter[str] = field(default_factory=Counter)  # rows from changed files (refit ingest watch), by file

    def take_unsaved(self) -> list[Signal]:
        unsaved, self.unsaved = self.unsaved, []
        return unsaved

    def since_change(self, width: int) -> list[tuple[str, datetime]]:
        """The samples after the most likely change point among the newest ``width`` the detector saw
        (:func:`refit.core.changes.change_point` of their signals); all ``width`` scored samples when
        too few signals are known to locate it."""
        window = list(self.signals)[-max(width, 1):]
        if len(window) < 2 * _MIN_SEGMENT:
            return list(self.scored)[-max(width, 1):]
        located = window[change_point([signal for *_, signal in window], _MIN_SEGMENT):]
        return [(sample_id, at) for _, sample_id, at, _ in located]

    def add(self, sample: SampleIngested) -> None:
        if sample.source and sample.source.startswith(FILE_SOURCE):
            self.files[sample.source.removeprefix(FILE_SOURCE)] += 1
        self.seen += 1
        self.pending.append((self.seen, sample))
        self.recent.append(sample)

    @property
    def since_drift_check(self) -> int:
        return self.seen - self.checked_at

    def consumed(self) -> None:
        """A retraining was requested on this evidence: the next request needs evidence newer than it
        (a full live window, or a full drift window), never the same rows again."""
        self.drift, self.change_detected = None, False
        self.files.clear()
        self.errors.clear()
        self.recent.clear()
        self.consumed_at = self.checked_at = self.seen

    def drift_due(self, config: TriggersSpec) -> bool:
        """A full window of recent inputs, and a quarter of it new since the last drift test."""
        return config.drift and len(self.recent) >= min(config.drift_window, self.recent.maxlen or 0) \
            and self.since_drift_check >= max(config.drift_window // 4, 1)

    def state(self) -> dict[str, Any]:
        """What is not in the samples themselves, as JSON values."""
        return {"version": self.version, "errors": list(self.errors), "window": self.errors.maxlen,
                "detector": self.detector.state(), "change_detected": self.change_detected, "drift": self.drift,
                "seen": self.seen, "scored_upto": self.scored_upto, "consumed_at": self.consumed_at,
                "checked_at": self.checked_at, "drift_checks": self.drift_checks, "files": dict(self.files),
                "signals_from": self.signals_from, "cusum": self.cusum.state() if self.cusum else None}

    @classmethod
    def restored(cls, state: dict[str, Any] | None, samples: list[tuple[int, SampleIngested]],
                 signals: list[Signal] | None = None) -> Observed:
        """Rebuild from a :meth:`state`, the newest observed samples (sequence, sample) and the saved
        signals, oldest first: unscored samples are pending again, those since the
        evidence was consumed are recent again, the champion's signals locate a change again."""
        observed = cls()
        observed.seen = max(samples[-1][0] if samples else 0, state["seen"] if state else 0)
        if state is not None:
            observed.version, observed.change_detected = state["version"], state["change_detected"]
            observed.errors = deque(state["errors"], maxlen=state["window"])
            observed.detector.restore(state["detector"])
            if state.get("cusum") is not None:  # a state saved before it: ADWIN alone until the next champion
                observed.cusum = restored_cusum(state["cusum"])
            observed.drift = state["drift"]
            observed.scored_upto, observed.consumed_at = state["scored_upto"], state["consumed_at"]
            observed.checked_at, observed.drift_checks = state["checked_at"], state["drift_checks"]
            observed.files = Counter(state.get("files", {}))  # a state saved before this field: none
            observed.signals_from = state.get("signals_from", observed.scored_upto + 1)
            observed.signals.extend(s for s in signals or () if observed.signals_from <= s[0] <= observed.scored_upto)
        saved = state["seen"] if state else 0
        for seq, sample in samples:
            if seq > saved and seq > observed.consumed_at and sample.source and sample.source.startswith(FILE_SOURCE):
                observed.files[sample.source.removeprefix(FILE_SOURCE)] += 1  # observed after the state was saved
            if seq > observed.scored_upto:
                observed.pending.append((seq, sample))
            else:
                observed.scored.append((sample.sample_id, sample.occurred_at))
            if seq > observed.consumed_at:
                observed.recent.append(sample)
        return observed


def _error(spec: ModelSpec, output: object, label: object, scale: float) -> tuple[float, float]:
    """A sample's error, and the detector's input for it (in [0, 1], as ADWIN's bound wants)."""
    if spec.task == "classification":
        error = 0.0 if str(output) == str(label) else 1.0
        return error, error
    error = abs(float(output) - float(label))  # type: ignore[arg-type]
    return error, min(error / scale, 1.0)


def _detect(observed: Observed, signal: float) -> str:
    """Feed the champion's detectors one signal; the one that found a change, or ""."""
    observed.detector.update(signal)
    if observed.cusum is not None:
        observed.cusum.update(signal)
        if observed.cusum.drift_detected and not observed.detector.drift_detected:
            return "CUSUM on the champion's live error"
    return "ADWIN on the champion's live error" if observed.detector.drift_detected else ""


def _outputs(champion: Champion, rows: list[dict[str, float]] | list[str]) -> list[object]:
    predicted = champion.model.run(champion.model.matrix(rows))  # type: ignore[arg-type]
    return list(predicted.labels if predicted.labels is not None else predicted.values or [])


def score(spec: ModelSpec, observed: Observed, champion: Champion, performance_window: int,
          reference: Holdout | None = None) -> bool:
    """Score the samples that arrived since the last call with the champion; True when the champion
    is a new one (the live window and the detector then start over). A new champion's detector first
    sees its errors on ``reference`` (holdout rows, oldest first: out of its training set, of the time
    it was trained), so that live errors unlike them are a change from the first live sample on."""
    new_champion = observed.version != champion.version
    scale = 3 * champion.scores.get("rmse", 1.0) or 1.0
    if new_champion:
        observed.version, observed.change_detected, observed.drift_checks = champion.version, False, 0
        observed.errors = deque(maxlen=performance_window)
        observed.signals.clear()
        observed.detector = ADWIN()
        observed.cusum = CUSUM() if spec.task == "regression" else BernoulliCUSUM()
        primed = reference.ids if reference is not None else []
        observed.signals_from = observed.scored_upto + 1 - len(primed)
        at = champion.trained_until or champion.since
        for i, (sample_id, output, label) in enumerate(zip(
                primed, _outputs(champion, reference.rows) if primed else [], reference.labels if primed else [],
                strict=True)):
            _, signal = _error(spec, output, label, scale)
            _detect(observed, signal)  # an alarm within the reference is not a change of the live data
            observed.signals.append((observed.signals_from + i, sample_id, at, signal))
            observed.unsaved.append(observed.signals[-1])
    taken = [observed.pending.popleft() for _ in range(len(observed.pending))]  # more may arrive meanwhile
    if taken:
        observed.scored_upto = taken[-1][0]
    batch = [sample for _, sample in taken]
    if not batch:
        return new_champion
    rows = [s.text for s in batch] if champion.model.input_kind == "text" else [s.features for s in batch]
    outputs = _outputs(champion, rows)
    if observed.challengers:
        challenge(spec, observed.challengers, batch, rows, outputs, observed.shadows)  # type: ignore[arg-type]
    for (seq, sample), output in zip(taken, outputs, strict=True):
        observed.scored.append((sample.sample_id, sample.occurred_at))
        if champion.trained_until is not None and sample.occurred_at <= champion.trained_until:
            continue  # it came with the champion's training data (in it, or held out beside it): not live
        error, signal = _error(spec, output, sample.label, scale)
        by = _detect(observed, signal)
        observed.signals.append((seq, sample.sample_id, sample.occurred_at, signal))
        observed.unsaved.append(observed.signals[-1])
        observed.errors.append(error)
        if by:
            observed.change_detected, observed.change_by = True, by
            # ADWIN keeps the longest recent window with one mean: the change is in it, located by
            # the split of its signals (its start, a bucket boundary, is often far before the change).
            observed.change = observed.since_change(observed.detector.width)
            keep = min(len(observed.change), len(observed.errors))
            recent = list(observed.errors)[-keep:]
            observed.errors.clear()
            observed.errors.extend(recent)
    return new_champion


def live_metric(spec: ModelSpec, observed: Observed, champion: Champion | None) -> Live | None:
    """The champion's live accuracy (or RMSE) over the window, beside its holdout value."""
    if champion is None or not observed.errors:
        return None
    metric = "accuracy" if spec.task == "classification" else "rmse"
    if metric not in champion.scores:
        return None
    return Live.of(metric, list(observed.errors), champion.scores[metric], observed.change_detected)


def drift(spec: ModelSpec, config: TriggersSpec, observed: Observed, reference: Holdout) -> dict[str, Any] | None:
    """The drift tests of the recent inputs and labels against ``reference``, as evidence (None
    while either side has fewer than 30 rows)."""
    current = list(observed.recent)[-config.drift_window:]
    if len(reference.ids) < 30 or len(current) < 30:
        return None
    if spec.input.kind == "text":
        kinds = {"text": "text"}
        ref_cols: dict[str, Any] = {"text": reference.rows}
        cur_cols: dict[str, Any] = {"text": [s.text for s in current]}
    else:
        kinds = {f: "numeric" for f in spec.input.features}
        ref_cols = {f: [r[f] for r in reference.rows] for f in spec.input.features}  # type: ignore[index]
        cur_cols = {f: [s.features[f] for s in current] for f in spec.input.features}  # type: ignore[index]
    label_kind = "categorical" if spec.task == "classification" else "numeric"
    labels_ref = reference.labels if spec.task == "classification" else [float(v) for v in reference.labels]
    labels_cur = [str(s.label) if spec.task == "classification" else float(s.label) for s in current]
    report = detect_drift(ref_cols, cur_cols, kinds, labels_reference=labels_ref, labels_current=labels_cur,
                          label_kind=label_kind,
                          policy=DriftPolicy(alpha=check_level(config.drift_alpha, observed.drift_checks + 1) / 2,
                                             share_threshold=config.drift_share))
    observed.drift_checks += 1
    summary = report.as_dict() | {"check": observed.drift_checks, "drift_alpha": config.drift_alpha}
    label_drifted = report.label is not None and report.label.drifted
    summary["drifted"] = report.drifted or label_drifted
    summary["drifted_features"] = list(report.drifted_features) + (["label"] if label_drifted else [])
    summary["features"] = [f for f in summary["features"] if f["drifted"]][:20]  # evidence stays readable
    return summary
