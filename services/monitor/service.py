"""The monitor's work: keep the holdout, register candidates, judge them, publish signed decisions.

Decisions go through an outbox: written to SQLite first, then published, then
marked published, so a crash between the two publishes it at the next start.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from refit import signing, topics
from refit.artifacts import LocalArtifactStore
from refit.core.schedule import due
from refit.core.schema import validate_features, validate_label, validate_text
from refit.core.split import is_holdout
from refit.errors import (ArtifactError, BrokerUnavailableError, ModelLoadError, RefitError, SchemaError,
                          UnknownModelError)
from refit.events import (CandidateRejected, CandidateTrained, ModelPromoted, ModelRolledBack, PredictionServed,
                          RetrainRequested, SampleIngested, parse_event)
from refit.kafka import Incoming, Publisher
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.settings import MonitorSettings
from refit.specs import ModelSpecs, Schedule
from services.monitor.feedback import FeedbackStore, LabeledRow, PredictedRow, labeled_row, predicted_rows
from services.monitor.judge import assess
from services.monitor.notify import Notifier
from services.monitor.registry import Registry, StoredDecision, Version
from services.monitor.reports import report
from services.monitor.trigger_store import TriggerStore
from services.monitor.triggers import Champion, Triggers

log = structlog.get_logger("monitor")


class RollbackError(RefitError, ValueError):
    """A rollback that cannot be done: no champion, no earlier one, or a version never promoted."""


class Monitor:
    def __init__(self, settings: MonitorSettings, specs: ModelSpecs, registry: Registry,
                 artifacts: LocalArtifactStore, publisher: Publisher, feedback: FeedbackStore,
                 trigger_store: TriggerStore, metrics: Metrics) -> None:
        self.settings, self.specs, self.registry, self.feedback = settings, specs, registry, feedback
        self.artifacts, self.publisher, self.metrics = artifacts, publisher, metrics
        self.notifier = Notifier(settings.webhook_urls, settings.webhook_secret.get_secret_value().encode())
        self.triggers = Triggers(specs, trigger_store, registry, publisher, self.champion, metrics=metrics,
                                 notify=self.notifier.notify)
        self._report_schedule = Schedule(name="report", cron=settings.report_cron, timezone="UTC")
        self.key = settings.decision_signing_key.get_secret_value().encode()
        self.wake = asyncio.Event()
        self._decide = asyncio.Lock()
        self._models: dict[str, OnnxModel] = {}
        self._deferred: set[str] = set()

    # consuming ------------------------------------------------------------------------------
    async def handle(self, items: list[Incoming]) -> dict[int, str]:
        rejected: dict[int, str] = {}
        holdout: list[SampleIngested] = []
        valid: list[SampleIngested] = []
        predicted: list[PredictedRow] = []
        labeled: list[LabeledRow] = []
        for i, item in enumerate(items):
            event = item.event
            try:
                spec = self.specs.get(event.model)
                if isinstance(event, CandidateTrained):
                    version = self.registry.add_candidate(event)
                    if self.answered_before(version) is None:  # a duplicate answers no request in flight
                        self.triggers.candidate_arrived(event.model, event.candidate_id)
                    continue
                if isinstance(event, PredictionServed):
                    predicted.extend(predicted_rows(spec.task, event))
                    continue
                assert isinstance(event, SampleIngested)
                if spec.input.kind == "text":
                    validate_text(spec, event.text)
                else:
                    validate_features(spec, event.features)
                validate_label(spec, event.label)
            except (UnknownModelError, SchemaError) as exc:
                rejected[i] = str(exc)
                continue
            valid.append(event)
            if (label := labeled_row(event)) is not None:
                labeled.append(label)
            if is_holdout(event.sample_id, spec.training.holdout_fraction, spec.name):
                holdout.append(event)
        self.registry.add_holdout(holdout)
        self.triggers.observe(valid)
        if predicted or labeled:
            await asyncio.to_thread(self.feedback.record, predicted, labeled)
        self.wake.set()
        return rejected

    # judging --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.publish_outbox()
                for version in self.registry.pending():
                    await self.judge(version)
            except BrokerUnavailableError as exc:
                log.warning("decision not yet published", error=str(exc))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.judge_interval_s)
            except TimeoutError:
                pass

    async def run_triggers(self, stop: asyncio.Event) -> None:
        """Evaluate every model's triggers every ``trigger_interval_s``; refresh the champion gauges."""
        while not stop.is_set():
            try:
                self.observe_champions()
                self.send_report_if_due()
                await self.triggers.tick()
            except BrokerUnavailableError as exc:
                log.warning("retrain request not yet published", error=str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.trigger_interval_s)
            except TimeoutError:
                pass

    def send_report_if_due(self) -> None:
        """The periodic report goes to the webhooks when its schedule comes due (missed ones: once)."""
        if not self.settings.webhook_urls:
            return
        now = datetime.now(UTC)
        last = self.triggers.store.get("report_last_run")
        if last is None:
            self.triggers.store.put("report_last_run", now.isoformat())
            return
        if due(self._report_schedule, datetime.fromisoformat(last), now) is not None:
            self.notifier.notify("report", None, report(self.specs.names(), self.settings.report_days, now,
                                                        self.registry, self.triggers.store))
            self.triggers.store.put("report_last_run", now.isoformat())

    def observe_champions(self) -> None:
        now = datetime.now(UTC)
        for name in self.specs.names():
            serving = self.registry.serving(name)
            if serving is not None:
                self.metrics.champion_version.labels(name).set(serving.version)
                since = parse_event(serving.payload).occurred_at
                self.metrics.model_age.labels(name).set((now - since).total_seconds())

    def champion(self, model: str) -> Champion | None:
        """The serving champion with its loaded model and holdout scores (None before the first)."""
        serving = self.registry.serving(model)
        if serving is None:
            return None
        version = self.registry.version(model, serving.version)
        event = parse_event(serving.payload)
        try:
            loaded = self._load(getattr(event, "digest"))
        except (ArtifactError, ModelLoadError):
            return None
        return Champion(serving.version, event.occurred_at, loaded, (version.scores if version else None) or {})

    def _load(self, digest: str) -> OnnxModel:
        model = self._models.get(digest)
        if model is None:
            model = OnnxModel(self.artifacts.get(digest))
            if len(self._models) >= 16:
                self._models.pop(next(iter(self._models)))
            self._models[digest] = model
        return model

    def _load_or_error(self, digest: str) -> OnnxModel | Exception:
        try:
            return self._load(digest)
        except (ArtifactError, ModelLoadError) as exc:
            return exc

    def answered_before(self, version: Version) -> Version | None:
        """The earlier version of the same model and retrain request, if ``version`` is a second
        candidate for it (the trainer, killed after publishing a candidate and before marking its
        request done, trains the request again after its restart)."""
        request_id = version.candidate.retrain_request_id
        first = self.registry.first_for_request(version.model, request_id) if request_id else None
        return first if first is not None and first.version < version.version else None

    async def judge(self, version: Version) -> None:
        spec = self.specs.get(version.model)
        first = self.answered_before(version)
        if first is not None:
            await self.refuse_duplicate(version, first)
            return
        holdout = self.registry.holdout(spec.name, spec.training.holdout_max_rows)
        if len(holdout.ids) < spec.safeguard.min_holdout:
            if version.candidate_id not in self._deferred:
                self._deferred.add(version.candidate_id)
                log.info("decision deferred: holdout too small", model=spec.name, version=version.version,
                         holdout=len(holdout.ids), minimum=spec.safeguard.min_holdout)
            return
        async with self._decide:
            champion = self.registry.serving(spec.name)
            champion_digest = orjson.loads(champion.payload)["digest"] if champion else None
            candidate_model = await asyncio.to_thread(self._load_or_error, version.digest)
            champion_model = await asyncio.to_thread(self._load, champion_digest) if champion_digest else None
            outcome = await asyncio.to_thread(assess, spec, version.candidate, candidate_model, champion_model,
                                              holdout)
            cls = ModelPromoted if outcome.promote else CandidateRejected
            event = cls(
                model=spec.name, sequence=self.registry.next_sequence(spec.name),
                candidate_id=version.candidate_id, version=version.version, digest=version.digest,
                artifact_uri=f"{self.settings.public_url}/v1/artifacts/{version.digest}", task=spec.task,
                champion_version=champion.version if champion else None, holdout=outcome.holdout,
                candidate_scores=outcome.candidate_scores, champion_scores=outcome.champion_scores,
                intervals=outcome.intervals, checks=outcome.checks, reasons=outcome.reasons,
            )
            payload = event.to_bytes()
            self.registry.record_decision(event, version.version, "promoted" if outcome.promote else "rejected",
                                          outcome.candidate_scores, payload, signing.sign(self.key, payload))
            self.metrics.decisions.labels(spec.name, "promoted" if outcome.promote else "rejected").inc()
            self.notifier.notify("promoted" if outcome.promote else "rejected", spec.name, orjson.loads(payload))
            log.info("decided", model=spec.name, version=version.version, decision=event.event_type,
                     event_id=str(event.event_id), scores=outcome.candidate_scores, reasons=outcome.reasons)
        await self.publish_outbox()

    async def refuse_duplicate(self, version: Version, first: Version) -> None:
        """Reject a second candidate for one retrain request without judging it, in a signed decision
        naming the version that answered the request.

        One request gets one judgement: judged too, a duplicate would give the request a second
        chance at the safeguard's tolerance (a trainer crashing in a loop would give it any number),
        and, its bytes often identical, swap inference to the same model again as a new version.
        The rejection keeps the audit trail whole: every candidate on the topic has its decision.
        """
        spec = self.specs.get(version.model)
        async with self._decide:
            champion = self.registry.serving(spec.name)
            event = CandidateRejected(
                model=spec.name, sequence=self.registry.next_sequence(spec.name),
                candidate_id=version.candidate_id, version=version.version, digest=version.digest,
                artifact_uri=f"{self.settings.public_url}/v1/artifacts/{version.digest}", task=spec.task,
                champion_version=champion.version if champion else None,
                reasons=[f"duplicate: retrain request {version.candidate.retrain_request_id} was already answered "
                         f"by v{first.version} (candidate {first.candidate_id}); a second candidate for one "
                         "request is not judged"],
            )
            payload = event.to_bytes()
            self.registry.record_decision(event, version.version, "rejected", None, payload,
                                          signing.sign(self.key, payload))
            self.metrics.decisions.labels(spec.name, "duplicate").inc()
            self.notifier.notify("rejected", spec.name, orjson.loads(payload))
            log.warning("duplicate candidate rejected unjudged", model=spec.name, version=version.version,
                        first=first.version, request_id=version.candidate.retrain_request_id,
                        event_id=str(event.event_id))
        await self.publish_outbox()

    async def rollback(self, model: str, to_version: int | None, reason: str,
                       requested_by: str | None) -> ModelRolledBack:
        """Make an earlier champion (the previous one, or ``to_version``) the champion again."""
        spec = self.specs.get(model)
        async with self._decide:
            history = self.registry.serving_history(model)
            if not history:
                raise RollbackError(f"model {model!r} has no champion to roll back from")
            current = history[0].version
            if to_version is None:
                earlier = [d.version for d in history if d.version != current]
                if not earlier:
                    raise RollbackError(f"model {model!r} has had no champion before v{current}")
                to_version = earlier[0]
            if to_version == current:
                raise RollbackError(f"v{to_version} is already the champion of {model!r}")
            if to_version not in {d.version for d in history}:
                raise RollbackError(f"v{to_version} of {model!r} was never a champion; only champions can return")
            target = self.registry.version(model, to_version)
            assert target is not None
            event = ModelRolledBack(
                model=model, sequence=self.registry.next_sequence(model), candidate_id=target.candidate_id,
                version=target.version, digest=target.digest, task=spec.task,
                artifact_uri=f"{self.settings.public_url}/v1/artifacts/{target.digest}",
                champion_version=current, candidate_scores=target.scores or {}, requested_by=requested_by,
                reasons=[f"rollback from v{current} to v{target.version}: {reason}"],
            )
            payload = event.to_bytes()
            self.registry.record_decision(event, target.version, None, None, payload, signing.sign(self.key, payload))
            self.metrics.decisions.labels(model, "rolled_back").inc()
            self.notifier.notify("rolled_back", model, orjson.loads(payload))
            log.info("rolled back", model=model, version=target.version, previous=current,
                     event_id=str(event.event_id), reason=reason)
        await self.publish_outbox()
        return event

    def versions(self, model: str) -> list[dict[str, Any]]:
        """Every version with its lineage: data window, filters, spec hash, code version, scores."""
        serving = self.registry.serving(model)
        return [{
            "version": v.version, "status": v.status, "champion": serving is not None and serving.version == v.version,
            "digest": v.digest, "created_at": v.created_at, "candidate_id": v.candidate_id, "scores": v.scores,
            "trigger": v.candidate.trigger, "retrain_request_id": v.candidate.retrain_request_id,
            "training": v.candidate.training.model_dump(mode="json"),
            "conversion": v.candidate.conversion.model_dump(mode="json"),
        } for v in self.registry.versions(model)]

    async def publish_outbox(self) -> None:
        for stored in self.registry.unpublished():
            await self.publisher.publish_raw(
                topics.DECISIONS, stored.model.encode(), stored.payload,
                [(signing.HEADER, stored.signature.encode())])
            self.registry.mark_published(stored.model, stored.sequence)

    # control plane --------------------------------------------------------------------------
    async def request_retrain(self, model: str, reason: str, requested_by: str | None) -> RetrainRequested:
        self.specs.get(model)
        return await self.triggers.manual(model, reason, requested_by)

    def summary(self, model: str) -> dict[str, Any]:
        spec = self.specs.get(model)
        serving = self.registry.serving(model)
        champion = None
        if serving is not None:
            event = parse_event(serving.payload)
            version = self.registry.version(model, serving.version)
            champion = {"version": serving.version, "digest": getattr(event, "digest"),
                        "since": event.occurred_at.isoformat(), "decision": serving.event_type,
                        "scores": version.scores if version else None}
        versions = self.registry.versions(model)
        return {
            "name": model, "task": spec.task, "input": spec.input.kind, "champion": champion,
            "holdout_size": self.registry.holdout_size(model),
            "versions": len(versions), "pending": sum(v.status == "pending" for v in versions),
            "checked_at": datetime.now(UTC).isoformat(),
        }

    def live(self, model: str) -> dict[str, Any]:
        """Live performance from joined feedback, per version, beside each version's holdout scores."""
        spec = self.specs.get(model)
        window = self.settings.live_window
        live = self.feedback.live(model, window)
        serving = self.registry.serving(model)
        champion = self.registry.version(model, serving.version) if serving is not None else None
        by_version = {v.version: v for v in live.versions}
        versions = [{"version": v.version, "champion": champion is not None and v.version == champion.version,
                     "joined": v.joined, "window": v.window, "live_scores": v.scores,
                     "holdout_scores": stored.scores if (stored := self.registry.version(model, v.version)) else None}
                    for v in live.versions]
        return {
            "name": model, "task": spec.task, "window": window, "joined": live.joined,
            "pending_predictions": live.pending_predictions, "pending_labels": live.pending_labels,
            "champion": None if champion is None else {
                "version": champion.version, "holdout_scores": champion.scores,
                "live_scores": by_version[champion.version].scores if champion.version in by_version else {}},
            "versions": versions, "checked_at": datetime.now(UTC).isoformat(),
        }


def decision_json(stored: StoredDecision) -> dict[str, Any]:
    return {**orjson.loads(stored.payload), "published": stored.published}
