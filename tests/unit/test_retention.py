"""Which artifacts retention may remove (issue 17, defect 7): a pure rule over versions and decisions."""

from __future__ import annotations

from refit.core.retention import Held, collectable, kept, rollback_reachable


def held(version: int, pending: bool = False, model: str = "m") -> Held:
    return Held(model, version, f"{model}-d{version}", pending)


def test_the_champion_rollback_targets_the_newest_versions_and_pending_candidates_are_kept() -> None:
    versions = [held(v) for v in range(1, 21)] + [held(21, pending=True)]
    serving = [15, 9, 3, 1]  # v15 is the champion; a rollback may reach v9 and v3 (keep 3)
    assert kept(versions, serving, 3) == {"m-d15", "m-d9", "m-d3", "m-d21", "m-d20", "m-d19"}


def test_collectable_is_what_no_model_keeps_and_a_shared_digest_stays() -> None:
    a = [held(v, model="a") for v in range(1, 6)]
    b = [Held("b", 1, "a-d1", False), held(2, model="b")]  # b's v1 has the same bytes as a's v1
    assert collectable({"a": (a, [5], 2), "b": (b, [2, 1], 2)}) == {"a-d2", "a-d3"}
    assert collectable({"a": (a, [5], 2)}) == {"a-d1", "a-d2", "a-d3"}


def test_nothing_is_collectable_while_everything_is_within_reach() -> None:
    versions = [held(v) for v in range(1, 4)]
    assert collectable({"m": (versions, [3, 2, 1], 10)}) == set()
    assert collectable({"m": ([], [], 2)}) == set()


def test_a_rollback_reaches_only_the_champions_retention_keeps() -> None:
    assert rollback_reachable([7, 5, 4, 2], 3) == [7, 5, 4]
    assert rollback_reachable([], 3) == []
