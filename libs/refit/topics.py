"""Topic names. Every event class is bound to one of these."""

from __future__ import annotations

SAMPLES = "refit.samples"
RETRAIN_REQUESTS = "refit.retrain-requests"
CANDIDATES = "refit.candidates"
DECISIONS = "refit.decisions"
PREDICTIONS = "refit.predictions"
DEAD_LETTERS = "refit.dead-letters"

ALL = (SAMPLES, RETRAIN_REQUESTS, CANDIDATES, DECISIONS, PREDICTIONS, DEAD_LETTERS)

# Kept forever on Apache Kafka (retention.ms=-1): a trainer that takes a model over rebuilds its
# dataset, and finds its unanswered requests, by replaying them (services/trainer/ownership.py).
REPLAYED = (SAMPLES, RETRAIN_REQUESTS)
