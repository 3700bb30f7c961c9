"""Settings: one pydantic-settings class per service, each with its own env prefix.

Built once in each service's ``main`` and passed down; nothing reads the
environment anywhere else. Outside local mode the well-known development
secrets are refused at start. Every field's description is the configuration
reference (``docs/operations.md`` is generated from these classes).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_SIGNING_KEY = "refit-local-signing-key"
LOCAL_API_TOKEN = "refit-local-token"


def _f(default: Any = ..., description: str = "", **constraints: Any) -> Any:
    return Field(default, description=description, **constraints)


@dataclass(frozen=True)
class BrokerProfile:
    """The broker-capability switch: everything refit does differently for the embedded broker.

    Nothing else in refit asks which broker it talks to. On Apache Kafka refit uses Kafka as
    meant: an idempotent ``acks=all`` producer, normal group sessions, and ``auto_offset_reset``
    as Kafka defines it (a position past the log end is answered OFFSET_OUT_OF_RANGE and the
    client resets to the earliest record). The embedded broker rejects idempotent producers,
    holds a group join for half the session timeout, keeps nothing across a restart, and answers
    a fetch past the end of a recreated log with nothing instead of OFFSET_OUT_OF_RANGE: there a
    consumer is given ``refit.recovery.EmbeddedBrokerRecovery``, which notices a new, empty
    cluster and recreates the topics. Only Kafka keeps a log to replay: there the topics a trainer
    rebuilds its dataset from are created to be kept forever (``refit.topics.REPLAYED``).
    """

    idempotence: bool
    session_timeout_ms: int
    heartbeat_interval_ms: int
    recovers_lost_cluster: bool
    keeps_log: bool = True


PROFILES = {
    "kafka": BrokerProfile(idempotence=True, session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
                           recovers_lost_cluster=False),
    "embedded": BrokerProfile(idempotence=False, session_timeout_ms=3_000, heartbeat_interval_ms=500,
                              recovers_lost_cluster=True, keeps_log=False),
}


class CommonSettings(BaseSettings):
    """What every service needs: where the broker is, the model specs, state, logging."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Literal["local", "production"] = _f(
        "local", "`production` refuses the development signing key and API token")
    bootstrap_servers: str = _f("127.0.0.1:9092", "Kafka bootstrap servers")
    specs_path: Path = _f(Path("config/models.yaml"), "the model-spec file")
    state_dir: Path = _f(Path(".refit/state"), "where the service keeps its SQLite files")
    host: str = _f("127.0.0.1", "HTTP listen address")
    port: int = _f(8000, "HTTP port")
    log_level: str = _f("INFO", "log level")
    log_json: bool = _f(True, "one JSON object per log line (false: human-readable)")
    trace_file: Path | None = _f(
        None, "write this process's OpenTelemetry spans to this file, one JSON span per line (tracing is also on "
        "when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; docs/operations.md, Tracing)")
    broker: Literal["kafka", "embedded"] = _f(
        "kafka", "the broker refit talks to, and so what it relies on (`refit.settings.BrokerProfile`): `kafka` "
        "(Apache Kafka: idempotent producer, normal group sessions) or `embedded` (the local stack's in-memory "
        "stand-in: no idempotence, short sessions, consumers that notice a restarted, empty cluster and recreate "
        "the topics)")
    kafka_session_timeout_ms: int | None = _f(
        None, "consumer group session timeout; unset: the broker's profile (10000 on Kafka, 3000 on the embedded "
        "broker, which holds a group join for half a session)", ge=1000)
    kafka_heartbeat_interval_ms: int | None = _f(
        None, "consumer heartbeat interval; unset: the broker's profile (3000 on Kafka, 500 embedded)", ge=100)
    kafka_request_timeout_ms: int = _f(10_000, "broker request timeout", ge=500)
    topic_partitions: int = _f(1, "partitions of each topic refit creates", ge=1)
    topic_replication: int = _f(1, "replication factor of each topic refit creates", ge=1)
    topic_min_insync_replicas: int = _f(
        1, "`min.insync.replicas` of each topic refit creates: with `acks=all` a write is acknowledged once this "
        "many replicas have it (2 of 3 on a three-broker cluster)", ge=1)

    @property
    def profile(self) -> BrokerProfile:
        """What this broker can be relied on for, with the session overrides applied."""
        base = PROFILES[self.broker]
        return BrokerProfile(
            idempotence=base.idempotence,
            session_timeout_ms=self.kafka_session_timeout_ms or base.session_timeout_ms,
            heartbeat_interval_ms=self.kafka_heartbeat_interval_ms or base.heartbeat_interval_ms,
            recovers_lost_cluster=base.recovers_lost_cluster, keeps_log=base.keeps_log)


class _SignedDecisions(CommonSettings):
    decision_signing_key: SecretStr = _f(
        SecretStr(LOCAL_SIGNING_KEY), "HMAC key that signs (monitor) and verifies (inference) decisions; `refit up` "
        "passes `REFIT_DECISION_SIGNING_KEY`, or else a random key it made once for its state directory "
        "(`<state>/signing.key`, mode 0600)")

    @model_validator(mode="after")
    def _no_default_key(self) -> _SignedDecisions:
        if self.environment != "local" and self.decision_signing_key.get_secret_value() == LOCAL_SIGNING_KEY:
            raise ValueError("decision_signing_key must be set to a secret outside local mode")
        return self


class DataReads(CommonSettings):
    """Reads of data (datasets, artifact bytes) need a read credential outside local mode."""

    read_token: SecretStr = _f(
        SecretStr(""), "bearer token for reads of data: dataset exports and artifact bytes (the trainer and the "
        "monitor require it outside local mode, where those reads are open; the monitor also accepts its "
        "`API_TOKEN`); the monitor sends it to the trainer and inference to the monitor. Required outside local "
        "mode, and distinct from the control token")

    @property
    def reads_open(self) -> bool:
        return self.environment == "local"

    @model_validator(mode="after")
    def _read_token_outside_local_mode(self) -> DataReads:
        token = self.read_token.get_secret_value()
        if not self.reads_open and (not token or token == LOCAL_API_TOKEN):
            raise ValueError("read_token must be set to a secret outside local mode")
        return self


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REFIT_INGEST_", extra="ignore", frozen=True)
    port: int = _f(8001, "HTTP port")
    api_keys: tuple[SecretStr, ...] = _f(
        (), "JSON list of producer keys; when set, `Authorization: Bearer <key>` is required (required outside "
        "local mode: an open ingest lets anyone on the network write training data)")
    workers: int = _f(1, "worker processes, each with its own socket on the port (SO_REUSEPORT) and its own "
                         "producer; 0 = one per core", ge=0)
    max_batch_rows: int = _f(1000, "samples per batch request", ge=1)
    max_body_bytes: int = _f(8 * 1024 * 1024, "request body limit (413 above)", ge=1024)
    publish_timeout_s: float = _f(10.0, "how long to wait for the broker's acknowledgement (503 after)", gt=0)

    @model_validator(mode="after")
    def _keys_outside_local_mode(self) -> IngestSettings:
        if self.environment != "local" and not any(k.get_secret_value() for k in self.api_keys):
            raise ValueError("api_keys must list at least one producer key outside local mode")
        return self


class TrainerSettings(DataReads):
    model_config = SettingsConfigDict(env_prefix="REFIT_TRAINER_", extra="ignore", frozen=True)
    port: int = _f(8002, "HTTP port")
    artifact_dir: Path = _f(Path(".refit/artifacts"), "content-addressed artifact store (shared with the monitor)")
    poll_interval_s: float = _f(1.0, "how often the trainer re-checks whether a model is due", gt=0)
    retention_interval_s: float = _f(
        3600.0, "how often the dataset's rows beyond each spec's `retention` are deleted; 0 = never", ge=0)


class MonitorSettings(_SignedDecisions, DataReads):
    model_config = SettingsConfigDict(env_prefix="REFIT_MONITOR_", extra="ignore", frozen=True)
    port: int = _f(8003, "HTTP port")
    artifact_dir: Path = _f(Path(".refit/artifacts"), "content-addressed artifact store (shared with the trainer)")
    public_url: str = _f("http://127.0.0.1:8003", "base of the artifact URLs written into decisions")
    api_token: SecretStr = _f(SecretStr(LOCAL_API_TOKEN), "bearer token for every change (retrain, rollback, config, "
                              "scheduler)")
    mlflow_tracking_uri: str | None = _f(
        None, "log every candidate to MLflow as a run, register promotions and move the `champion` alias "
        "(docs/operations.md, MLflow); off when unset. Also read from `REFIT_MLFLOW_TRACKING_URI`",
        validation_alias=AliasChoices("mlflow_tracking_uri", "REFIT_MONITOR_MLFLOW_TRACKING_URI",
                                      "REFIT_MLFLOW_TRACKING_URI"))
    judge_interval_s: float = _f(2.0, "how often deferred candidates are re-examined", gt=0)
    trigger_interval_s: float = _f(5.0, "how often every model's retraining triggers are evaluated", gt=0)
    peer_urls: dict[str, str] = _f(
        default_factory=dict,
        description="JSON object of the other services' base URLs (`trainer`, or several `trainer-<n>`, for "
                    "dataset export, from the trainer that owns the model; all are probed for the dashboard's health)")
    live_window: int = _f(500, "newest joined feedback outcomes per version the live metrics use", ge=1)
    feedback_max_rows: int = _f(100_000, "rows each feedback table keeps per model", ge=10)
    webhook_urls: tuple[str, ...] = _f((), "JSON list of URLs that receive a signed JSON body on promotion, "
                                       "rejection, rollback, failed training, drift and the periodic report")
    webhook_secret: SecretStr = _f(SecretStr(LOCAL_SIGNING_KEY), "HMAC key of the webhooks' X-Refit-Signature")
    report_cron: dict[str, str | int] = _f(
        default_factory=lambda: {"day_of_week": "mon", "hour": 8, "minute": 0},
        description="when the periodic report goes to the webhooks (APScheduler cron fields, UTC)")
    report_days: float = _f(7.0, "days the periodic report covers", gt=0)
    retention_interval_s: float = _f(
        3600.0, "how often what each spec's `retention` no longer keeps is removed (artifacts, holdout rows, "
        "decision history); 0 = never", ge=0)

    @model_validator(mode="after")
    def _no_default_token(self) -> MonitorSettings:
        if self.environment != "local" and self.api_token.get_secret_value() == LOCAL_API_TOKEN:
            raise ValueError("api_token must be set to a secret outside local mode")
        if not self.reads_open and self.read_token.get_secret_value() == self.api_token.get_secret_value():
            raise ValueError("read_token must differ from api_token: a reader must not be able to change state")
        if self.environment != "local" and self.webhook_urls and \
                self.webhook_secret.get_secret_value() == LOCAL_SIGNING_KEY:
            raise ValueError("webhook_secret must be set to a secret outside local mode")
        return self


class InferenceSettings(_SignedDecisions, DataReads):
    model_config = SettingsConfigDict(env_prefix="REFIT_INFERENCE_", extra="ignore", frozen=True)
    port: int = _f(8004, "HTTP port")
    monitor_url: str = _f("http://127.0.0.1:8003", "where champions and artifacts are fetched")
    replica_id: str = _f(default_factory=socket.gethostname,
                         description="names the replica in logs and as its Kafka client id (default: host name)")
    session_threads: int = _f(1, "onnxruntime intra-op threads per session", ge=1)
    workers: int = _f(0, "worker processes, each with its own socket on the port (SO_REUSEPORT) and its own "
                         "champions, swapped atomically; 0 = one per core", ge=0)
    max_batch_rows: int = _f(1024, "rows per prediction request", ge=1)
    required_models: tuple[str, ...] = _f((), "models that must have a champion before /readyz answers 200 "
                                          "(empty: any one model); each model's own readiness is "
                                          "GET /v1/models/{name}/ready")
    max_request_chars: int = _f(1_000_000, "text models: characters the tokenizer works on per request, counted "
                                           "as rows x the longest text (every text is padded to the longest; "
                                           "about 7 bytes each); 422 above", ge=1)
    decisions_fetch_wait_ms: int = _f(50, "longest the broker may hold an empty fetch of the decisions topic: "
                                           "bounds the time from a decision to the swap", ge=1, le=500)
    reconcile_s: float = _f(30.0, "how often the replica asks the monitor for each champion, to catch up a "
                                  "decision it missed or a swap it refused; 0 = only at start-up", ge=0)
    memory_reserve_mb: int = _f(256, "memory that must stay free after loading a new champion beside the serving "
                                     "one; a swap that would leave less is refused (the old champion keeps serving)",
                                ge=0)
    publish_predictions: bool = _f(False, "publish every prediction to refit.predictions (the query log)")
    predictions_queue_size: int = _f(10_000, "predictions waiting to be published; beyond it they are dropped "
                                     "and counted, never blocking a request", ge=1)
    predictions_batch_size: int = _f(500, "predictions published per batch", ge=1)
    shadow_scoring: bool = _f(True, "score served rows with the champion's challengers off the response path and "
                                    "publish them (ShadowScored) for the monitor's live tests")
    shadow_queue_size: int = _f(10_000, "requests waiting for shadow scoring; beyond it they are dropped and "
                                "counted, never blocking a request", ge=1)
    shadow_batch_rows: int = _f(500, "rows per shadow-scoring call and ShadowScored event", ge=1)


SERVICES: dict[str, type[CommonSettings]] = {
    "ingest": IngestSettings, "trainer": TrainerSettings, "monitor": MonitorSettings, "inference": InferenceSettings,
}
