"""Deciding: every pending candidate becomes one recorded, signed, published decision; so does a rollback.

Decisions go through an outbox: recorded in the registry (sequence, bytes and signature in one
write), then published, then marked published, so a crash between the two publishes it at the
next start. One decision at a time: the champion a judgement compares with is the one it replaces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from refit import signing, tracing
from refit.core.retention import rollback_reachable
from refit.errors import BrokerUnavailableError, RefitError
from refit.events import (CandidateRejected, Decision, JudgingWindow, LiveEvidence, ModelPromoted, ModelRolledBack,
                          parse_event)
from refit.kafka import Publisher
from refit.lifecycle import pause
from refit.metrics import Metrics
from refit.settings import MonitorSettings
from refit.specs import ModelSpec, ModelSpecs
from services.monitor.challengers import Challenger
from services.monitor.judge import Judgement, assess
from services.monitor.notify import Notifier
from services.monitor.registry import Holdout, Registry, Version
from services.monitor.sessions import Sessions

log = structlog.get_logger("monitor.decider")


class RollbackError(RefitError, ValueError):
    """A rollback that cannot be done: no champion, no earlier one, or a version never promoted."""


class Decider:
    """Judges pending candidates, refuses duplicates and rolls back, each into one signed decision.

    Over 80 lines: the three kinds of decision share one lock (one decision at a time), one identity
    of the version decided and one outbox; those shared parts are what the class is for.
    """

    def __init__(self, settings: MonitorSettings, specs: ModelSpecs, registry: Registry, sessions: Sessions,
                 publisher: Publisher, metrics: Metrics, notifier: Notifier) -> None:
        self.settings, self.specs, self.registry, self.sessions = settings, specs, registry, sessions
        self.publisher, self.metrics, self.notifier = publisher, metrics, notifier
        self.key = settings.decision_signing_key.get_secret_value().encode()
        self.wake = asyncio.Event()  # set by intake when a candidate or holdout rows arrive
        # Tracing (refit.tracing): each candidate's traceparent (intake fills it) and each decision's.
        self.traces: dict[str, str] = {}
        self.decision_traces: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
        # Called with every decision once recorded (MLflow's outbox, services/monitor/mlflow_sync.py).
        self.followers: list[Callable[[Decision], None]] = []
        # The model's configuration version at run time (services/monitor/runconfig.py), in every decision.
        self.config_version: Callable[[str], int] = lambda model: 0
        self._one_at_a_time = asyncio.Lock()
        self._deferred: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish what the outbox holds and decide every pending candidate, at every wake-up."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.publish_outbox()
                for version in self.registry.pending():
                    await self.decide(version)
            except BrokerUnavailableError as exc:
                log.warning("decision not yet published", error=str(exc))
            await pause(stop, self.settings.judge_interval_s, self.wake)

    async def decide(self, version: Version) -> None:
        """A pending candidate to its decision: a duplicate is refused unjudged; a holdout too small
        defers it; otherwise it is judged against the champion and promoted or rejected."""
        spec = self.specs.get(version.model)
        if version.duplicate_of is not None:
            await self._refuse_duplicate(spec, version)
            return
        holdout, window = self._holdout(spec)
        if len(holdout.ids) < spec.safeguard.min_holdout:
            if version.candidate_id not in self._deferred:
                self._deferred.add(version.candidate_id)
                log.info("decision deferred: holdout too small", model=spec.name, version=version.version,
                         holdout=len(holdout.ids), minimum=spec.safeguard.min_holdout, window=window.reason)
            return
        async with self._one_at_a_time:
            with tracing.span("judge", self.traces.pop(version.candidate_id, None) if tracing.enabled else None,
                              model=spec.name, version=version.version) as current:
                champion = self.registry.serving(spec.name)
                judgement = await self._judge(spec, version, champion.digest if champion else None, holdout)
                judgement = judgement.model_copy(update={"window": window})
                kind = ModelPromoted if judgement.promote else CandidateRejected
                status = "promoted" if judgement.promote else "rejected"
                event = self.registry.record_decision(spec.name, lambda sequence: kind(
                    **self._identity(spec, version, sequence), champion_version=champion.version if champion else None,
                    **judgement.evidence()), self.sign, status)
                self._announce(event, status)
                if current is not None:
                    self.decision_traces[event.model, event.sequence] = tracing.headers(current)
        await self.publish_outbox()

    def _holdout(self, spec: ModelSpec) -> tuple[Holdout, JudgingWindow]:
        """The holdout rows to judge on: after the model's latest concept change, when one was detected
        (and the spec judges on the current concept); else the newest rows."""
        limit = spec.training.holdout_max_rows
        changes = self.registry.changes(spec.name, limit=1) if spec.safeguard.judge_on_current_concept else []
        if not changes:
            holdout = self.registry.holdout(spec.name, limit)
            return holdout, JudgingWindow(rows=len(holdout.ids), reason="the newest holdout rows: no concept "
                                                                        "change detected")
        change = changes[0]
        holdout = self.registry.holdout_after(spec.name, change.after_seq, limit)
        return holdout, JudgingWindow(
            rows=len(holdout.ids), after_seq=change.after_seq, changed_at=change.changed_at,
            reason=f"the current concept: holdout rows that arrived after the change detected by "
                   f"{change.detector} at {change.detected_at.isoformat()} (rows of the concept that ended "
                   "would judge candidates on data that no longer holds)")

    async def _judge(self, spec: ModelSpec, version: Version, champion_digest: str | None,
                     holdout: Holdout) -> Judgement:
        """The safeguard's judgement; a judging that fails is this candidate's rejection, with the
        reason, never the end of judging (the next candidates are judged as usual)."""
        try:
            candidate = await asyncio.to_thread(self.sessions.load_or_error, version.digest)
            champion = await asyncio.to_thread(self.sessions.load, champion_digest) if champion_digest else None
            return await asyncio.to_thread(assess, spec, version.candidate, candidate, champion, holdout)
        except Exception as exc:  # noqa: BLE001 - any failure is this candidate's, and recorded
            log.exception("judging failed: the candidate is rejected", model=spec.name, version=version.version)
            self.metrics.decisions.labels(spec.name, "judging_failed").inc()
            return Judgement(promote=False, reasons=[f"judging failed: {type(exc).__name__}: {exc}; the candidate "
                                                     "is rejected and the champion stays"])

    async def _refuse_duplicate(self, spec: ModelSpec, version: Version) -> None:
        """Reject a second candidate for one retrain request without judging it, in a signed decision
        naming the version that answered the request.

        One request gets one judgement: judged too, a duplicate would give the request a second
        chance at the safeguard's tolerance (a trainer crashing in a loop would give it any number),
        and, its bytes often identical, swap inference to the same model again as a new version.
        The rejection keeps the audit trail whole: every candidate on the topic has its decision.
        """
        first = self.registry.version(spec.name, version.duplicate_of or 0)
        assert first is not None
        reason = (f"duplicate: retrain request {version.candidate.retrain_request_id} was already answered by "
                  f"v{first.version} (candidate {first.candidate_id}); a second candidate for one request is "
                  "not judged")
        async with self._one_at_a_time:
            champion = self.registry.serving(spec.name)
            event = self.registry.record_decision(spec.name, lambda sequence: CandidateRejected(
                **self._identity(spec, version, sequence), champion_version=champion.version if champion else None,
                reasons=[reason]), self.sign, "rejected")
            self._announce(event, "duplicate")
        await self.publish_outbox()

    async def promote_on_live_evidence(self, model: str, challenger: Challenger) -> None:
        """Promote a candidate significantly better than the champion on live labeled traffic, with
        the sequential test's evidence (whatever the holdout said of it)."""
        spec = self.specs.get(model)
        async with self._one_at_a_time:
            champion = self.registry.serving(model)
            version = self.registry.version(model, challenger.version)
            if champion is None or champion.version != challenger.champion_version or version is None \
                    or version.status not in ("rejected", "pending"):
                return  # the champion or the candidate changed since the test ran: nothing to decide
            live = challenger.evidence()
            event = self.registry.record_decision(model, lambda sequence: ModelPromoted(
                **self._identity(spec, version, sequence), champion_version=champion.version,
                candidate_scores=version.scores or {}, live=live,
                reasons=[f"better than champion v{champion.version} on live labeled traffic: {live.wins} of "
                         f"{live.pairs} paired labels better, {live.losses} worse; evidence {live.e_value:.3g} "
                         f">= 1/alpha = {1 / live.alpha:.3g} (anytime-valid sequential test)"]),
                self.sign, "promoted")
            self._announce(event, "promoted_live")
        await self.publish_outbox()

    async def roll_back_on_live_evidence(self, model: str, challenger: Challenger) -> None:
        """Roll back to the champion a promotion replaced, once the new one is significantly worse than
        it on live labeled traffic."""
        live = challenger.evidence()
        try:
            await self.rollback(model, challenger.version, f"v{challenger.champion_version} is worse than "
                                f"v{challenger.version} on live labeled traffic: {live.wins} of {live.pairs} "
                                f"paired labels better for v{challenger.version}, {live.losses} worse; evidence "
                                f"{live.e_value:.3g} >= 1/alpha = {1 / live.alpha:.3g}", "monitor: live evidence",
                                live=live, expect_champion=challenger.champion_version)
        except RollbackError as exc:
            log.info("live rollback not made", model=model, reason=str(exc))

    async def rollback(self, model: str, to_version: int | None, reason: str,
                       requested_by: str | None, live: LiveEvidence | None = None,
                       expect_champion: int | None = None) -> ModelRolledBack:
        """Make an earlier champion (the previous one, or ``to_version``) the champion again."""
        spec = self.specs.get(model)
        async with self._one_at_a_time:
            history = self.registry.serving_history(model)
            if not history:
                raise RollbackError(f"model {model!r} has no champion to roll back from")
            current = history[0].version
            if expect_champion is not None and current != expect_champion:
                raise RollbackError(f"v{expect_champion} of {model!r} is no longer the champion")
            if to_version is None:
                earlier = [d.version for d in history if d.version != current]
                if not earlier:
                    raise RollbackError(f"model {model!r} has had no champion before v{current}")
                to_version = earlier[0]
            if to_version == current:
                raise RollbackError(f"v{to_version} is already the champion of {model!r}")
            if to_version not in {d.version for d in history}:
                raise RollbackError(f"v{to_version} of {model!r} was never a champion; only champions can return")
            keep = spec.retention.keep_versions
            if to_version not in rollback_reachable([d.version for d in history], keep):
                raise RollbackError(f"v{to_version} of {model!r} is older than the champions of its newest {keep} "
                                    "serving decisions, whose artifacts retention keeps (retention.keep_versions)")
            target = self.registry.version(model, to_version)
            assert target is not None
            event = self.registry.record_decision(model, lambda sequence: ModelRolledBack(
                **self._identity(spec, target, sequence), champion_version=current,
                candidate_scores=target.scores or {}, requested_by=requested_by, live=live,
                reasons=[f"rollback from v{current} to v{target.version}: {reason}"]), self.sign)
            self._announce(event, "rolled_back_live" if live is not None else "rolled_back")
        try:
            await self.publish_outbox()
        except BrokerUnavailableError as exc:
            # Recorded and signed: the rollback is made, whatever the broker does now. The run loop
            # publishes the outbox at its next turn (answering 503 "nothing was accepted" here, while a
            # broker restarted, was false: the decision then reached inference anyway).
            log.warning("rollback recorded, not yet published", model=model, error=str(exc))
            self.wake.set()
        return event

    def _identity(self, spec: ModelSpec, version: Version, sequence: int) -> dict[str, Any]:
        """What every decision about ``version`` names: which model, version, bytes and where to fetch them."""
        return {"model": spec.name, "sequence": sequence, "candidate_id": version.candidate_id,
                "version": version.version, "digest": version.digest, "task": spec.task,
                "artifact_uri": f"{self.settings.public_url}/v1/artifacts/{version.digest}",
                "config_version": self.config_version(spec.name)}

    def sign(self, payload: bytes) -> str:
        return signing.sign(self.key, payload)

    def _announce(self, event: Decision, outcome: str) -> None:
        """Count, notify and log a recorded decision."""
        self.metrics.decisions.labels(event.model, outcome).inc()
        kind = {"promoted": "promoted", "promoted_live": "promoted", "rolled_back": "rolled_back",
                "rolled_back_live": "rolled_back"}.get(outcome, "rejected")
        self.notifier.notify(kind, event.model, orjson.loads(event.to_bytes()))
        for follower in self.followers:
            follower(event)
        log.info("decided", model=event.model, version=event.version, decision=event.event_type, outcome=outcome,
                 event_id=str(event.event_id), scores=event.candidate_scores, reasons=event.reasons)

    async def publish_outbox(self) -> None:
        for stored in self.registry.unpublished():
            # the payload exactly as signed; its CloudEvents headers from the event it holds
            event = parse_event(stored.payload)
            traced = self.decision_traces.pop((stored.model, stored.sequence), [])
            await self.publisher.publish_many_raw([self.publisher.record(
                event, stored.payload, [(signing.HEADER, stored.signature.encode()), *traced])])
            self.registry.mark_published(stored.model, stored.sequence)

