"""Champion against challengers on live labeled traffic, pair by pair.

A challenger is the newest candidate the safeguard did not promote (rejected or not yet judged),
and, after a promotion, the champion it replaced. Each labeled sample the engine scores with the
champion is scored by every challenger too (prequential: before anyone trains on it), and the sign
of the loss difference feeds one anytime-valid test per challenger (``refit.core.sequential``).
Synchronous and CPU-bound, like the rest of the engine's scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from refit.core.sequential import PairedTest, paired_outcome
from refit.events import LiveEvidence
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec

Role = Literal["candidate", "previous"]


@dataclass
class Challenger:
    version: int
    role: Role  # "candidate": may be promoted; "previous": the champion it beats is rolled back
    model: OnnxModel
    test: PairedTest
    champion_version: int

    def evidence(self) -> LiveEvidence:
        return LiveEvidence(challenger_version=self.version, champion_version=self.champion_version,
                            pairs=self.test.pairs, wins=self.test.wins, losses=self.test.losses,
                            e_value=self.test.e_better, alpha=self.test.alpha, min_pairs=self.test.min_pairs)

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "role": self.role, "champion_version": self.champion_version,
                **self.test.as_dict()}


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
