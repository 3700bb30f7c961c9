"""Scoring a candidate and the champion on the same holdout: the core's verdict, as the evidence a
decision event carries.

Synchronous and CPU-bound: the decider calls :func:`assess` from a worker thread.
"""

from __future__ import annotations

from dataclasses import asdict

from refit.core.bootstrap import paired_bootstrap
from refit.core.metrics import scores
from refit.core.safeguard import judge
from refit.core.split import fingerprint
from refit.events import CandidateTrained, Check, DifferenceInterval, Evidence, HoldoutInfo
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec
from services.monitor.registry import Holdout


class Judgement(Evidence):
    """The safeguard's answer for one candidate, with the evidence its decision event carries."""

    promote: bool


def predict(model: OnnxModel, holdout: Holdout) -> list[str] | list[float]:
    predicted = model.run(model.matrix(holdout.rows))
    return predicted.labels if predicted.labels is not None else (predicted.values or [])


def truth(task: str, holdout: Holdout) -> list[str] | list[float]:
    return holdout.labels if task == "classification" else [float(v) for v in holdout.labels]


def _reject(reason: Check, info: HoldoutInfo) -> Judgement:
    return Judgement(promote=False, holdout=info, checks=[reason], reasons=[reason.detail])


def assess(spec: ModelSpec, candidate: CandidateTrained, candidate_model: OnnxModel | Exception,
           champion_model: OnnxModel | None, holdout: Holdout) -> Judgement:
    """Judge ``candidate`` against ``champion_model`` (None for the first model) on ``holdout``."""
    info = HoldoutInfo(size=len(holdout.ids), fingerprint=fingerprint(holdout.ids))
    conv = candidate.conversion
    if not conv.passed:
        return _reject(Check(
            metric="onnx_vs_sklearn", kind="conversion", candidate=conv.max_abs_diff, threshold=conv.tolerance,
            passed=False, detail=(f"ONNX model does not run: {conv.error}" if conv.error else
                                  f"ONNX output disagrees with scikit-learn on {conv.rows} rows: max difference "
                                  f"{conv.max_abs_diff:.3g} (tolerance {conv.tolerance:.3g}), label agreement "
                                  f"{conv.label_agreement}")), info)
    if isinstance(candidate_model, Exception):
        return _reject(Check(metric="artifact", kind="conversion", candidate=None, passed=False,
                             detail=f"candidate artifact unusable: {candidate_model}"), info)
    y = truth(spec.task, holdout)
    cand_pred = predict(candidate_model, holdout)
    cand = scores(spec.task, y, cand_pred)
    champ, intervals = None, None
    if champion_model is not None:
        champ_pred = predict(champion_model, holdout)
        champ = scores(spec.task, y, champ_pred)
        raw = paired_bootstrap(spec.task, y, cand_pred, champ_pred, spec.safeguard.bootstrap_resamples,
                               spec.safeguard.confidence, seed=int(info.fingerprint[:8], 16))
        intervals = {m: DifferenceInterval(**asdict(i)) for m, i in raw.items()}
    verdict = judge(cand, champ, spec.safeguard, raw if champion_model is not None else None)
    reasons = list(verdict.reasons)
    if champ is None:
        reasons.insert(0, "first model: judged on the absolute quality gates only")
    return Judgement(promote=verdict.promote, holdout=info, candidate_scores=cand, champion_scores=champ,
                     intervals=intervals, reasons=reasons,
                     checks=[Check.model_validate(c, from_attributes=True) for c in verdict.checks])
