"""The bodies ingest takes and answers, as pydantic models (what its OpenAPI document declares)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SkipValidation


class SampleRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Documented here, validated by the core in to_event: checking it here too copied every row.
    features: SkipValidation[dict[str, Any] | list[Any] | None] = None
    text: str | None = None
    label: Any
    confidence: float | None = Field(None, ge=0, le=1)
    source: str | None = Field(None, max_length=64)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    event_time: datetime | None = None
    request_id: str | None = Field(None, min_length=1, max_length=200,
                                   description="the request id of an earlier prediction this label answers")


class SampleIn(SampleRow):
    model: str


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    samples: list[SampleRow] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: int
    sample_ids: list[str]
