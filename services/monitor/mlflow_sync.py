"""MLflow, optional: every candidate a run, every promotion a registered version under the alias
``champion``, a rollback moving the alias back, a rejection tagged with its failing checks.

MLflow being down never blocks a decision: what is to be written goes to an outbox (SQLite, in the
monitor's state directory) when the candidate or the decision is recorded, and a background task
drains it in order, with backoff, in a worker thread (MLflow's client is synchronous). Every write is
idempotent, so an entry applied again after a crash changes nothing: runs are found by the tag
``refit.candidate_id``, versions by ``refit.version``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import structlog

from refit.artifacts import LocalArtifactStore
from refit.events import CandidateRejected, CandidateTrained, Decision, ModelPromoted, ModelRolledBack, parse_event
from refit.lifecycle import backoff, pause
from refit.metrics import Metrics
from refit.specs import ModelSpecs
from refit.sqlite import open_store

log = structlog.get_logger("monitor")

ALIAS = "champion"


class MlflowSync:
    """The outbox and its drain. ``candidate`` and ``decision`` only enqueue (a local write)."""

    def __init__(self, tracking_uri: str, path: Path, specs: ModelSpecs, artifacts: LocalArtifactStore,
                 metrics: Metrics) -> None:
        self.tracking_uri, self.specs, self.artifacts, self.metrics = tracking_uri, specs, artifacts, metrics
        self._db = open_store(path, "CREATE TABLE IF NOT EXISTS outbox "
                                    "(id INTEGER PRIMARY KEY AUTOINCREMENT, event BLOB NOT NULL);")
        self.last_error: str | None = None
        self.applied = 0
        self._client: Any = None
        self._gauge()

    def close(self) -> None:
        self._db.close()

    # enqueue ---------------------------------------------------------------------------------------------
    def candidate(self, event: CandidateTrained) -> None:
        self._put(event.to_bytes())

    def decision(self, event: Decision) -> None:
        self._put(event.to_bytes())

    def _put(self, raw: bytes) -> None:
        self._db.execute("INSERT INTO outbox (event) VALUES (?)", (raw,))
        self._gauge()

    def backlog(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def status(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "backlog": self.backlog(), "applied": self.applied,
                "last_error": self.last_error}

    def _gauge(self) -> None:
        self.metrics.mlflow_backlog.set(self.backlog())

    # drain -----------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Apply the outbox in order; a failure (MLflow down) waits and retries, 1 s doubling to 60 s."""
        delays = backoff(1.0, cap=60.0)
        while not stop.is_set():
            row = self._db.execute("SELECT id, event FROM outbox ORDER BY id LIMIT 1").fetchone()
            if row is None:
                await pause(stop, 1.0)
                continue
            try:
                await asyncio.to_thread(self._apply, parse_event(row[1]))
            except Exception as exc:  # MLflow down, or answering errors: the entry stays, tried again later
                self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self.metrics.mlflow_failures.inc()
                wait = next(delays)
                log.warning("mlflow not updated; retrying", error=self.last_error, backlog=self.backlog(),
                            retry_in_s=round(wait, 1))
                await pause(stop, wait)
                continue
            delays = backoff(1.0, cap=60.0)
            self.last_error = None
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            self.applied += 1
            self._gauge()

    def _mlflow(self) -> Any:
        if self._client is None:
            # The outbox retries, with its own backoff: MLflow's client would retry each call 7 times
            # for minutes and hold the drain (an operator's own settings win).
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            from mlflow.tracking import MlflowClient  # imported once needed: it takes seconds

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _apply(self, event: Any) -> None:
        if isinstance(event, CandidateTrained):
            self._log_candidate(event)
        elif isinstance(event, (ModelPromoted, CandidateRejected, ModelRolledBack)):
            self._log_decision(event)

    def _run_of(self, model: str, candidate_id: str) -> Any:
        """The run of a candidate (found by its tag), or None."""
        client = self._mlflow()
        experiment = client.get_experiment_by_name(f"refit/{model}")
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.`refit.candidate_id` = '{candidate_id}'",
                                  max_results=1)
        return runs[0] if runs else None

    def _log_candidate(self, event: CandidateTrained) -> None:
        client = self._mlflow()
        if self._run_of(event.model, event.candidate_id) is not None:
            return  # applied before a crash: nothing to do again
        name = f"refit/{event.model}"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        spec = self.specs.get(event.model)
        training = event.training
        run = client.create_run(experiment_id, run_name=f"{event.model} {event.artifact.digest[:12]}", tags={
            "refit.candidate_id": event.candidate_id, "refit.model": event.model,
            "refit.digest": event.artifact.digest, "refit.spec_hash": training.spec_hash,
            "refit.data_fingerprint": training.data_fingerprint or "", "refit.trigger": event.trigger,
            "refit.data_window": f"{training.first_sample_at} .. {training.last_sample_at}",
            "refit.code_version": training.code_version})
        run_id = run.info.run_id
        params = {"estimator": spec.estimator.class_path, "task": spec.task, "scale": spec.estimator.scale,
                  **{f"param.{k}": v for k, v in spec.estimator.params.items()},
                  **{f"training.{k}": v for k, v in spec.training.model_dump(mode="json").items()}}
        for key, value in params.items():
            client.log_param(run_id, key, str(value)[:500])
        metrics = {"rows_seen": training.rows_seen, "rows_trained": training.rows_trained,
                   "rows_held_back": training.rows_held_back, "duration_s": training.duration_s,
                   **{f"filtered.{k}": v for k, v in training.filters.items()}}
        if event.conversion.max_abs_diff is not None:
            metrics["conversion.max_abs_diff"] = event.conversion.max_abs_diff
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(self.artifacts.get(event.artifact.digest))
            client.log_artifact(run_id, str(path), artifact_path="onnx")
        client.set_terminated(run_id, "FINISHED")

    def _log_decision(self, event: Decision) -> None:
        client = self._mlflow()
        run = self._run_of(event.model, event.candidate_id) if event.candidate_id else None
        if run is None and not isinstance(event, ModelRolledBack):
            raise LookupError(f"no MLflow run yet for candidate {event.candidate_id} of {event.model}")
        if run is not None and not isinstance(event, ModelRolledBack):
            run_id = run.info.run_id
            for metric, value in event.candidate_scores.items():
                client.log_metric(run_id, f"holdout.{metric}", float(value))
            client.set_tag(run_id, "refit.decision", event.event_type)
            client.set_tag(run_id, "refit.version", str(event.version))
            client.set_tag(run_id, "refit.reasons", "; ".join(event.reasons)[:5000])
        if isinstance(event, CandidateRejected):
            failing = "; ".join(f"{c.metric} ({c.kind}): {c.detail}" for c in event.checks if not c.passed)
            client.set_tag(run.info.run_id, "refit.failing_checks", failing[:5000] or "; ".join(event.reasons))
            return
        version = self._version_of(event.model, event.version)
        if version is None:
            if run is None:
                raise LookupError(f"v{event.version} of {event.model} was never registered in MLflow")
            version = self._register(event, run)
        client.set_registered_model_alias(event.model, ALIAS, version.version)
        client.set_model_version_tag(event.model, version.version, "refit.decision", event.event_type)

    def _version_of(self, model: str, refit_version: int) -> Any:
        client = self._mlflow()
        try:
            versions = client.search_model_versions(f"name = '{model}'")
        except Exception:  # noqa: BLE001 - no registered model yet
            return None
        return next((v for v in versions if v.tags.get("refit.version") == str(refit_version)), None)

    def _register(self, event: Decision, run: Any) -> Any:
        client = self._mlflow()
        try:
            client.get_registered_model(event.model)
        except Exception:  # noqa: BLE001 - MLflow raises its own RestException for a missing model
            client.create_registered_model(event.model, tags={"refit.model": event.model})
        return client.create_model_version(
            event.model, f"{run.info.artifact_uri}/onnx", run_id=run.info.run_id,
            tags={"refit.version": str(event.version), "refit.digest": event.digest},
            description=f"refit {event.model} v{event.version}")

