"""Shadow scoring: which versions a replica scores (the plan), the served rows it publishes, and how the
monitor pairs them with the labels that arrive."""

from __future__ import annotations

import asyncio
import doctest
from datetime import UTC, datetime, timedelta

import numpy as np
import onnx
import orjson
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import Ridge

from refit.core import shadow as shadow_core
from refit.core.sequential import PairedTest
from refit.core.shadow import Contender, ShadowPlan
from refit.datasets import sample_rows
from refit.errors import SchemaError
from refit.events import SampleIngested, ShadowOutputs, ShadowScored
from refit.onnx_model import META_FEATURES, META_INPUT_KIND, META_TASK, OnnxModel
from refit.specs import load_specs
from services.inference.serving import Champions, Served
from services.inference.shadow import Shadow
from services.monitor.challengers import Challenger, Shadows, challenge
from tests.conftest import SPECS
from tests.support.fakes import RecordingPublisher

SPEC = load_specs(SPECS).get("diabetes")
ROWS = sample_rows("diabetes")
FEATURES = list(SPEC.input.features)


def ridge(flip: bool) -> OnnxModel:
    """A real regression model of the diabetes rows, or of their turned-around target."""
    x = np.array([[r["features"][f] for f in FEATURES] for r in ROWS[:300]], dtype=np.float32)
    y = [400.0 - r["label"] if flip else r["label"] for r in ROWS[:300]]
    proto = to_onnx(Ridge(alpha=0.1).fit(x, y), initial_types=[("input", FloatTensorType([None, len(FEATURES)]))])
    onnx.helper.set_model_props(proto, {META_TASK: "regression", META_INPUT_KIND: "numeric",
                                        META_FEATURES: orjson.dumps(FEATURES).decode()})
    return OnnxModel(proto.SerializeToString())


# -- the plan ---------------------------------------------------------------------------------------------------------


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(shadow_core).failed == 0


def test_the_plan_follows_the_monitors_rule_through_promotions_rejections_and_rollbacks() -> None:
    plan = ShadowPlan()
    assert plan.challengers(serving=1) == ()
    plan.follow("ModelPromoted", 1, 1, "d1")
    plan.follow("CandidateRejected", 2, 2, "d2")
    plan.follow("CandidateRejected", 3, 3, "d3")
    assert plan.challengers(serving=1) == (Contender(3, "d3", "candidate"),)  # the newest rejected only
    plan.follow("ModelPromoted", 4, 4, "d4")
    assert plan.challengers(serving=4) == (Contender(1, "d1", "previous"),)  # v3 is older than the champion
    plan.follow("CandidateRejected", 5, 5, "d5")
    assert plan.challengers(serving=4) == (Contender(1, "d1", "previous"), Contender(5, "d5", "candidate"))
    plan.follow("ModelRolledBack", 6, 1, "d1")
    assert plan.challengers(serving=1) == (Contender(5, "d5", "candidate"),)  # a rollback leaves no previous
    plan.follow("ModelPromoted", 4, 4, "d4")  # a replayed old decision changes nothing
    assert plan.champion == (1, "d1") and plan.previous is None
    plan.follow("ModelPromoted", 7, 5, "d5")  # the rejected candidate promoted on live evidence
    assert plan.challengers(serving=5) == (Contender(1, "d1", "previous"),)


# -- the monitor's side: served rows waiting for their labels -----------------------------------------------------------


def scored(keys: list[str], champion: list[float | None], challenger: list[float | None], version: int = 1,
           challenger_version: int = 2) -> ShadowScored:
    return ShadowScored(model="diabetes", replica_id="inference-0", version=version, digest="a" * 64, keys=keys,
                        values=champion, challengers=[ShadowOutputs(version=challenger_version, digest="b" * 64,
                                                                    role="candidate", values=challenger)])


def test_shadow_rows_wait_by_key_the_first_counts_and_the_oldest_go_first() -> None:
    shadows = Shadows(max_rows=3)
    shadows.add(scored(["r#0", "r#1"], [1.0, 2.0], [3.0, 4.0]))
    shadows.add(scored(["r#0"], [9.0], [9.0]))  # a redelivery, or a later duplicate: the first counts
    shadows.add(scored(["s", "t"], [5.0, 6.0], [7.0, None]))
    assert list(shadows.rows) == ["r#1", "s", "t"] and shadows.received == 4
    row = shadows.take("t")
    assert (row.champion_version, row.champion, row.challengers) == (1, 6.0, {2: None})  # type: ignore[union-attr]
    assert shadows.take("t") is None and shadows.take("r#0") is None


def test_a_shadow_event_whose_outputs_do_not_match_its_keys_is_refused() -> None:
    with pytest.raises(SchemaError, match="2 keys"):
        Shadows(10).add(scored(["a", "b"], [1.0], [1.0, 2.0]))


def test_a_label_pairs_the_served_outputs_when_they_wait_and_is_scored_here_otherwise() -> None:
    """Shadow rows say the challenger was exact and the champion 100 off; scored here, the challenger (a model of
    the turned-around target) is far worse. So wins can only come from the shadow rows: one label, one pair."""
    champion, challenger_model = ridge(flip=False), ridge(flip=True)
    rows = [r["features"] for r in ROWS[300:340]]
    samples = [SampleIngested(model="diabetes", sample_id=f"s{i}", features=r["features"], label=r["label"],
                              request_id=f"req-{i}" if i < 30 else None) for i, r in enumerate(ROWS[300:340])]
    labels = [float(r["label"]) for r in ROWS[300:340]]
    shadows = Shadows(1000)
    shadows.add(scored([f"req-{i}" for i in range(20)], [y + 100 for y in labels[:20]], labels[:20]))
    shadows.add(scored([f"req-{i}" for i in range(20, 25)], [0.0] * 5, [0.0] * 5, version=7))  # another champion's
    test = Challenger(2, "candidate", challenger_model, PairedTest(min_pairs=10), champion_version=1)
    outputs = champion.run(champion.matrix(rows)).values or []
    challenge(SPEC, {2: test}, samples, rows, outputs, shadows)

    theirs = challenger_model.run(challenger_model.matrix(rows[20:])).values or []
    own_wins = sum(abs(t - y) < abs(c - y) for t, c, y in zip(theirs, outputs[20:], labels[20:], strict=True))
    assert (test.test.pairs, test.shadow_pairs, test.test.wins) == (40, 20, 20 + own_wins)
    assert own_wins < 10  # scored here, the model of the turned-around target mostly loses
    assert list(shadows.rows) == []  # every waiting row was taken by its label, used or not


def test_no_pair_is_made_on_a_sample_from_before_either_model_was_trained() -> None:
    """Samples that arrived up to the newest training cutoff of the two (``fresh_after``) may be rows a model
    learnt: the challenger here would win every one of them; only the later ones are paired."""
    champion, challenger_model = ridge(flip=False), ridge(flip=True)
    rows = [r["features"] for r in ROWS[300:340]]
    at = [datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(40)]
    samples = [SampleIngested(model="diabetes", sample_id=f"s{i}", features=r["features"], label=400.0 - r["label"],
                              occurred_at=at[i], request_id=f"req-{i}") for i, r in enumerate(ROWS[300:340])]
    shadows = Shadows(1000)
    shadows.add(scored([f"req-{i}" for i in range(40)], [0.0] * 40, [400.0 - r["label"] for r in ROWS[300:340]]))
    test = Challenger(2, "candidate", challenger_model, PairedTest(min_pairs=10), champion_version=1,
                      fresh_after=at[29])
    challenge(SPEC, {2: test}, samples, rows, champion.run(champion.matrix(rows)).values or [], shadows)
    assert (test.test.pairs, test.shadow_pairs, test.test.wins) == (10, 10, 10)


# -- inference's side: the served rows scored by the challengers --------------------------------------------------------


async def test_served_rows_are_scored_by_the_challengers_of_the_champion_that_served_them() -> None:
    champion, challenger = ridge(flip=False), ridge(flip=True)
    served = Served("diabetes", 1, "a" * 64, 1, champion)
    shadow = Shadow(Champions(load_specs(SPECS), None, b"k"), RecordingPublisher(), "inference-0",  # type: ignore[arg-type]
                    capacity=3, batch_size=2)
    shadow.ready = {"diabetes": (1, ((Contender(2, "b" * 64, "candidate"), challenger),))}
    one = champion.matrix([ROWS[0]["features"]])
    two = champion.matrix([ROWS[1]["features"], ROWS[2]["features"]])
    shadow.offer(served, "single", one, champion.run(one))
    shadow.offer(served, "pair", two, champion.run(two))
    shadow.offer(Served("diabetes", 3, "c" * 64, 2, champion), "other", one, champion.run(one))  # not v1: skipped
    assert (shadow.stats()["enqueued"], shadow.stats()["queued"]) == (2, 2)
    batch = await shadow._take(asyncio.Event())  # a batch's worth waits (2 requests): taken at once
    assert shadow.stats()["queued"] == 0

    records = shadow.encode(batch)
    events = [ShadowScored.model_validate(orjson.loads(value)) for _, _, value, _ in records]
    assert [e.keys for e in events] == [["single", "pair#0"], ["pair#1"]]  # at most 2 rows an event
    both = np.concatenate([one, two])
    assert [v for e in events for v in e.values or []] == pytest.approx(champion.run(both).values)
    assert [v for e in events for v in e.challengers[0].values or []] == pytest.approx(challenger.run(both).values)
    assert (events[0].version, events[0].challengers[0].version, events[0].challengers[0].role) == (1, 2, "candidate")


async def test_what_waits_is_bounded_and_what_is_refused_is_counted() -> None:
    champion = ridge(flip=False)
    served = Served("diabetes", 1, "a" * 64, 1, champion)
    shadow = Shadow(Champions(load_specs(SPECS), None, b"k"), RecordingPublisher(), "inference-0",  # type: ignore[arg-type]
                    capacity=3, batch_size=500)
    shadow.ready = {"diabetes": (1, ((Contender(2, "b" * 64, "candidate"), ridge(flip=True)),))}
    one = champion.matrix([ROWS[0]["features"]])
    for i in range(5):
        shadow.offer(served, f"r{i}", one, champion.run(one))
    assert {k: shadow.stats()[k] for k in ("enqueued", "queued", "dropped_queue_full")} == \
        {"enqueued": 3, "queued": 3, "dropped_queue_full": 2}
    stop = asyncio.Event()
    stop.set()  # stopping: what waits is still taken (the broker answered), without lingering
    batch = await shadow._take(stop)
    assert [w.keys for w in batch] == [["r0", "r1", "r2"]]
    assert await shadow._take(stop) == []  # nothing left: the task ends
