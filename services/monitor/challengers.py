"""Champion against challengers on live labeled traffic, pair by pair.

A challenger is the newest candidate the safeguard did not promote (rejected or not yet judged),
and, after a promotion, the champion it replaced. Each labeled sample the engine scores with the
champion is paired with every challenger's prediction (prequential: before anyone trains on it),
and the sign of the loss difference feeds one anytime-valid test per challenger
(``refit.core.sequential``).

A label that names the request it answers (``request_id``) pairs what inference served: the
champion's answer and the challenger's, scored in the shadow on the same request
(``ShadowScored``, kept in :class:`Shadows` until the label comes). A label with no shadow row
waiting (none sent, dropped, a champion since replaced, or the label came first) is scored here by
both models. Either way one label is one pair. Synchronous and CPU-bound, like the rest of the
engine's scoring.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import structlog

from refit.core.sequential import PairedTest, paired_outcome
from refit.core.shadow import Role
from refit.errors import SchemaError
from refit.events import LiveEvidence, SampleIngested, ShadowScored
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec

Output = str | float | None

log = structlog.get_logger("monitor.challengers")


@dataclass
class Challenger:
    version: int
    role: Role  # "candidate": may be promoted; "previous": the champion it beats is rolled back
    model: OnnxModel
    test: PairedTest
    champion_version: int
    shadow_pairs: int = 0  # pairs whose challenger prediction inference made on the served request
    fresh_after: datetime | None = None  # pairs only on samples after the newest either model was trained with

    def evidence(self) -> LiveEvidence:
        return LiveEvidence(challenger_version=self.version, champion_version=self.champion_version,
                            pairs=self.test.pairs, wins=self.test.wins, losses=self.test.losses,
                            e_value=self.test.e_better, alpha=self.test.alpha, min_pairs=self.test.min_pairs,
                            shadow_pairs=self.shadow_pairs)

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "role": self.role, "champion_version": self.champion_version,
                "shadow_pairs": self.shadow_pairs, **self.test.as_dict()}


@dataclass(frozen=True)
class ShadowRow:
    """One served row: the champion that answered, its answer, and each challenger's (by version)."""

    champion_version: int
    champion: Output
    challengers: dict[int, Output]


@dataclass(frozen=True)
class _Scored:
    """One ``ShadowScored`` event's outputs, kept whole: a row is an index into them."""

    champion_version: int
    champion: Sequence[Output]
    challengers: dict[int, Sequence[Output]]


class Shadows:
    """Served rows waiting for their label, by join key; beyond ``max_rows`` the oldest go first.

    The first row of a key counts (a redelivered event changes nothing). In memory, like the tests
    they feed: after a restart, labels of earlier requests are scored by the monitor itself.

    A key maps to its event's outputs and its index there; its :class:`ShadowRow` is built only
    when its label takes it (most served rows never get one). An ``OrderedDict``: evicting the
    oldest is O(1), where a plain dict's ``next(iter(...))`` after deletions at its front walks
    every deleted slot first (that took 44% of the monitor's CPU under 16,000 shadow-scored
    requests/s; a row per key built on arrival took most of the rest).
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows: OrderedDict[str, tuple[_Scored, int]] = OrderedDict()
        self.received = 0

    def add(self, event: ShadowScored) -> None:
        champion: Sequence[Output] = event.labels if event.labels is not None else event.values or []
        outputs = {c.version: c.labels if c.labels is not None else c.values or [] for c in event.challengers}
        if len(champion) != len(event.keys) or any(len(o) != len(event.keys) for o in outputs.values()):
            raise SchemaError(f"ShadowScored of {event.model}: {len(event.keys)} keys, outputs of other lengths")
        scored, rows, before = _Scored(event.version, champion, outputs), self.rows, len(self.rows)
        for i, key in enumerate(event.keys):
            if key not in rows:
                rows[key] = (scored, i)
        self.received += len(rows) - before
        while len(rows) > self.max_rows:
            rows.popitem(last=False)

    def take(self, key: str) -> ShadowRow | None:
        found = self.rows.pop(key, None)
        if found is None:
            return None
        scored, i = found
        return ShadowRow(scored.champion_version, scored.champion[i],
                         {version: outputs[i] for version, outputs in scored.challengers.items()})


def losses(spec: ModelSpec, outputs: list[str] | list[float], labels: list[str] | list[float]) -> np.ndarray:
    """Per row: 0/1 loss (classification) or absolute error (regression)."""
    if spec.task == "classification":
        return np.array([0.0 if str(o) == str(y) else 1.0 for o, y in zip(outputs, labels, strict=True)])
    return np.abs(np.asarray(outputs, dtype=np.float64) - np.asarray(labels, dtype=np.float64))


def compare(challenger: Challenger, champion_losses: np.ndarray, challenger_losses: np.ndarray) -> None:
    """Feed one batch of paired losses to the challenger's test (non-finite pairs are skipped)."""
    for mine, theirs in zip(champion_losses.tolist(), challenger_losses.tolist(), strict=True):
        if np.isfinite(mine) and np.isfinite(theirs):
            challenger.test.update(paired_outcome(mine, theirs))


def _loss(spec: ModelSpec, output: Output, label: str | float) -> float:
    if output is None:
        return float("nan")
    return losses(spec, [output], [label])[0]  # type: ignore[list-item]


def challenge(spec: ModelSpec, challengers: dict[int, Challenger], samples: Sequence[SampleIngested],
              rows: list[dict[str, float]] | list[str], outputs: Sequence[Output], shadows: Shadows) -> None:
    """Pair each labeled sample's champion output with each challenger's and feed the tests.

    ``outputs`` are the champion's on ``rows`` (the samples' inputs). A sample whose request has a
    shadow row served by this challenger's champion pairs the served outputs; the others are scored
    here by the challenger. A challenger that cannot score is dropped (it is no challenger).
    """
    labels = [str(s.label) if spec.task == "classification" else float(s.label) for s in samples]
    served = [shadows.take(s.request_id) if s.request_id else None for s in samples]
    mine = losses(spec, outputs, labels)  # type: ignore[arg-type]
    for challenger in list(challengers.values()):
        shadowed = [row if row is not None and row.champion_version == challenger.champion_version
                    and challenger.version in row.challengers else None for row in served]
        own = [i for i, row in enumerate(shadowed) if row is None]
        try:
            theirs = challenger.model.run(challenger.model.matrix([rows[i] for i in own])) if own else None  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a challenger that cannot score is no challenger
            log.warning("challenger dropped: it cannot score live rows", model=spec.name,
                        version=challenger.version, error=repr(exc))
            del challengers[challenger.version]
            continue
        champion_losses, challenger_losses = mine.copy(), np.empty(len(samples))
        if theirs is not None:
            challenger_losses[own] = losses(spec, theirs.labels if theirs.labels is not None else theirs.values or [],
                                            [labels[i] for i in own])  # type: ignore[arg-type]
        for i, row in enumerate(shadowed):
            if row is not None:
                champion_losses[i] = _loss(spec, row.champion, labels[i])
                challenger_losses[i] = _loss(spec, row.challengers[challenger.version], labels[i])
        if challenger.fresh_after is not None:  # a model is not judged on rows it (or its rival) learnt
            stale = [i for i, s in enumerate(samples) if s.occurred_at <= challenger.fresh_after]
            champion_losses[stale] = challenger_losses[stale] = np.nan
        challenger.shadow_pairs += sum(1 for i, row in enumerate(shadowed) if row is not None
                                       and np.isfinite(champion_losses[i]) and np.isfinite(challenger_losses[i]))
        compare(challenger, champion_losses, challenger_losses)
