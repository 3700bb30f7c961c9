"""The holdout split: a deterministic, uniform function of the sample id, salted by model name."""

from __future__ import annotations

import hashlib
import math
import random
from types import SimpleNamespace

import pytest

from refit.core import split
from refit.core.split import fingerprint, holdout_score, is_holdout

N = 100_000


def _ids(n: int = N) -> list[str]:
    return [f"sample-{i}" for i in range(n)]


# --- pinned values: changing the function would silently move rows between holdout and training ----


@pytest.mark.parametrize(
    ("sample_id", "salt", "score"),
    [
        ("sample-0", "digits", 0.7841878120170288),
        ("sample-1", "digits", 0.7110593482238794),
        ("sample-0", "diabetes", 0.540593260457293),
        ("", "m", 0.09550986834973976),
        ("3f2a9c1e-0000-4000-8000-000000000000", "digits", 0.7663421604315668),
    ],
)
def test_holdout_score_is_pinned(sample_id, salt, score):
    assert holdout_score(sample_id, salt) == score


@pytest.mark.parametrize(
    ("salt", "fraction", "members"),
    [
        ("digits", 0.2, [20, 31, 37, 44, 49, 52, 58]),
        ("diabetes", 0.25, [3, 6, 7, 13, 14, 17, 20, 21, 22, 23, 24, 28, 37, 38, 45, 57]),
    ],
)
def test_holdout_membership_is_pinned(salt, fraction, members):
    assert [i for i in range(60) if is_holdout(f"sample-{i}", fraction, salt)] == members


def test_fingerprint_is_pinned():
    assert fingerprint(["a", "b", "c"]) == "880553fca8fcea94e325ee2cfb48e5a985cc797f39a14cc6d3cedecfeb2ae4d2"
    assert fingerprint([]) == hashlib.sha256(b"").hexdigest()


# --- deterministic and uniform ------------------------------------------------------------------------


def test_split_is_deterministic_whatever_the_order_or_repetition():
    ids = _ids(2_000)
    first = {sid for sid in ids if is_holdout(sid, 0.2, "digits")}
    shuffled = ids * 2
    random.Random(7).shuffle(shuffled)

    assert {sid for sid in shuffled if is_holdout(sid, 0.2, "digits")} == first


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("salt", ["digits", "diabetes"])
def test_holdout_fraction_is_within_a_tight_binomial_bound(fraction, salt):
    held = sum(is_holdout(sid, fraction, salt) for sid in _ids())

    # five standard deviations: a correct uniform split fails this about once in 1.7 million
    assert abs(held - N * fraction) <= 5 * math.sqrt(N * fraction * (1 - fraction))


def test_scores_are_uniform_across_ten_bins():
    counts = [0] * 10
    for sid in _ids():
        score = holdout_score(sid, "digits")
        assert 0.0 <= score < 1.0
        counts[int(score * 10)] += 1

    expected = N / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 27.88  # chi-squared, 9 degrees of freedom, p = 0.001


def test_holdout_is_monotonic_in_the_fraction():
    """Growing the fraction only adds rows to the holdout; it never moves one back to training."""
    ids = _ids(5_000)
    smaller = {sid for sid in ids if is_holdout(sid, 0.1, "digits")}
    larger = {sid for sid in ids if is_holdout(sid, 0.3, "digits")}

    assert smaller < larger


def test_salt_separates_models():
    ids = _ids()
    a = {sid for sid in ids if is_holdout(sid, 0.2, "digits")}
    b = {sid for sid in ids if is_holdout(sid, 0.2, "diabetes")}

    # independent splits overlap in about 0.2 * 0.2 of the ids, not in 0.2
    overlap = len(a & b)
    assert abs(overlap - N * 0.04) <= 5 * math.sqrt(N * 0.04 * 0.96)


def test_salt_and_id_are_not_simply_concatenated():
    assert holdout_score("b", "a") != holdout_score("", "ab")
    assert holdout_score("ab", "") != holdout_score("b", "a")


# --- edge fractions and invalid input ---------------------------------------------------------------------


def test_fraction_zero_holds_out_nothing_and_one_holds_out_everything():
    ids = _ids(10_000)

    assert not any(is_holdout(sid, 0.0, "digits") for sid in ids)
    assert all(is_holdout(sid, 1.0, "digits") for sid in ids)


def test_the_largest_possible_digest_still_scores_below_one(monkeypatch):
    """The score is documented in [0, 1), so fraction 1.0 must hold out every id, whatever its hash."""

    class _AllOnes:
        def __init__(self, data: bytes) -> None:
            pass

        def digest(self) -> bytes:
            return b"\xff" * 32

    monkeypatch.setattr(split, "hashlib", SimpleNamespace(sha256=_AllOnes))

    assert holdout_score("any", "digits") < 1.0
    assert is_holdout("any", 1.0, "digits") is True


@pytest.mark.parametrize("fraction", [-0.01, 1.01, -1.0, 2.0, float("nan"), float("inf"), float("-inf")])
def test_invalid_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"holdout fraction must be within \[0, 1\]"):
        is_holdout("sample-0", fraction, "digits")


# --- fingerprint ------------------------------------------------------------------------------------------


def test_fingerprint_is_order_independent():
    ids = _ids(1_000)
    shuffled = list(ids)
    random.Random(3).shuffle(shuffled)

    assert fingerprint(shuffled) == fingerprint(ids)
    assert fingerprint(iter(shuffled)) == fingerprint(tuple(ids))


@pytest.mark.parametrize(
    "other",
    [
        ["a", "b"],  # one removed
        ["a", "b", "c", "d"],  # one added
        ["a", "b", "x"],  # one replaced
        ["a", "bc"],  # same characters, different ids
        ["ab", "c"],
    ],
)
def test_fingerprint_is_sensitive_to_membership(other):
    assert fingerprint(other) != fingerprint(["a", "b", "c"])


def test_fingerprint_is_a_sha256_hex_digest():
    value = fingerprint(_ids(10))

    assert len(value) == 64 and set(value) <= set("0123456789abcdef")
