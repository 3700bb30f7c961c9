"""The monitor's trigger engine: gathers what the pure policy needs, asks it, and acts.

Every labeled sample that arrives is first scored by the champion (prequential: before
anyone trains on it), feeding a rolling live metric and an ADWIN detector on the error
stream. A recent window of inputs is compared with a reference window (holdout rows that
had arrived when the champion was promoted) by the drift library. Schedules come due by
the clock. ``refit.core.triggers.evaluate`` decides; a fired trigger becomes a
``RetrainRequested`` with its evidence, and the request stays in flight until a candidate
of the model arrives.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from refit.core.changes import ADWIN
from refit.core.drift import DriftInputError, DriftPolicy, detect_drift
from refit.core.schedule import Due, due, next_run
from refit.core.triggers import Assessment, Live, Signals, evaluate
from refit.errors import BrokerUnavailableError
from refit.events import RetrainRequested, SampleIngested
from refit.kafka import Publisher
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec, ModelSpecs, TriggersSpec
from services.monitor.registry import Registry
from services.monitor.trigger_store import TriggerStore

log = structlog.get_logger("monitor.triggers")
Clock = Callable[[], datetime]
_PENDING_MAX = 5000


@dataclass
class Champion:
    version: int
    since: datetime
    model: OnnxModel
    scores: dict[str, float]


@dataclass
class ModelWatch:
    """What the engine keeps in memory per model (rebuilt after a restart as samples arrive)."""

    pending: deque[SampleIngested] = field(default_factory=lambda: deque(maxlen=_PENDING_MAX))
    recent: deque[SampleIngested] = field(default_factory=lambda: deque(maxlen=500))
    since_drift_check: int = 0
    version: int | None = None
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    detector: ADWIN = field(default_factory=ADWIN)
    change_detected: bool = False
    drift: dict[str, Any] | None = None
    held: tuple[str, ...] = ()


class Triggers:
    def __init__(self, specs: ModelSpecs, store: TriggerStore, registry: Registry, publisher: Publisher,
                 champion: Callable[[str], Champion | None], clock: Clock = lambda: datetime.now(UTC),
                 metrics: Metrics | None = None,
                 notify: Callable[[str, str | None, dict[str, Any]], None] = lambda *_: None) -> None:
        self.notify = notify
        self.specs, self.store, self.registry, self.publisher = specs, store, registry, publisher
        self.metrics = metrics or Metrics("monitor")
        self.champion, self.clock = champion, clock
        self.watch = {name: ModelWatch() for name in specs.names()}
        self._act = asyncio.Lock()

    # configuration ---------------------------------------------------------------------------
    def config(self, model: str) -> tuple[TriggersSpec, str]:
        override = self.store.get(f"config:{model}")
        if override is not None:
            return TriggersSpec.model_validate(override), "override"
        return self.specs.get(model).triggers, "spec"

    def set_config(self, model: str, triggers: TriggersSpec) -> None:
        self.store.put(f"config:{model}", triggers.model_dump(mode="json"))

    @property
    def running(self) -> bool:
        return self.store.get("scheduler_enabled") is not False

    def set_running(self, running: bool) -> None:
        self.store.put("scheduler_enabled", running)

    # observing -------------------------------------------------------------------------------
    def observe(self, samples: list[SampleIngested]) -> None:
        counts: Counter[str] = Counter()
        for sample in samples:
            watch = self.watch.get(sample.model)
            if watch is None:
                continue
            watch.pending.append(sample)
            watch.recent.append(sample)
            watch.since_drift_check += 1
            counts[sample.model] += 1
        if counts:
            self.store.add_samples(dict(counts))

    def candidate_arrived(self, model: str, candidate_id: str) -> None:
        self.store.finish(model, f"candidate {candidate_id}")

    # acting ----------------------------------------------------------------------------------
    async def tick(self) -> None:
        for spec in self.specs.models:
            try:
                await self._tick(spec)
            except (DriftInputError, ValueError) as exc:  # a window that cannot be judged waits
                log.warning("trigger evaluation skipped", model=spec.name, error=str(exc))
            except BrokerUnavailableError:
                raise
            except Exception:  # one model's failure must never stop every model's triggers
                log.exception("trigger evaluation failed", model=spec.name)

    async def _tick(self, spec: ModelSpec) -> None:
        config, _ = self.config(spec.name)
        watch = self.watch[spec.name]
        champion = self.champion(spec.name)
        if champion is not None:
            await asyncio.to_thread(self._score, spec, watch, champion)
            if config.drift and len(watch.recent) >= min(config.drift_window, watch.recent.maxlen or 0) \
                    and watch.since_drift_check >= max(config.drift_window // 4, 1):
                watch.drift = await asyncio.to_thread(self._drift, spec, config, watch)
                watch.since_drift_check = 0
        now = self.clock()
        new, last_fired, in_flight, _ = self.store.state(spec.name)
        due_runs = self._due(spec.name, config, now) if self.running else ()
        live = self._live(spec, config, watch, champion)
        if live is not None:
            self.metrics.live_metric.labels(spec.name, live.metric).set(live.live)
        signals = Signals(now=now, new_samples=new, champion_since=champion.since if champion else None,
                          in_flight=in_flight, last_fired_at=last_fired, due=due_runs, drift=watch.drift, live=live)
        assessment = evaluate(config, signals) if self.running or in_flight else Assessment(None)
        watch.held = assessment.held
        if assessment.gave_up is not None:
            log.error("retraining given up", model=spec.name, request_id=assessment.gave_up.request_id,
                      attempts=assessment.gave_up.attempts)
            self.store.finish(spec.name, f"given up after {assessment.gave_up.attempts} attempts")
            self.notify("training_failed", spec.name, {"request_id": assessment.gave_up.request_id,
                                                       "kind": assessment.gave_up.kind,
                                                       "attempts": assessment.gave_up.attempts})
        if assessment.fire is not None:
            fire = assessment.fire
            attempts = in_flight.attempts + 1 if fire.retry_of and in_flight else 1
            await self._request(spec.name, fire.kind, fire.reason, fire.evidence, attempts, fire.retry_of)
            if fire.kind == "drift":
                self.notify("drift", spec.name, {"reason": fire.reason, "evidence": fire.evidence})
            for run in due_runs:
                self.store.ran(spec.name, run.schedule, now)
            watch.drift = None
            watch.change_detected = False

    def _score(self, spec: ModelSpec, watch: ModelWatch, champion: Champion) -> None:
        if watch.version != champion.version:
            watch.version, watch.change_detected = champion.version, False
            watch.errors = deque(maxlen=self.config(spec.name)[0].performance_window)
            watch.detector = ADWIN()
            self.store.set_reference(spec.name, self.registry.holdout_top_seq(spec.name))
        batch = list(watch.pending)
        watch.pending.clear()
        if not batch:
            return
        model = champion.model
        rows = [s.text for s in batch] if model.input_kind == "text" else [s.features for s in batch]
        predicted = model.run(model.matrix(rows))  # type: ignore[arg-type]
        outputs = predicted.labels if predicted.labels is not None else predicted.values or []
        scale = 3 * champion.scores.get("rmse", 1.0) or 1.0
        for sample, output in zip(batch, outputs, strict=True):
            if spec.task == "classification":
                error = signal = 0.0 if str(output) == str(sample.label) else 1.0
            else:
                error = abs(float(output) - float(sample.label))
                signal = min(error / scale, 1.0)  # ADWIN's bound wants values in [0, 1]
            watch.detector.update(signal)
            watch.errors.append(error)
            if watch.detector.drift_detected:
                watch.change_detected = True
                keep = min(watch.detector.width, len(watch.errors))
                recent = list(watch.errors)[-keep:]
                watch.errors.clear()
                watch.errors.extend(recent)

    @staticmethod
    def _live(spec: ModelSpec, config: TriggersSpec, watch: ModelWatch, champion: Champion | None) -> Live | None:
        if champion is None or not watch.errors:
            return None
        errors = np.fromiter(watch.errors, dtype=float)
        if spec.task == "classification":
            if "accuracy" not in champion.scores:
                return None
            return Live("accuracy", float(1 - errors.mean()), champion.scores["accuracy"], len(errors),
                        watch.change_detected)
        if "rmse" not in champion.scores:
            return None
        return Live("rmse", float(math.sqrt((errors**2).mean())), champion.scores["rmse"], len(errors),
                    watch.change_detected)

    def _drift(self, spec: ModelSpec, config: TriggersSpec, watch: ModelWatch) -> dict[str, Any] | None:
        _, _, _, reference_seq = self.store.state(spec.name)
        reference = self.registry.holdout_until(spec.name, reference_seq, config.drift_window)
        current = list(watch.recent)[-config.drift_window:]
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
                              policy=DriftPolicy(alpha=config.drift_alpha, share_threshold=config.drift_share))
        summary = report.as_dict()
        label_drifted = report.label is not None and report.label.drifted
        summary["drifted"] = report.drifted or label_drifted
        summary["drifted_features"] = list(report.drifted_features) + (["label"] if label_drifted else [])
        summary["features"] = [f for f in summary["features"] if f["drifted"]][:20]  # evidence stays readable
        return summary

    def _due(self, model: str, config: TriggersSpec, now: datetime) -> tuple[Due, ...]:
        runs = []
        for schedule in config.schedules:
            last = self.store.last_run(model, schedule.name)
            if last is None:  # a new schedule starts counting now; it never fires for the past
                self.store.ran(model, schedule.name, now)
                continue
            if (run := due(schedule, last, now)) is not None:
                runs.append(run)
        return tuple(runs)

    async def _request(self, model: str, kind: str, reason: str, evidence: dict[str, Any], attempts: int,
                       retry_of: str | None, requested_by: str = "monitor") -> RetrainRequested:
        event = RetrainRequested(model=model, kind=kind, reason=reason, evidence=evidence, requested_by=requested_by)
        async with self._act:
            await self.publisher.publish(event)
            self.store.fired(model, kind, reason, evidence, str(event.event_id), event.occurred_at, attempts, retry_of)
        self.metrics.retraining_triggered.labels(model, kind).inc()
        log.info("retrain requested", model=model, kind=kind, reason=reason, event_id=str(event.event_id),
                 retry_of=retry_of)
        return event

    async def manual(self, model: str, reason: str, requested_by: str | None) -> RetrainRequested:
        """An operator's request: bypasses cooldown and data sufficiency, and is recorded like any other."""
        return await self._request(model, "manual", reason, {}, 1, None, requested_by or "api")

    # reading ---------------------------------------------------------------------------------
    def describe(self, model: str) -> dict[str, Any]:
        config, source = self.config(model)
        new, last_fired, in_flight, _ = self.store.state(model)
        watch = self.watch[model]
        champion = self.champion(model)
        live = self._live(self.specs.get(model), config, watch, champion)
        return {
            "model": model, "running": self.running, "config_source": source, "new_samples": new,
            "last_fired_at": last_fired.isoformat() if last_fired else None,
            "in_flight": None if in_flight is None else {**in_flight.__dict__,
                                                         "requested_at": in_flight.requested_at.isoformat()},
            "held": list(watch.held), "drift": watch.drift,
            "live": None if live is None else live.__dict__,
            "schedules": self.schedules(model), "fired": self.store.history(model),
        }

    def schedules(self, model: str) -> list[dict[str, Any]]:
        config, _ = self.config(model)
        now = self.clock()
        out = []
        for schedule in config.schedules:
            last = self.store.last_run(model, schedule.name)
            upcoming = next_run(schedule, max(last or now, now))
            out.append({"model": model, "name": schedule.name, "cron": dict(schedule.cron),
                        "timezone": schedule.timezone, "last_run": last.isoformat() if last else None,
                        "next_run": upcoming.isoformat() if upcoming else None})
        return out
