"""Read models of the control plane: a model's status, its versions with lineage, live performance,
and the champion gauges. Reads only; nothing here changes state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from refit.metrics import Metrics
from refit.specs import ModelSpecs
from services.monitor.feedback import FeedbackStore
from services.monitor.registry import Registry, StoredDecision


class Views:
    def __init__(self, specs: ModelSpecs, registry: Registry, feedback: FeedbackStore, live_window: int) -> None:
        self.specs, self.registry, self.feedback, self.live_window = specs, registry, feedback, live_window

    def summary(self, model: str) -> dict[str, Any]:
        spec = self.specs.get(model)
        serving = self.registry.serving(model)
        champion = None
        if serving is not None:
            version = self.registry.version(model, serving.version)
            champion = {"version": serving.version, "digest": serving.digest, "since": serving.decided_at.isoformat(),
                        "decision": serving.event_type, "scores": version.scores if version else None}
        versions = self.registry.versions(model)
        return {
            "name": model, "task": spec.task, "input": spec.input.kind, "champion": champion,
            "holdout_size": self.registry.holdout_size(model),
            "versions": len(versions), "pending": sum(v.status == "pending" for v in versions),
            "checked_at": datetime.now(UTC).isoformat(),
        }

    def versions(self, model: str) -> list[dict[str, Any]]:
        """Every version with its lineage: data window, filters, spec hash, code version, data fingerprint, scores."""
        serving = self.registry.serving(model)
        return [{
            "version": v.version, "status": v.status, "champion": serving is not None and serving.version == v.version,
            "digest": v.digest, "created_at": v.created_at, "candidate_id": v.candidate_id, "scores": v.scores,
            "trigger": v.candidate.trigger, "retrain_request_id": v.candidate.retrain_request_id,
            "training": v.candidate.training.model_dump(mode="json"),
            "conversion": v.candidate.conversion.model_dump(mode="json"),
        } for v in self.registry.versions(model)]

    def live(self, model: str) -> dict[str, Any]:
        """Live performance from joined feedback, per version, beside each version's holdout scores."""
        spec = self.specs.get(model)
        live = self.feedback.live(model, self.live_window)
        serving = self.registry.serving(model)
        champion = self.registry.version(model, serving.version) if serving is not None else None
        by_version = {v.version: v for v in live.versions}
        versions = [{"version": v.version, "champion": champion is not None and v.version == champion.version,
                     "joined": v.joined, "window": v.window, "live_scores": v.scores,
                     "holdout_scores": stored.scores if (stored := self.registry.version(model, v.version)) else None}
                    for v in live.versions]
        return {
            "name": model, "task": spec.task, "window": self.live_window, "joined": live.joined,
            "pending_predictions": live.pending_predictions, "pending_labels": live.pending_labels,
            "conflicting_labels": live.conflicting_labels,
            "champion": None if champion is None else {
                "version": champion.version, "holdout_scores": champion.scores,
                "live_scores": by_version[champion.version].scores if champion.version in by_version else {}},
            "versions": versions, "checked_at": datetime.now(UTC).isoformat(),
        }

    def observe_champions(self, metrics: Metrics) -> None:
        """Set each model's champion version and age gauges, and its count of conflicting labels."""
        now = datetime.now(UTC)
        for name in self.specs.names():
            metrics.feedback_conflicts.labels(name).set(self.feedback.conflicting_labels(name))
            serving = self.registry.serving(name)
            if serving is not None:
                metrics.champion_version.labels(name).set(serving.version)
                metrics.model_age.labels(name).set((now - serving.decided_at).total_seconds())


def decision_json(stored: StoredDecision) -> dict[str, Any]:
    return {**orjson.loads(stored.payload), "published": stored.published}
