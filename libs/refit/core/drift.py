"""Data drift: does a window of recent samples still look like the champion's training window?

Each feature gets a two-sample test chosen by its kind and the sample size, the p-values are
corrected for testing many features at once, and the dataset drifts when enough features
do. Label (prior) drift is tested on its own. Pure and seeded: the same windows and policy
always give the same report.

======================  ==========================  ====================================
feature                 test (gives the p-value)    effect (also required when large)
======================  ==========================  ====================================
numeric, many values    two-sample KS               Wasserstein distance / reference std
numeric, <= max_levels  chi-square on the values    Jensen–Shannon distance
categorical             chi-square, rare pooled     Jensen–Shannon distance
text                    token JS, docs permuted     Jensen–Shannon distance of tokens
======================  ==========================  ====================================

A feature drifts when its corrected p-value is at most ``alpha`` and, once both windows
hold at least ``large_sample`` rows (where any difference is significant), its effect is
at least ``min_effect``; the test is then named ``wasserstein`` or ``jensen_shannon``. PSI is
reported for every feature, and mean shift and variance ratio for numeric ones, as
evidence only. ``docs/drift.md`` explains the choices and gives measured error rates.

>>> rng = np.random.default_rng(7)
>>> colours = ["red", "green", "blue"]
>>> reference = {"x": rng.normal(0, 1, 500), "colour": rng.choice(colours, 500)}
>>> current = {"x": rng.normal(1, 1, 200), "colour": rng.choice(colours, 200)}
>>> report = detect_drift(reference, current, {"x": "numeric", "colour": "categorical"})
>>> report.drifted, report.drifted_features, [f.test for f in report.features]
(True, ('x',), ['ks', 'chi2'])
>>> adjust([0.01, 0.04, 0.02], "holm")
[0.03, 0.04, 0.04]
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse, special

from refit.errors import RefitError

Correction = Literal["holm", "bonferroni", "bh"]
Column = Sequence[Any] | npt.NDArray[Any]
Evidence = dict[str, float | int | str | None]

_PSI_FLOOR = 1e-4  # share given to an empty bin, so PSI stays finite
_MIN_EXPECTED = 5.0  # Cochran: chi-square needs expected counts of about 5 per cell
_TOKEN = re.compile(r"\w+")


class DriftInputError(RefitError, ValueError):
    """Windows that cannot be compared: missing columns, too few rows, values of the wrong type."""


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is decided; the defaults are the ones whose error rates docs/drift.md states."""

    alpha: float = 0.05  # family-wise (holm, bonferroni) or false-discovery (bh) level
    correction: Correction = "holm"
    share_threshold: float = 0.0  # dataset drifts if >= 1 feature drifted and share >= this
    min_samples: int = 30  # fewer rows in either window: refuse to test
    max_levels: int = 20  # numeric features with at most this many distinct values are counts
    large_sample: int = 1000  # both windows this large: also require the effect
    min_effect: float = 0.1
    psi_bins: int = 10  # reference quantile bins for a numeric PSI
    vocabulary: int = 500  # most frequent tokens kept for text; the rest share one bucket
    permutations: int = 1000  # most random splits of the documents the text test draws
    permutation_hits: int = 20  # ... it stops once this many reach the observed distance
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 <= self.share_threshold <= 1:
            raise ValueError("alpha must lie in (0, 1) and share_threshold in [0, 1]")
        if self.correction not in ("holm", "bonferroni", "bh"):
            raise ValueError(f"unknown correction {self.correction!r}: holm, bonferroni or bh")
        if min(self.min_samples, self.psi_bins, self.vocabulary, self.permutations,
               self.permutation_hits) < 2:
            raise ValueError("min_samples, psi_bins, vocabulary, permutations and permutation_hits "
                             "must be >= 2")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the label's) comparison; ``p_adjusted`` is after the correction."""

    name: str
    kind: str
    test: str  # ks | wasserstein | chi2 | jensen_shannon | token_permutation
    statistic: float  # KS D, chi-square, or the tokens' JS distance
    p_value: float
    p_adjusted: float
    effect: float  # Wasserstein / reference std (continuous), else Jensen–Shannon distance
    psi: float
    drifted: bool
    n_reference: int
    n_current: int
    evidence: Evidence

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["evidence"] = dict(self.evidence)
        return out


@dataclass(frozen=True)
class DriftReport:
    """Every feature's result and the dataset-level decision (label drift is reported apart)."""

    features: tuple[FeatureDrift, ...]
    drifted: bool
    share_drifted: float
    share_threshold: float
    alpha: float
    correction: str
    label: FeatureDrift | None
    n_reference: int
    n_current: int

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["features"] = [f.as_dict() for f in self.features]
        out["label"] = None if self.label is None else self.label.as_dict()
        return out


def adjust(p_values: Sequence[float], method: Correction = "holm") -> list[float]:
    """Multiple-testing adjusted p-values, in input order: Holm and Bonferroni bound the
    family-wise error rate, Benjamini–Hochberg (``bh``) the false discovery rate."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "bonferroni":
        adjusted = ranked * m
    elif method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method == "bh":
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}: holm, bonferroni or bh")
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]


def check_level(alpha: float, check: int) -> float:
    """The level of the ``check``-th drift test against one reference (1, 2, …): ``alpha`` spent as
    ``alpha · 6 / (π² k²)``, whose sum over every k is ``alpha``. A monitor that tests a sliding window
    against the same reference again and again then alarms falsely at most ``alpha`` of the time over
    the reference's whole life (a union bound: it holds however the overlapping windows depend),
    where a fixed level per check alarms on almost every long stationary stream. A real drift keeps
    being found, since its p-values fall far faster than the level: see docs/drift.md."""
    if not 0 < alpha < 1 or check < 1:
        raise ValueError("alpha must lie in (0, 1) and checks count from 1")
    return alpha * 6 / (math.pi**2 * check**2)


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Population stability index of two histograms over the same bins; empty bins count as a
    share of 1e-4. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 major shift."""
    r, c = (np.asarray(x, dtype=float) for x in (reference_counts, current_counts))
    r, c = (np.maximum(h / max(h.sum(), 1e-300), _PSI_FLOOR) for h in (r, c))
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(p_counts: npt.ArrayLike, q_counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Jensen–Shannon distance (base 2, in [0, 1]) of histograms along the last axis."""
    p, q = (np.asarray(x, dtype=float) for x in (p_counts, q_counts))
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(axis=-1, keepdims=True), 1e-300)
    m = np.where(p + q > 0, (p + q) / 2, 1.0)  # where both are 0 the terms below are 0 anyway
    divergence = (p * np.log2(np.where(p > 0, p, 1.0) / m)
                  + q * np.log2(np.where(q > 0, q, 1.0) / m)).sum(axis=-1) / 2
    distance: npt.NDArray[np.float64] = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return distance


def _ecdf_gaps(r: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> tuple[float, float, int]:
    """KS statistic, Wasserstein-1 distance and distinct values of two sorted samples."""
    both = np.sort(np.concatenate([r, c]))
    gaps = np.abs(np.searchsorted(r, both, side="right") / r.size
                  - np.searchsorted(c, both, side="right") / c.size)
    steps = np.diff(both)
    return float(gaps.max()), float(gaps[:-1] @ steps), int(np.count_nonzero(steps)) + 1


def _ks_p(d: float, n: int, m: int) -> float:
    """Two-sample KS p-value: the Kolmogorov distribution with Stephens' small-sample
    correction (Numerical Recipes' ``kstwo``), as calibrated as scipy's ``asymp`` and a
    ufunc call instead of a distribution object (measured in docs/drift.md)."""
    en = math.sqrt(n * m / (n + m))
    return float(np.clip(special.kolmogorov((en + 0.12 + 0.11 / en) * d), 0.0, 1.0))


def _floats(name: str, values: Column) -> npt.NDArray[np.float64]:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"feature {name}: values must be numbers") from exc
    if x.ndim != 1 or not np.isfinite(x).all():
        raise DriftInputError(f"feature {name}: values must be a flat sequence of finite numbers")
    return x


def _moments(r: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> Evidence:
    """The seed product's rules of thumb (|mean shift| > 25%, variance ratio outside [0.5, 2])."""
    mr, mc, vr, vc = float(r.mean()), float(c.mean()), float(r.var(ddof=1)), float(c.var(ddof=1))
    return {"mean_reference": mr, "mean_current": mc,
            "mean_shift": (mc - mr) / abs(mr) if mr else None,
            "standardized_mean_shift": (mc - mr) / math.sqrt(vr) if vr > 0 else None,
            "variance_ratio": vc / vr if vr > 0 else None}


def _categorical(name: str, kind: str, ref: Sequence[Hashable], cur: Sequence[Hashable],
                 effect_name: str) -> FeatureDrift:
    try:
        rc, cc = Counter(ref), Counter(cur)
    except TypeError as exc:
        raise DriftInputError(f"feature {name}: categories must be hashable values") from exc
    levels = sorted(rc.keys() | cc.keys(), key=lambda v: (str(v), type(v).__name__))
    table = np.array([[rc[v] for v in levels], [cc[v] for v in levels]], dtype=float)
    # Categories too rare for the chi-square approximation are pooled into one column.
    rare = table.sum(axis=0) * table.sum(axis=1).min() / table.sum() < _MIN_EXPECTED
    merged = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)]) if rare.any() else table
    statistic, p = 0.0, 1.0
    if merged.shape[1] >= 2:  # Pearson's test of homogeneity, as chi2_contingency(correction=False)
        expected = np.outer(merged.sum(axis=1), merged.sum(axis=0)) / merged.sum()
        statistic = float(np.sum((merged - expected) ** 2 / expected))
        p = float(special.chdtrc(merged.shape[1] - 1, statistic))
    shares = table / table.sum(axis=1, keepdims=True)
    largest = int(np.argmax(np.abs(shares[1] - shares[0])))
    evidence: Evidence = {
        "levels_reference": len(rc), "levels_current": len(cc),
        "rare_levels_pooled": int(rare.sum()),
        "new_level_share": sum(n for v, n in cc.items() if v not in rc) / len(cur),
        "largest_change": str(levels[largest]),
        "largest_change_reference": float(shares[0, largest]),
        "largest_change_current": float(shares[1, largest])}
    return FeatureDrift(name, kind, effect_name, statistic, p, p, float(js_distance(*table)),
                        psi(*table), False, len(ref), len(cur), evidence)


def _numeric(name: str, ref: Column, cur: Column, policy: DriftPolicy, large: bool) -> FeatureDrift:
    r, c = np.sort(_floats(name, ref)), np.sort(_floats(name, cur))
    moments = _moments(r, c)
    d, w1, distinct = _ecdf_gaps(r, c)
    if distinct <= policy.max_levels:
        # Few distinct values: KS's p-value is badly conservative under ties; compare counts.
        found = _categorical(name, "numeric", r.tolist(), c.tolist(),
                             "jensen_shannon" if large else "chi2")
        return replace(found, evidence=found.evidence | moments)
    scale = float(r.std(ddof=1)) or float(np.concatenate([r, c]).std(ddof=1))
    edges = np.unique(r[np.arange(1, policy.psi_bins) * r.size // policy.psi_bins])  # deciles
    counts = [np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
              for x in (r, c)]
    p = _ks_p(d, r.size, c.size)
    return FeatureDrift(name, "numeric", "wasserstein" if large else "ks", d, p, p, w1 / scale,
                        psi(*counts), False, r.size, c.size, moments)


def _tokens(name: str, docs: Column) -> list[list[str]]:
    if not all(isinstance(d, str) for d in docs):
        raise DriftInputError(f"feature {name}: text values must be strings")
    return [_TOKEN.findall(d.lower()) for d in docs]


def _permutation_p(x: sparse.csr_array, in_current: npt.NDArray[np.float64], observed: float,
                   rng: np.random.Generator, policy: DriftPolicy) -> float:
    """Monte Carlo p-value of the tokens' JS distance under random splits of the documents.

    Besag & Clifford's sequential rule: stop as soon as ``permutation_hits`` splits reach the
    observed distance (p = hits / splits drawn), else after ``permutations`` splits
    (p = (reached + 1) / (permutations + 1)). Both are valid p-values; windows that look
    alike stop after a few dozen splits, drifted ones run in full.
    """
    n = in_current.size
    total = x.sum(axis=0)
    reached = drawn = 0
    block = max(1, min(100, 4_000_000 // n))  # bounds the memory of one block of splits
    while drawn < policy.permutations:
        size = min(block, policy.permutations - drawn)
        splits = rng.permuted(np.broadcast_to(in_current, (size, n)), axis=1)
        current = (x.T @ splits.T).T
        hits = np.cumsum(js_distance(total - current, current) >= observed - 1e-12)
        if reached + hits[-1] >= policy.permutation_hits:
            at = int(np.searchsorted(hits, policy.permutation_hits - reached))
            return policy.permutation_hits / (drawn + at + 1)
        reached, drawn = reached + int(hits[-1]), drawn + size
    return (reached + 1) / (policy.permutations + 1)


def _text(name: str, ref: Column, cur: Column, policy: DriftPolicy) -> FeatureDrift:
    """Token distributions compared by JS distance; the p-value comes from permuting whole
    documents between the windows, which stays valid when words within a document are
    dependent (topics, repeated words) — counting tokens as independent draws does not."""
    docs = _tokens(name, ref) + _tokens(name, cur)
    nr, n = len(ref), len(docs)
    pooled = Counter(t for doc in docs for t in doc)
    # The vocabulary comes from both windows together, so it is the same under every
    # permutation and the test stays exact.
    vocab = sorted(pooled, key=lambda t: (-pooled[t], t))[:policy.vocabulary]
    index, k = {t: i for i, t in enumerate(vocab)}, len(vocab)
    ids = np.array([index.get(t, k) for doc in docs for t in doc], dtype=np.int64)
    rows = np.repeat(np.arange(n), [len(doc) for doc in docs])
    x = sparse.csr_array((np.ones(ids.size), (rows, ids)), shape=(n, k + 1))  # documents × tokens
    in_current = (np.arange(n) >= nr).astype(float)
    total, cur_counts = x.sum(axis=0), x.T @ in_current
    observed = float(js_distance(total - cur_counts, cur_counts))
    p = _permutation_p(x, in_current, observed,
                       np.random.default_rng([policy.seed, zlib.crc32(name.encode())]), policy)
    lengths = [np.array([len(d) for d in part], dtype=float) for part in (docs[:nr], docs[nr:])]
    seen = {t for doc in docs[:nr] for t in doc}
    unseen = sum(t not in seen for doc in docs[nr:] for t in doc)
    evidence: Evidence = {
        "vocabulary": k, "mean_tokens_reference": float(lengths[0].mean()),
        "mean_tokens_current": float(lengths[1].mean()),
        "length_p_value": _ks_p(_ecdf_gaps(*map(np.sort, lengths))[0], nr, n - nr),
        "unseen_token_rate": unseen / max(sum(len(doc) for doc in docs[nr:]), 1)}
    return FeatureDrift(name, "text", "token_permutation", observed, p, p, observed,
                        psi(total - cur_counts, cur_counts), False, nr, n - nr, evidence)


def _test(name: str, kind: str, ref: Column, cur: Column, policy: DriftPolicy) -> FeatureDrift:
    large = min(len(ref), len(cur)) >= policy.large_sample
    if kind == "numeric":
        return _numeric(name, ref, cur, policy, large)
    if kind == "categorical":
        return _categorical(name, kind, list(ref), list(cur), "jensen_shannon" if large else "chi2")
    if kind == "text":
        return _text(name, ref, cur, policy)
    raise DriftInputError(f"feature {name}: unknown kind {kind!r} (numeric, categorical or text)")


def _decide(found: FeatureDrift, p_adjusted: float, policy: DriftPolicy) -> FeatureDrift:
    large = min(found.n_reference, found.n_current) >= policy.large_sample
    drifted = p_adjusted <= policy.alpha and (not large or found.effect >= policy.min_effect)
    return replace(found, p_adjusted=p_adjusted, drifted=drifted)


def _rows(side: str, columns: Mapping[str, Column], kinds: Mapping[str, str],
          labels: Column | None, policy: DriftPolicy) -> int:
    missing = [name for name in kinds if name not in columns]
    if missing:
        raise DriftInputError(f"{side} window lacks features {missing}")
    lengths = {len(columns[name]) for name in kinds}
    if labels is not None:
        lengths.add(len(labels))
    if len(lengths) != 1:
        raise DriftInputError(f"{side} window: features and labels differ in length "
                              f"{sorted(lengths)}")
    n = lengths.pop()
    if n < policy.min_samples:
        raise DriftInputError(f"{side} window has {n} rows; drift needs at least "
                              f"{policy.min_samples}")
    return n


def detect_drift(reference: Mapping[str, Column], current: Mapping[str, Column],
                 kinds: Mapping[str, str], *, labels_reference: Column | None = None,
                 labels_current: Column | None = None, label_kind: str = "categorical",
                 policy: DriftPolicy = DriftPolicy()) -> DriftReport:
    """Compare ``current`` with ``reference``, column by column, for the features in ``kinds``
    (name → numeric | categorical | text), plus the labels when both windows' are given
    (``label_kind`` categorical for classification, numeric for regression)."""
    if label_kind not in ("categorical", "numeric"):
        raise DriftInputError(f"label_kind must be categorical or numeric, not {label_kind!r}")
    if (labels_reference is None) != (labels_current is None):
        raise DriftInputError("give the labels of both windows or of neither")
    if not kinds and labels_reference is None:
        raise DriftInputError("nothing to compare: no features and no labels")
    n_ref = _rows("reference", reference, kinds, labels_reference, policy)
    n_cur = _rows("current", current, kinds, labels_current, policy)
    found = [_test(name, kind, reference[name], current[name], policy)
             for name, kind in kinds.items()]
    tested = tuple(_decide(f, p, policy)
                   for f, p in zip(found, adjust([f.p_value for f in found], policy.correction)))
    label = None
    if labels_reference is not None and labels_current is not None:
        raw = _test("label", label_kind, labels_reference, labels_current, policy)
        label = _decide(raw, raw.p_value, policy)  # its own family: prior drift is another question
    drifted = sum(f.drifted for f in tested)
    share = drifted / len(tested) if tested else 0.0
    return DriftReport(tested, drifted > 0 and share >= policy.share_threshold, share,
                       policy.share_threshold, policy.alpha, policy.correction, label, n_ref, n_cur)
