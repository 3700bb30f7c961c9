"""The monitor's intake: samples, candidates and served predictions from the topics into its stores.

Holdout samples go to the registry, candidates become pending versions, every valid sample is
counted by the triggers, and labels and predictions meet in the feedback store. Then the decider
is woken: what it decides is its own (``services.monitor.decider``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from refit import tracing
from refit.core.schema import validate_sample
from refit.core.split import is_holdout
from refit.errors import SchemaError, UnknownModelError
from refit.events import CandidateTrained, PredictionServed, SampleIngested, ShadowScored, TrainingFailed
from refit.kafka import Incoming
from refit.specs import ModelSpecs
from services.monitor.feedback import FeedbackStore, LabeledRow, PredictedRow, labeled_row, predicted_rows
from services.monitor.registry import Registry
from services.monitor.triggers import Triggers


class Intake:
    def __init__(self, specs: ModelSpecs, registry: Registry, triggers: Triggers, feedback: FeedbackStore,
                 arrived: Callable[[], None], traces: dict[str, str] | None = None) -> None:
        self.specs, self.registry, self.triggers, self.feedback = specs, registry, triggers, feedback
        self.arrived = arrived
        self.traces = traces if traces is not None else {}  # candidate id -> its traceparent (the judge's parent)
        self.candidates: list[Callable[[CandidateTrained], None]] = []  # told of each new candidate (MLflow)

    async def handle(self, items: list[Incoming]) -> dict[int, str]:
        """Store a batch of records; returns the reason for each one that is dead-lettered, by index."""
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
                    if tracing.enabled:
                        self.traces[event.candidate_id] = item.header(tracing.HEADER) or ""
                    version = self.registry.add_candidate(event)
                    if version.duplicate_of is None:  # a duplicate answers no request in flight
                        self.triggers.candidate_arrived(event.model, event.candidate_id)
                        for told in self.candidates:
                            told(event)
                    continue
                if isinstance(event, TrainingFailed):
                    self.triggers.training_failed(event)
                    continue
                if isinstance(event, PredictionServed):
                    predicted.extend(predicted_rows(spec.task, event))
                    continue
                if isinstance(event, ShadowScored):
                    self.triggers.shadowed(event)
                    continue
                assert isinstance(event, SampleIngested)
                validate_sample(spec, event)
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
        self.arrived()
        return rejected
