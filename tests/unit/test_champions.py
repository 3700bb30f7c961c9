"""A replica's champions. It loads a new one beside the serving one only if memory allows it (the
pure rule, the reading of the machine's and the container's memory, a promotion refused while
the old champion keeps serving), and a rollback to the version just replaced needs no load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from refit import signing
from refit.artifacts import LocalArtifactStore
from refit.core.serving import SESSION_BYTES_PER_ARTIFACT_BYTE, headroom_for
from refit.core.shadow import Contender, ShadowPlan
from refit.datasets import sample_rows
from refit.events import ModelPromoted, ModelRolledBack
from refit.memory import available_bytes
from refit.specs import ModelSpecs, load_specs
from services.inference.serving import Champions
from tests.support.training import Row, fit

MiB = 2**20
KEY = b"test-key"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("artifact", "available", "reserve", "room"), [
    (10 * MiB, None, 256 * MiB, True),                                       # unknown: never blocks a swap
    (10 * MiB, 256 * MiB + 10 * MiB * SESSION_BYTES_PER_ARTIFACT_BYTE, 256 * MiB, True),  # exactly enough
    (10 * MiB, 256 * MiB + 10 * MiB * SESSION_BYTES_PER_ARTIFACT_BYTE - 1, 256 * MiB, False),
    (0, 0, 0, True),
    (1, 0, 0, False),
    (10 * MiB, 0, 0, False),
    (100 * MiB, 8 * 1024 * MiB, 256 * MiB, True),
])
def test_headroom_for(artifact: int, available: int | None, reserve: int, room: bool) -> None:
    assert headroom_for(artifact, available, reserve) is room


def test_available_memory_is_capped_by_a_cgroup_v2_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text(str(1024 * MiB - 100 * MiB))
    assert available_bytes(tmp_path) == 100 * MiB


def test_available_memory_reads_cgroup_v1_and_ignores_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(str(500 * MiB))
    assert available_bytes(tmp_path) == 12 * MiB
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("1")
    assert available_bytes(tmp_path) > 12 * MiB  # v2 says no limit: the machine's memory


def test_page_cache_the_kernel_can_reclaim_is_not_counted_as_used(tmp_path: Path) -> None:
    """A busy container's usage fills with page cache up to its limit; only the working set counts."""
    (tmp_path / "memory.max").write_text(str(1024 * MiB))
    (tmp_path / "memory.current").write_text(str(1024 * MiB))  # at the limit, mostly cache
    (tmp_path / "memory.stat").write_text(f"anon {300 * MiB}\nfile {724 * MiB}\nactive_file {124 * MiB}\n"
                                          f"inactive_file {600 * MiB}\n")
    assert available_bytes(tmp_path) == 600 * MiB
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(1024 * MiB))
    (v1 / "memory" / "memory.usage_in_bytes").write_text(str(1000 * MiB))
    (v1 / "memory" / "memory.stat").write_text(f"inactive_file {1 * MiB}\ntotal_inactive_file {500 * MiB}\n")
    assert available_bytes(v1) == 524 * MiB  # the hierarchical total, as the kubelet reads it


def test_no_cgroup_files_means_the_machines_memory(tmp_path: Path) -> None:
    assert available_bytes(tmp_path) > 0


def promotion(digest: str, sequence: int, version: int, model: str = "digits") -> tuple[bytes, str]:
    payload = ModelPromoted(model=model, sequence=sequence, candidate_id=None, version=version, digest=digest,
                            artifact_uri=f"file:///{digest}", task="classification").to_bytes()
    return payload, signing.sign(KEY, payload)


def two_digits_models(specs: ModelSpecs, store: LocalArtifactStore, n: int, m: int) -> tuple[str, str]:
    """The digests of two digits models put in ``store``: fitted on the first ``n`` rows, and the first ``m``."""
    spec = specs.get("digits")
    rows = [Row(str(i), r["features"], None, str(r["label"]), None, "")  # type: ignore[arg-type]
            for i, r in enumerate(sample_rows("digits", 7)[:n])]
    return store.put(fit(spec, rows).onnx_bytes), store.put(fit(spec, rows[:m]).onnx_bytes)


def test_a_promotion_without_headroom_is_refused_and_the_champion_keeps_serving(tmp_path: Path) -> None:
    specs = load_specs(REPO / "config" / "models.yaml")
    store = LocalArtifactStore(tmp_path)
    first, second = two_digits_models(specs, store, 400, 300)
    room = {"bytes": 8 * 1024 * MiB}
    champions = Champions(specs, store, KEY, reserve_bytes=256 * MiB, available=lambda: room["bytes"])

    async def scenario() -> None:
        assert await champions.apply(*promotion(first, 1, 1), "topic")
        room["bytes"] = 256 * MiB + 1000  # the second session would not fit beside the first
        assert not await champions.apply(*promotion(second, 2, 2), "topic")
        assert champions.served["digits"].version == 1
        assert champions.refused == {"signature": 0, "load": 0, "decode": 0, "memory": 1, "unconfigured": 0,
                                     "sequence": 0}
        room["bytes"] = 1024 * MiB  # memory freed: the same decision, redelivered, now swaps
        assert await champions.apply(*promotion(second, 2, 2), "topic")
        assert champions.served["digits"].version == 2

    asyncio.run(scenario())


class CountingStore(LocalArtifactStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetched: list[str] = []

    def get(self, digest: str) -> bytes:
        self.fetched.append(digest)
        return super().get(digest)


def test_a_rollback_to_the_replaced_version_reuses_its_loaded_session(tmp_path: Path) -> None:
    specs = load_specs(REPO / "config" / "models.yaml")
    store = CountingStore(tmp_path)
    first, second = two_digits_models(specs, store, 300, 250)
    champions = Champions(specs, store, KEY)

    async def scenario() -> None:
        assert await champions.apply(*promotion(first, 1, 1), "topic")
        one = champions.served["digits"].model
        assert await champions.apply(*promotion(second, 2, 2), "topic")
        back = ModelRolledBack(model="digits", sequence=3, candidate_id=None, version=1, digest=first,
                               artifact_uri="file:///x", task="classification").to_bytes()
        assert await champions.apply(back, signing.sign(KEY, back), "topic")
        assert champions.served["digits"].version == 1
        assert champions.served["digits"].model is one  # the same session, not a new load
        assert store.fetched == [first, second]

    asyncio.run(scenario())


def test_the_monitors_answer_wins_and_a_decision_far_ahead_of_it_is_refused(tmp_path: Path) -> None:
    """Issue 17, defect 13: one signed decision numbered 1,000,000 no longer freezes a replica.

    Read from the topic before the monitor answered, it is served; the monitor's signed answer
    takes the replica back, and from then on a decision that far ahead is refused with the reason.
    """
    specs = load_specs(REPO / "config" / "models.yaml")
    store = LocalArtifactStore(tmp_path)
    genuine, forged = two_digits_models(specs, store, 300, 250)
    champions = Champions(specs, store, KEY)

    async def scenario() -> None:
        assert await champions.apply(*promotion(genuine, 3, 2), "topic")
        assert await champions.apply(*promotion(forged, 1_000_000, 99), "topic")   # no monitor answer yet
        assert not await champions.apply(*promotion(genuine, 4, 2), "topic")       # looks old beside it
        assert await champions.apply(*promotion(genuine, 4, 2), "monitor")         # the monitor wins
        assert (champions.served["digits"].version, champions.served["digits"].sequence) == (2, 4)
        outcome = await champions.apply(*promotion(forged, 1_000_000, 99), "topic")
        assert not outcome and outcome.refused == \
            "sequence 1000000 is more than 1000 ahead of the monitor's champion decision (4)"
        assert await champions.apply(*promotion(forged, 5, 3), "topic")            # a genuine next one swaps
        assert champions.served["digits"].version == 3

    asyncio.run(scenario())
    assert champions.refused == {"signature": 0, "load": 0, "decode": 0, "memory": 0, "unconfigured": 0,
                                 "sequence": 1}
    assert dict(champions.swaps_by_source) == {"topic": 3, "monitor": 1}


def test_refused_decisions_say_why(tmp_path: Path) -> None:
    """Issue 17, defect 17: a decision for a model not configured here is refused with a reason
    (the topic's reader dead-letters it), as a forgery is."""
    champions = Champions(load_specs(REPO / "config" / "models.yaml"), LocalArtifactStore(tmp_path), KEY)
    payload, signature = promotion("0" * 64, 1, 1, model="ghost")

    async def scenario() -> list[str | None]:
        return [(await champions.apply(payload, signature, "topic")).refused,
                (await champions.apply(payload, signing.sign(b"another key", payload), "topic")).refused,
                (await champions.apply(payload, None, "topic")).refused]

    assert asyncio.run(scenario()) == ["no model named 'ghost' is configured here",
                                       "decision signature does not verify", "decision is not signed"]
    assert champions.refused == {"signature": 2, "load": 0, "decode": 0, "memory": 0, "unconfigured": 1,
                                 "sequence": 0}
    assert champions.served == {}


def test_earlier_decisions_the_monitor_signed_teach_the_shadow_and_swap_nothing(tmp_path: Path) -> None:
    """A replica that starts after the decisions topic dropped the older decisions (retention) learns the
    champion's challengers from those beside the monitor's answer; a forged one is refused and counted."""
    specs = load_specs(REPO / "config" / "models.yaml")
    store = LocalArtifactStore(tmp_path)
    first, second = two_digits_models(specs, store, 300, 250)
    champions = Champions(specs, store, KEY)
    plan = ShadowPlan()
    champions.followers.append(lambda e: plan.follow(e.event_type, e.sequence, e.version, e.digest))
    forged_payload, _ = promotion(second, 3, 3)

    async def scenario() -> None:
        assert await champions.apply(*promotion(second, 2, 2), "monitor")  # the champion's answer first
        assert champions.learn(*promotion(first, 1, 1))                    # then what came before it
        assert not champions.learn(forged_payload, signing.sign(b"another key", forged_payload))
        assert not champions.learn(*promotion(first, 1, 1, model="ghost"))  # not configured here

    asyncio.run(scenario())
    assert plan.challengers(serving=2) == (Contender(1, first, "previous"),)
    assert (champions.served["digits"].version, champions.swaps) == (2, 1)  # learning swapped nothing
    assert champions.refused["signature"] == 1
