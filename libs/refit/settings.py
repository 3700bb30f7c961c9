"""Settings: one pydantic-settings class per service, each with its own env prefix.

Built once in each service's ``main`` and passed down; nothing reads the
environment anywhere else. Outside local mode the well-known development
secrets are refused at start.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_SIGNING_KEY = "refit-local-signing-key"
LOCAL_API_TOKEN = "refit-local-token"


class CommonSettings(BaseSettings):
    """What every service needs: where the broker is, the model specs, state, logging."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Literal["local", "production"] = "local"
    bootstrap_servers: str = "127.0.0.1:9092"
    specs_path: Path = Path("config/models.yaml")
    state_dir: Path = Path(".refit/state")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    # Idempotent producers need Apache Kafka; the embedded broker rejects them.
    kafka_idempotence: bool = True
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(3_000, ge=100)
    kafka_request_timeout_ms: int = Field(10_000, ge=500)
    topic_partitions: int = Field(1, ge=1)
    topic_replication: int = Field(1, ge=1)


class _SignedDecisions(CommonSettings):
    decision_signing_key: SecretStr = SecretStr(LOCAL_SIGNING_KEY)

    @model_validator(mode="after")
    def _no_default_key(self) -> _SignedDecisions:
        if self.environment != "local" and self.decision_signing_key.get_secret_value() == LOCAL_SIGNING_KEY:
            raise ValueError("decision_signing_key must be set to a secret outside local mode")
        return self


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REFIT_INGEST_", extra="ignore", frozen=True)
    port: int = 8001
    # Producers must send one of these as "Authorization: Bearer <key>" when any is set.
    api_keys: tuple[SecretStr, ...] = ()
    max_batch_rows: int = Field(1000, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    publish_timeout_s: float = Field(10.0, gt=0)


class TrainerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REFIT_TRAINER_", extra="ignore", frozen=True)
    port: int = 8002
    artifact_dir: Path = Path(".refit/artifacts")
    poll_interval_s: float = Field(1.0, gt=0)


class MonitorSettings(_SignedDecisions):
    model_config = SettingsConfigDict(env_prefix="REFIT_MONITOR_", extra="ignore", frozen=True)
    port: int = 8003
    artifact_dir: Path = Path(".refit/artifacts")
    public_url: str = "http://127.0.0.1:8003"
    api_token: SecretStr = SecretStr(LOCAL_API_TOKEN)
    judge_interval_s: float = Field(2.0, gt=0)
    trigger_interval_s: float = Field(5.0, gt=0)
    # Base URLs of the other services, shown as health on the dashboard: {"ingest": "http://…", …}.
    peer_urls: dict[str, str] = Field(default_factory=dict)
    # Live metrics are computed over the newest ``live_window`` joined outcomes of each version.
    live_window: int = Field(500, ge=1)
    # Each feedback table (predictions waiting for a label, labels waiting for a prediction,
    # joined outcomes) keeps at most this many newest rows per model.
    feedback_max_rows: int = Field(100_000, ge=10)

    @model_validator(mode="after")
    def _no_default_token(self) -> MonitorSettings:
        if self.environment != "local" and self.api_token.get_secret_value() == LOCAL_API_TOKEN:
            raise ValueError("api_token must be set to a secret outside local mode")
        return self


class InferenceSettings(_SignedDecisions):
    model_config = SettingsConfigDict(env_prefix="REFIT_INFERENCE_", extra="ignore", frozen=True)
    port: int = 8004
    monitor_url: str = "http://127.0.0.1:8003"
    # Names the replica in logs and as its Kafka client id; scaled replicas get their host names.
    replica_id: str = Field(default_factory=socket.gethostname)
    session_threads: int = Field(1, ge=1)
    max_batch_rows: int = Field(1024, ge=1)
    # The query log: publish every prediction to refit.predictions, off the request path.
    publish_predictions: bool = False
    predictions_queue_size: int = Field(10_000, ge=1)
    predictions_batch_size: int = Field(500, ge=1)
