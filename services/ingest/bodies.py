"""The bodies ingest takes and answers, as pydantic models (what its OpenAPI document declares)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation

# RFC 3339 date-time, what the document's ``format: date-time`` says (pydantic alone also took a
# number of seconds, a date, or a time without an offset).
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _date_time(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time with an offset, like 2026-01-31T12:00:00Z")
    return datetime.fromisoformat(value.upper())


class SampleRow(BaseModel):
    # strict: the types the document declares, no coercion (a confidence of "0.5" is refused)
    model_config = ConfigDict(extra="forbid", strict=True)
    # Documented here, validated by the core in to_event: checking it here too copied every row.
    features: SkipValidation[dict[str, Any] | list[Any] | None] = None
    text: str | None = None
    label: Any
    confidence: float | None = Field(None, ge=0, le=1)
    source: str | None = Field(None, max_length=64)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    event_time: Annotated[datetime | None, BeforeValidator(_date_time)] = None
    request_id: str | None = Field(None, min_length=1, max_length=200,
                                   description="the request id of an earlier prediction this label answers")


class SampleIn(SampleRow):
    model: str


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    samples: list[SampleRow] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: int
    sample_ids: list[str]
