"""Prometheus metrics: every name refit exports, defined once, one registry per running app.

Each service builds a :class:`Metrics` in ``create_app`` (a registry of its own, so tests can
build many apps in one process) and serves it at ``GET /metrics``. Names follow Prometheus
conventions (``_total`` counters, ``_seconds`` durations) and carry the model as a label.
"""

from __future__ import annotations

import os

import structlog

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TRAINING_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """All of refit's metrics; a service only moves the ones that concern it."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.service = service
        # data plane
        self.samples_ingested = Counter("refit_samples_ingested_total", "Samples accepted (broker-acknowledged)",
                                        ["model"], registry=r)
        self.samples_rejected = Counter("refit_samples_rejected_total", "Samples refused with a 4xx at ingest",
                                        ["model"], registry=r)
        self.broker_unavailable = Counter("refit_broker_unavailable_total",
                                          "Writes answered 503 because the broker did not acknowledge", registry=r)
        self.samples_stored = Counter("refit_samples_stored_total", "New training rows stored by the trainer",
                                      ["model"], registry=r)
        self.samples_filtered = Counter("refit_samples_filtered_total",
                                        "Rows removed by a data-quality filter before a training run",
                                        ["model", "filter"], registry=r)
        self.records_consumed = Counter("refit_records_consumed_total", "Kafka records consumed",
                                        ["consumer"], registry=r)
        self.consumer_lag = Gauge("refit_consumer_lag_records",
                                  "Records on the broker a consumer has not read yet, per topic",
                                  ["consumer", "topic"], registry=r)
        self.dead_lettered = Counter("refit_dead_lettered_total", "Records sent to the dead-letter topic",
                                     ["consumer"], registry=r)
        # training and decisions
        self.retraining_triggered = Counter("refit_retraining_triggered_total", "Retrain requests by trigger kind",
                                            ["model", "trigger"], registry=r)
        self.training_duration = Histogram("refit_training_duration_seconds", "Fit + convert + check time",
                                           ["model"], buckets=TRAINING_BUCKETS, registry=r)
        self.trainings = Counter("refit_trainings_total", "Training runs by outcome (success, or the error kind)",
                                 ["model", "outcome"], registry=r)
        self.training_failures = Counter("refit_training_failures_total",
                                         "TrainingFailed events the monitor received, by failure "
                                         "(error, timeout, insufficient_data)", ["model", "failure"], registry=r)
        self.decisions = Counter("refit_decisions_total", "Decisions: promoted, rejected, rolled_back",
                                 ["model", "decision"], registry=r)
        self.champion_version = Gauge("refit_champion_version", "Version number of the current champion",
                                      ["model"], registry=r)
        self.model_age = Gauge("refit_model_age_seconds", "Seconds since the current champion was promoted",
                               ["model"], registry=r)
        self.live_metric = Gauge("refit_live_metric", "The champion's rolling live metric (prequential)",
                                 ["model", "metric"], registry=r)
        self.artifacts_collected = Counter("refit_artifacts_collected_total",
                                           "Model artifacts removed by retention", registry=r)
        self.artifacts_freed_bytes = Counter("refit_artifacts_freed_bytes_total",
                                             "Bytes of model artifacts removed by retention", registry=r)
        self.rows_retired = Counter("refit_retention_rows_deleted_total",
                                    "Stored rows deleted by retention, per store (samples, holdout, decisions, ...)",
                                    ["model", "store"], registry=r)
        self.feedback_conflicts = Gauge("refit_feedback_conflicting_labels",
                                        "Labels ignored because the request id already had a different label "
                                        "(the first counts); kept across restarts", ["model"], registry=r)
        self.mlflow_backlog = Gauge("refit_mlflow_backlog", "Candidates and decisions not yet written to MLflow",
                                    registry=r)
        self.mlflow_failures = Counter("refit_mlflow_failures_total", "Attempts to write to MLflow that failed "
                                       "(retried with backoff)", registry=r)
        # serving
        self.requests = Counter("refit_inference_requests_total", "Prediction requests",
                                ["model", "version", "status"], registry=r)
        self.latency = Histogram("refit_inference_latency_seconds", "Prediction latency inside the service",
                                 ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.swaps = Counter("refit_swaps_total", "Hot swaps to a new champion", ["model"], registry=r)
        self.swap_duration = Histogram("refit_swap_duration_seconds", "Fetch + verify + load + warm-up time",
                                       ["model"], buckets=TRAINING_BUCKETS, registry=r)
        self.decisions_refused = Counter("refit_decisions_refused_total",
                                         "Decisions or artifacts inference refused", ["reason"], registry=r)
        self.fallback_answers = Counter("refit_fallback_answers_total",
                                        "Predictions answered by a fallback (serving.fallback), not the champion",
                                        ["model", "kind"], registry=r)
        self.in_fallback = Gauge("refit_inference_fallback", "1 while this replica answers the model from a fallback",
                                 ["model", "kind"], registry=r)

    def mount(self, app: FastAPI) -> None:
        """Serve this registry at ``GET /metrics`` in Prometheus' text format.

        Under worker processes (``refit.workers`` sets ``PROMETHEUS_MULTIPROC_DIR``) every
        process writes its values to that directory and any worker answers with the sums.
        """
        registry = self.registry
        if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, directory)

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def retired(metrics: Metrics, model: str, deleted: dict[str, int]) -> None:
    """Count and log the rows retention deleted of one model's stores ({store: rows})."""
    freed = {store: n for store, n in deleted.items() if n}
    for store, n in freed.items():
        metrics.rows_retired.labels(model, store).inc(n)
    if freed:
        structlog.get_logger(metrics.service).info("retention", model=model, deleted=freed)
