"""The monitor's trigger engine: gathers what the pure policy needs, asks it, and acts.

What it observes between evaluations (live error, drift) is ``services.monitor.observer``'s.
Schedules come due by the clock. ``refit.core.triggers.evaluate`` decides; a fired trigger becomes a
``RetrainRequested`` with its evidence, and the request stays in flight until a candidate
of the model arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from refit.core.drift import DriftInputError
from refit.core.schedule import Due, due, next_run
from refit.core.sequential import PairedTest
from refit.core.split import is_holdout
from refit.core.triggers import Assessment, Signals, evaluate
from refit.errors import BrokerUnavailableError
from refit.events import (ConceptChanged, RetrainingPaused, RetrainingResumed, RetrainRequested, SampleIngested,
                          ShadowScored, TrainingFailed)
from refit.kafka import Publisher
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec, ModelSpecs, TriggersSpec
from services.monitor.challengers import Challenger, Role
from services.monitor.observer import KEEP, Observed, drift, live_metric, score
from services.monitor.registry import Change, Holdout, Version
from services.monitor.runconfig import RunConfig
from services.monitor.sessions import Champion
from services.monitor.trigger_store import TriggerStore

log = structlog.get_logger("monitor.triggers")
Clock = Callable[[], datetime]


class Champions(Protocol):
    """Where the engine finds each model's champion, loaded (``services.monitor.sessions.Sessions``)."""

    def champion(self, model: str) -> Champion | None: ...

    def challengers(self, model: str, champion: int) -> list[tuple[int, Role, OnnxModel]]: ...


class LiveDecisions(Protocol):
    """Who decides on live evidence (``services.monitor.decider.Decider``)."""

    async def promote_on_live_evidence(self, model: str, challenger: Challenger) -> None: ...

    async def roll_back_on_live_evidence(self, model: str, challenger: Challenger) -> None: ...


class HoldoutLog(Protocol):
    """What the engine reads of the registry (``services.monitor.registry.Registry``): the holdout as it
    arrived (drift's reference), the concept changes, and the candidates rejected in a row."""

    def holdout_top_seq(self, model: str) -> int: ...

    def holdout_until(self, model: str, max_seq: int | None, max_rows: int, after_seq: int = 0) -> Holdout: ...

    def holdout_after(self, model: str, after_seq: int, max_rows: int) -> Holdout: ...

    def holdout_seq(self, model: str, sample_id: str) -> int | None: ...

    def record_change(self, model: str, after_seq: int, changed_at: datetime, detector: str) -> None: ...

    def changes(self, model: str, limit: int = 20) -> list[Change]: ...

    def rejection_streaks(self, model: str, holdout_fraction: float) -> dict[str, tuple[int, int]]: ...

    def holdout_size(self, model: str, after_seq: int = 0) -> int: ...

    def version(self, model: str, version: int) -> Version | None: ...

    def undecided(self, model: str) -> tuple[int, datetime] | None: ...


class Triggers:
    """Per model: observe, evaluate the policy, and request retraining when it fires.

    Over 80 lines because the engine is one loop over one model's state with its configuration
    and read model beside it; what it observes and computes is in ``observer`` and ``core.triggers``.
    """

    def __init__(self, specs: ModelSpecs, store: TriggerStore, holdout: HoldoutLog, champions: Champions,
                 publisher: Publisher, clock: Clock = lambda: datetime.now(UTC), metrics: Metrics | None = None,
                 notify: Callable[[str, str | None, dict[str, Any]], None] = lambda *_: None,
                 live: LiveDecisions | None = None) -> None:
        self.notify, self.live = notify, live
        self.specs, self.store, self.holdout, self.publisher = specs, store, holdout, publisher
        self.runconfig = RunConfig(specs, store, publisher)  # applies what an operator set before a restart
        self.metrics = metrics or Metrics("monitor")
        self.champions, self.clock = champions, clock
        self.observed = {name: Observed.restored(store.watch(name), store.observed(name, KEEP), store.signals(name))
                         for name in specs.names()}
        self._act = asyncio.Lock()

    # configuration ---------------------------------------------------------------------------
    def config(self, model: str) -> tuple[TriggersSpec, str]:
        """The model's trigger configuration, and whether it is the spec file's or an operator's."""
        return self.specs.get(model).triggers, self.runconfig.describe(model)["source"]

    @property
    def running(self) -> bool:
        return self.store.get("scheduler_enabled") is not False

    async def set_running(self, running: bool, requested_by: str | None = None) -> None:
        """Pause or resume automatic retraining. The monitor owns the pause: it tells the trainer too
        (whose own ``training.min_new_samples`` path obeys it), before it records it."""
        kind = RetrainingResumed if running else RetrainingPaused
        for model in self.specs.names():
            await self.publisher.publish(kind(model=model, requested_by=requested_by))
        self.store.put("scheduler_enabled", running)

    # observing -------------------------------------------------------------------------------
    def observe(self, samples: list[SampleIngested]) -> None:
        """Count and watch the samples of known models not observed before (a redelivery changes nothing)."""
        for sample in self.store.add_samples([s for s in samples if s.model in self.observed]):
            self.observed[sample.model].add(sample)

    def shadowed(self, event: ShadowScored) -> None:
        """Served rows scored in the shadow by the challengers: they wait for their labels."""
        self.observed[event.model].shadows.add(event)

    def candidate_arrived(self, model: str, candidate_id: str) -> None:
        self.store.finish(model, f"candidate {candidate_id}")

    def training_failed(self, event: TrainingFailed) -> None:
        """A training failed: the request it answered ends now, and the policy decides on a retry, with
        backoff (``insufficient_data`` is not retried: only new data helps, and the triggers ask again)."""
        self.metrics.training_failures.labels(event.model, event.failure).inc()
        log.warning("training failed", model=event.model, failure=event.failure, reason=event.reason,
                    request_id=event.retrain_request_id)
        if event.retrain_request_id is None:
            return
        if event.failure == "insufficient_data":
            _, _, flight, _ = self.store.state(event.model)
            if flight is not None and flight.request_id == event.retrain_request_id:
                self.store.finish(event.model, f"failed: {event.reason}")
            return
        if self.store.failed(event.model, event.retrain_request_id, event.failure, event.reason, event.occurred_at):
            self.notify("training_failed", event.model, {"request_id": event.retrain_request_id,
                                                         "failure": event.failure, "reason": event.reason})

    # acting ----------------------------------------------------------------------------------
    async def tick(self) -> None:
        for spec in self.specs.models:
            watch = self.observed[spec.name]
            upto = watch.seen
            try:
                try:
                    await self._tick(spec)
                finally:  # what was scored and consumed survives a restart
                    self.store.save_watch(spec.name, watch.state(), KEEP, watch.take_unsaved())
                    watch.evaluated = upto
            except (DriftInputError, ValueError) as exc:  # a window that cannot be judged waits
                log.warning("trigger evaluation skipped", model=spec.name, error=str(exc))
            except BrokerUnavailableError:
                raise
            except Exception:  # one model's failure must never stop every model's triggers
                log.exception("trigger evaluation failed", model=spec.name)

    async def _tick(self, spec: ModelSpec) -> None:
        config, _ = self.config(spec.name)
        watch = self.observed[spec.name]
        champion = self.champions.champion(spec.name)
        if champion is not None:
            self._challenge(spec, watch, champion)
            reference = self._reference(spec, config) if watch.version != champion.version else None
            if await asyncio.to_thread(score, spec, watch, champion, config.performance_window, reference):
                # a new champion: drift is measured against the holdout as it was at its promotion
                self.store.set_reference(spec.name, self.holdout.holdout_top_seq(spec.name))
            if watch.change is not None:
                if await self._record_change(spec, watch.change, watch.change_by):
                    watch.challengers = {}  # pairs of the concept that ended decide nothing about this one
                watch.change = None
            if await self._decide_on_live_evidence(spec, watch):
                return  # a new champion: everything else is evaluated against it from the next tick
            if watch.drift_due(config):
                _, _, _, reference_seq = self.store.state(spec.name)
                # The reference is the champion's concept: holdout rows up to its promotion, none from
                # before the latest change (rows of an ended concept would show that change forever).
                changes = self.holdout.changes(spec.name, limit=1) if spec.safeguard.judge_on_current_concept else []
                reference = self.holdout.holdout_until(spec.name, reference_seq, config.drift_window,
                                                       after_seq=changes[0].after_seq if changes else 0)
                watch.drift = await asyncio.to_thread(drift, spec, config, watch, reference)
                watch.checked_at = watch.seen
        now = self.clock()
        new, last_fired, in_flight, _ = self.store.state(spec.name)
        due_runs = self._due(spec.name, config, now) if self.running else ()
        if not config.data_change:
            watch.files.clear()  # nothing will consume them
        current = self._current_concept(spec)
        live = live_metric(spec, watch, champion)
        if live is not None:
            self.metrics.live_metric.labels(spec.name, live.metric).set(live.live)
        signals = Signals(now=now, new_samples=new, champion_since=champion.since if champion else None,
                          in_flight=in_flight, last_fired_at=last_fired, due=due_runs, drift=watch.drift, live=live,
                          rejected=self.holdout.rejection_streaks(spec.name, spec.training.holdout_fraction),
                          changed_files=dict(watch.files),
                          concept=self._concept(spec, champion, current), undecided=self.holdout.undecided(spec.name),
                          settling=self._settling(spec, current))
        assessment = evaluate(config, signals) if self.running or in_flight else Assessment(None)
        watch.held = assessment.held
        if assessment.gave_up is not None:
            log.error("retraining given up", model=spec.name, request_id=assessment.gave_up.request_id,
                      attempts=assessment.gave_up.attempts)
            gave_up = assessment.gave_up
            last = f" (the last: training failed, {gave_up.failure})" if gave_up.failure else ""
            self.store.finish(spec.name, f"given up after {gave_up.attempts} attempts{last}")
            self.notify("training_failed", spec.name, {"request_id": assessment.gave_up.request_id,
                                                       "kind": assessment.gave_up.kind,
                                                       "attempts": assessment.gave_up.attempts})
        if assessment.fire is not None:
            fire = assessment.fire
            attempts = in_flight.attempts + 1 if fire.retry_of and in_flight else 1
            if fire.kind == "drift":
                recent = list(watch.recent)[-config.drift_window:]
                await self._record_change(spec, [(s.sample_id, s.occurred_at) for s in recent],
                                          "the drift tests of inputs and labels")
            elif fire.kind == "performance" and not fire.evidence.get("change_detected"):
                # a significant drop is a change too: the concept the champion learnt no longer holds,
                # so the trainer's window and the judging start where its live error most likely rose
                await self._record_change(spec, watch.since_change(len(watch.signals) or fire.evidence["window"]),
                                          "a significant drop of the champion's live performance")
            await self._request(spec.name, fire.kind, fire.reason, self._with_change(spec, fire.kind, fire.evidence, champion),
                                attempts, fire.retry_of)
            if fire.kind == "drift":
                self.notify("drift", spec.name, {"reason": fire.reason, "evidence": fire.evidence})
            for run in due_runs:
                self.store.ran(spec.name, run.schedule, now)
            watch.consumed()

    def _challenge(self, spec: ModelSpec, watch: Observed, champion: Champion) -> None:
        """Keep one paired test per challenger of this champion; a new champion or challenger starts anew."""
        wanted = self.champions.challengers(spec.name, champion.version)
        kept = {c.version: c for c in watch.challengers.values() if c.champion_version == champion.version}
        watch.challengers = {
            version: kept.get(version) or Challenger(version, role, model, PairedTest(
                alpha=spec.safeguard.live_alpha, min_pairs=spec.safeguard.min_holdout), champion.version,
                fresh_after=self._trained_until(spec.name, champion, version))
            for version, role, model in wanted}

    def _trained_until(self, model: str, champion: Champion, version: int) -> datetime | None:
        """The newest sample either the champion or challenger ``version`` was trained with: a pair on an
        older one would score a model on rows it learnt (or on rows of the time it learnt)."""
        found = self.holdout.version(model, version)
        cutoffs = [c for c in (champion.trained_until, found.candidate.training.last_sample_at if found else None) if c]
        return max(cutoffs) if cutoffs else None

    async def _decide_on_live_evidence(self, spec: ModelSpec, watch: Observed) -> bool:
        """Promote a candidate significantly better than the champion on live labels; roll back a
        champion significantly worse than the one it replaced. True when a decision was made."""
        if self.live is None:
            return False
        for challenger in watch.challengers.values():
            if not challenger.test.better:
                continue
            if challenger.role == "candidate" and spec.safeguard.live_promotion:
                await self.live.promote_on_live_evidence(spec.name, challenger)
            elif challenger.role == "previous" and spec.safeguard.live_rollback:
                await self.live.roll_back_on_live_evidence(spec.name, challenger)
            else:
                continue
            watch.challengers = {}  # they challenged the champion that was
            return True
        return False

    def _with_change(self, spec: ModelSpec, kind: str, evidence: dict[str, Any],
                     champion: Champion | None) -> dict[str, Any]:
        """The evidence, with the concept change the champion has seen (for catching up: the one it was
        trained after), if any: the trainer's window for this request starts there (the rows before it
        are of a concept that ended)."""
        latest = self.holdout.changes(spec.name, limit=1) if spec.safeguard.judge_on_current_concept else []
        if not latest or champion is None or (latest[0].detected_at < champion.since and kind != "catch_up"):
            return evidence
        return {**evidence, "change": {"changed_at": latest[0].changed_at.isoformat(),
                                       "after_seq": latest[0].after_seq, "detector": latest[0].detector}}

    def _reference(self, spec: ModelSpec, config: TriggersSpec) -> Holdout:
        """A new champion's reference errors: the newest ``performance_window`` holdout rows of the current
        concept, oldest first (rows it was judged on, never trained on)."""
        changes = self.holdout.changes(spec.name, limit=1) if spec.safeguard.judge_on_current_concept else []
        newest = self.holdout.holdout_until(spec.name, None, config.performance_window,
                                            after_seq=changes[0].after_seq if changes else 0)
        return Holdout(newest.ids[::-1], newest.rows[::-1], newest.labels[::-1])  # type: ignore[arg-type]

    def _current_concept(self, spec: ModelSpec) -> tuple[Change, int] | None:
        """The latest detected change and the holdout rows that followed it (None when the spec does
        not judge on the current concept, or no change was detected): read once per evaluation."""
        latest = self.holdout.changes(spec.name, limit=1) if spec.safeguard.judge_on_current_concept else []
        return (latest[0], self.holdout.holdout_size(spec.name, latest[0].after_seq)) if latest else None

    @staticmethod
    def _settling(spec: ModelSpec, current: tuple[Change, int] | None) -> tuple[int, int] | None:
        """After the latest detected change, while fewer than ``min_holdout`` holdout rows followed it:
        (rows so far, min_holdout)."""
        if current is None or current[1] >= spec.safeguard.min_holdout:
            return None
        return current[1], spec.safeguard.min_holdout

    def _concept(self, spec: ModelSpec, champion: Champion | None,
                 current: tuple[Change, int] | None) -> tuple[int, int] | None:
        """When the champion was trained after the latest detected change: the training rows of the
        current concept there are now (estimated from its holdout rows) and the rows it learnt from."""
        if current is None or champion is None or current[0].detected_at > champion.since:
            return None
        version = self.holdout.version(spec.name, champion.version)
        if version is None:
            return None
        share = spec.training.holdout_fraction
        rows = round(current[1] * (1 - share) / share)
        # the trainer reads at most window_max_rows: a catch-up cannot learn from more than that
        return min(rows, spec.training.window_max_rows), version.candidate.training.rows_trained

    async def _record_change(self, spec: ModelSpec, since: list[tuple[str, datetime]], detector: str) -> bool:
        """Record a concept change that began with the first of ``since`` (the samples after it): the
        holdout rows from the first of them on are the current concept. A change located fewer than
        ``min_holdout`` holdout rows after the latest recorded one (or before it) is that change again:
        ADWIN alarms more than once after a change, a second detector may alarm on it too, each located a
        few rows apart, and a concept the safeguard could not judge on its own is no new one. A recorded
        change is published (``ConceptChanged``): the trainer starts every training after it there, its
        own ``training.min_new_samples`` path included."""
        first = next((i for i, _ in since if is_holdout(i, spec.training.holdout_fraction, spec.name)), None)
        seq = self.holdout.holdout_seq(spec.name, first) if first is not None else None
        after = seq - 1 if seq is not None else self.holdout.holdout_top_seq(spec.name)
        latest = self.holdout.changes(spec.name, limit=1)
        if latest and (self.holdout.holdout_size(spec.name, latest[0].after_seq)
                       - self.holdout.holdout_size(spec.name, after)) < spec.safeguard.min_holdout:
            return False
        self.holdout.record_change(spec.name, after, since[0][1], detector)
        log.info("concept change recorded", model=spec.name, after_seq=after, changed_at=since[0][1].isoformat(),
                 detector=detector)
        await self.publisher.publish(ConceptChanged(model=spec.name, changed_at=since[0][1], detector=detector))
        return True

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
        watch = self.observed[model]
        champion = self.champions.champion(model)
        live = live_metric(self.specs.get(model), watch, champion)
        return {
            "model": model, "running": self.running, "config_source": source, "new_samples": new,
            "observed": watch.seen, "evaluated": watch.evaluated,
            "last_fired_at": last_fired.isoformat() if last_fired else None,
            "in_flight": None if in_flight is None else {**in_flight.__dict__,
                                                         "requested_at": in_flight.requested_at.isoformat()},
            "held": list(watch.held), "drift": watch.drift,
            "live": None if live is None else live.__dict__,
            "schedules": self.schedules(model), "fired": self.store.history(model),
            "challengers": [c.as_dict() for c in watch.challengers.values()],
            "shadow": {"received": watch.shadows.received, "waiting": len(watch.shadows.rows)},
            "changes": [{"after_seq": c.after_seq, "changed_at": c.changed_at.isoformat(),
                         "detected_at": c.detected_at.isoformat(), "detector": c.detector}
                        for c in self.holdout.changes(model)],
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
