"""Retention: remove the artifacts no model keeps any more (``refit.core.retention``) and the rows of the
holdout and of the histories beyond what each model's ``retention`` keeps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from refit.artifacts import LocalArtifactStore
from refit.core.retention import Held, collectable
from refit.metrics import Metrics, retired
from refit.specs import ModelSpecs
from services.monitor.registry import Registry
from services.monitor.trigger_store import TriggerStore

log = structlog.get_logger("monitor")


@dataclass(frozen=True)
class Freed:
    """What one collection removed."""

    digests: tuple[str, ...]
    bytes: int


def collect(specs: ModelSpecs, registry: Registry, artifacts: LocalArtifactStore, metrics: Metrics) -> Freed:
    """Remove every artifact of a known version that no model keeps; log and count what was freed.

    Only versions the registry knows are candidates for removal: an artifact the trainer wrote
    whose candidate has not arrived yet is never touched.
    """
    by_model = {}
    for spec in specs.models:
        keep = spec.retention.keep_versions
        versions = [Held(spec.name, v.version, v.digest, v.status == "pending") for v in registry.versions(spec.name)]
        serving = [d.version for d in registry.serving_history(spec.name, limit=keep)]
        by_model[spec.name] = (versions, serving, keep)
    removed: list[str] = []
    size = 0
    for digest in sorted(collectable(by_model)):
        try:
            freed = artifacts.delete(digest)
        except OSError as exc:  # retention must never stop the loop it runs in: tried again next time
            log.warning("artifact not removed", digest=digest, error=repr(exc))
            continue
        if freed is not None:
            removed.append(digest)
            size += freed
    if removed:
        metrics.artifacts_collected.inc(len(removed))
        metrics.artifacts_freed_bytes.inc(size)
        log.info("artifacts collected", artifacts=len(removed), bytes=size, digests=removed)
    return Freed(tuple(removed), size)


def retain_rows(specs: ModelSpecs, registry: Registry, triggers: TriggerStore, metrics: Metrics,
                now: datetime) -> dict[str, dict[str, int]]:
    """Delete each model's holdout rows and history beyond its ``retention`` (``Registry.retain``); log and
    count what went. Returns the rows deleted per model and table."""
    deleted = {}
    for spec in specs.models:
        _, rows, days = spec.kept_rows()
        keep = spec.retention.keep_decisions
        deleted[spec.name] = {
            **registry.retain(spec.name, rows, now - timedelta(days=days) if days is not None else None, keep,
                              spec.retention.keep_versions),
            "fired": triggers.retain(spec.name, keep)}
        retired(metrics, spec.name, deleted[spec.name])
    return deleted
