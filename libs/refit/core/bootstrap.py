"""Paired bootstrap confidence intervals of metric differences on a shared holdout.

Candidate and champion predictions for the same holdout rows are resampled
together (the same row indices for both), so the interval reflects the noise of
*this* holdout, not of two independent samples. Pure and seeded: the same
inputs always give the same interval. Vectorised with numpy: 1,000 resamples of
a 5,000-row holdout take well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refit.core.metrics import fenced, label_fences

_CHUNK = 100  # resamples evaluated at once


@dataclass(frozen=True)
class Interval:
    """The observed difference (candidate − champion) and its percentile interval."""

    observed: float
    low: float
    high: float
    confidence: float
    resamples: int


def _f1s(t: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Macro and weighted F1 per resample; rows of t and p are resamples of encoded labels."""
    r = t.shape[0]
    offsets = (np.arange(r) * k)[:, None]
    support = np.bincount((t + offsets).ravel(), minlength=r * k).reshape(r, k)
    predicted = np.bincount((p + offsets).ravel(), minlength=r * k).reshape(r, k)
    hits = np.bincount((t + offsets)[t == p], minlength=r * k).reshape(r, k)
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits, dtype=float), where=denominator > 0)
    present = denominator > 0  # sklearn averages over labels present in truth or prediction
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    weighted = (f1 * support).sum(axis=1) / np.maximum(support.sum(axis=1), 1)
    return macro, weighted


def _classification(t: np.ndarray, p: np.ndarray, k: int) -> dict[str, np.ndarray]:
    macro, weighted = _f1s(t, p, k)
    return {"accuracy": (t == p).mean(axis=1), "f1_macro": macro, "f1_weighted": weighted}


def _regression(t: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    err = p - t
    ss_res = (err**2).sum(axis=1)
    ss_tot = ((t - t.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    return {"rmse": np.sqrt((err**2).mean(axis=1)), "mae": np.abs(err).mean(axis=1), "r2": r2}


def paired_bootstrap(task: str, y_true: Sequence[str] | Sequence[float], candidate: Sequence[str] | Sequence[float],
                     champion: Sequence[str] | Sequence[float], resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, Interval]:
    """Interval of (candidate − champion) for every metric of ``task``."""
    n = len(y_true)
    if n == 0 or len(candidate) != n or len(champion) != n:
        raise ValueError("y_true, candidate and champion must be non-empty and of equal length")
    rng = np.random.default_rng(seed)
    if task == "classification":
        labels = {label: i for i, label in enumerate(sorted({*map(str, y_true), *map(str, candidate),
                                                             *map(str, champion)}))}
        t, c, h = (np.array([labels[str(v)] for v in seq], dtype=np.int32) for seq in (y_true, candidate, champion))

        def metrics(rows: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            return _classification(t[rows], c[rows], len(labels)), _classification(t[rows], h[rows], len(labels))
    else:
        # The values the metrics see (refit.core.metrics): one extreme row cannot capture the interval.
        truth, cand, champ = (np.asarray(seq, dtype=float) for seq in (y_true, candidate, champion))
        fences = label_fences(truth)
        t, c = fenced(truth, cand, fences)
        h = fenced(truth, champ, fences)[1]

        def metrics(rows: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            return _regression(t[rows], c[rows]), _regression(t[rows], h[rows])
    # Resamples in chunks, drawn from the one generator in order (the same indices as one draw of
    # them all): memory stays at a chunk's worth (~25 MiB at 5,000 rows), not 1,001 resamples'.
    parts = [metrics(np.arange(n)[None, :])]  # row 0: the observed sample
    parts += [metrics(rng.integers(0, n, size=(min(_CHUNK, resamples - start), n)))
              for start in range(0, resamples, _CHUNK)]
    a, b = ({metric: np.concatenate([part[side][metric] for part in parts]) for metric in parts[0][side]}
            for side in (0, 1))
    tail = (1 - confidence) / 2 * 100
    out = {}
    for metric in a:
        diff = a[metric] - b[metric]
        low, high = np.percentile(diff[1:], [tail, 100 - tail])
        out[metric] = Interval(float(diff[0]), float(low), float(high), confidence, resamples)
    return out
