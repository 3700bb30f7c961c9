"""The monitor without a broker: a real Monitor (its SQLite stores, a real diabetes model judged on a real
holdout) behind its HTTP app, with a publisher that acknowledges everything and keeps what it was given."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import Ridge

from refit import topics
from refit.core.split import is_holdout
from refit.datasets import sample_rows
from refit.events import (ArtifactRef, CandidateTrained, ConceptChanged, ConversionCheck, InputSignature,
                          SampleIngested, TrainingStats, parse_event)
from refit.kafka import Incoming
from refit.metrics import Metrics
from refit.onnx_model import META_FEATURES, META_INPUT_KIND, META_TASK
from refit.settings import LOCAL_API_TOKEN, MonitorSettings
from refit.specs import ModelSpec, ModelSpecs, load_specs
from refit.stack import free_port
from services.monitor.app import create_app
from services.monitor.parts import Monitor, open_monitor
from services.monitor.routes import get_monitor
from tests.conftest import SPECS
from tests.support.fakes import RecordingPublisher

AUTH = {"authorization": f"Bearer {LOCAL_API_TOKEN}", "content-type": "application/json"}
SPEC = load_specs(SPECS).get("diabetes")
T0 = datetime(2026, 12, 1, tzinfo=UTC)
ROWS = sample_rows("diabetes")
TRAINING, HOLDOUT = ROWS[:300], ROWS[300:]  # 142 holdout rows: above the spec's min_holdout of 40




@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    """A diabetes regressor as the trainer would store it (ONNX with refit's metadata)."""
    features = list(SPEC.input.features)
    x = np.array([[r["features"][f] for f in features] for r in TRAINING], dtype=np.float32)
    model = Ridge(alpha=0.1).fit(x, [r["label"] for r in TRAINING])
    proto = to_onnx(model, initial_types=[("input", FloatTensorType([None, len(features)]))])
    onnx.helper.set_model_props(proto, {META_TASK: "regression", META_INPUT_KIND: "numeric",
                                        META_FEATURES: orjson.dumps(features).decode()})
    return proto.SerializeToString()


def seed_holdout(monitor: Monitor) -> None:
    """The diabetes holdout rows every judgement here is made on."""
    monitor.registry.add_holdout([SampleIngested(model="diabetes", sample_id=f"h{i}", features=r["features"],
                                                 label=r["label"]) for i, r in enumerate(HOLDOUT)])


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    settings = MonitorSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=SPECS,
                               state_dir=tmp_path, artifact_dir=tmp_path / "artifacts")
    with open_monitor(settings, load_specs(SPECS), RecordingPublisher(), Metrics("monitor")) as built:  # type: ignore[arg-type]
        seed_holdout(built)
        yield built


@pytest.fixture
def api(monitor: Monitor) -> TestClient:
    """The monitor's HTTP app on ``monitor`` (no lifespan: nothing consumes, nothing connects)."""
    app = create_app(monitor.settings, monitor.specs)
    app.dependency_overrides[get_monitor] = lambda: monitor
    return TestClient(app, raise_server_exceptions=False)


CandidateFactory = Callable[..., CandidateTrained]


@pytest.fixture
def candidate(monitor: Monitor, onnx_bytes: bytes) -> CandidateFactory:
    """A diabetes candidate of the same model bytes (or of ``data``), for a retrain request (or none)."""
    default = monitor.artifacts.put(onnx_bytes)

    def make(request_id: str | None, spec: ModelSpec = SPEC, data: bytes | None = None) -> CandidateTrained:
        digest = default if data is None else monitor.artifacts.put(data)
        return CandidateTrained(
            model=spec.name, candidate_id=str(uuid.uuid4()), task=spec.task,
            artifact=ArtifactRef(digest=digest, size_bytes=len(data or onnx_bytes), uri=f"file:{digest}"),
            signature=InputSignature(kind="numeric", features=list(spec.input.features)),
            training=TrainingStats(rows_seen=len(TRAINING), rows_trained=len(TRAINING), rows_held_back=0,
                                   duration_s=0.01, estimator=spec.estimator.class_path,
                                   spec_hash=spec.spec_hash(), code_version="test"),
            conversion=ConversionCheck(rows=10, max_abs_diff=0.0, tolerance=1e-4, passed=True),
            retrain_request_id=request_id,
            trigger="manual" if request_id else "sample_count")

    return make


async def arrive_and_judge(monitor: Monitor, event: CandidateTrained) -> None:
    """What the consumer and the judging loop do with a candidate from the topic."""
    assert await monitor.intake.handle([Incoming(record=None, event=event)]) == {}  # type: ignore[arg-type]
    for version in monitor.registry.pending():
        await monitor.decider.decide(version)


# -- a second candidate for one retrain request -------------------------------------------------------------------


async def test_a_second_candidate_for_a_decided_request_is_rejected_unjudged(monitor: Monitor,
                                                                              candidate: CandidateFactory) -> None:
    """The trainer, killed after publishing its candidate and before marking the request done, trains the
    request again: the same request, here the same bytes. Judged, it would be promoted again (a tie passes)."""
    first = candidate("request-1")
    await arrive_and_judge(monitor, first)
    monitor.triggers.store.fired("diabetes", "manual", "next", {}, "request-2", first.occurred_at, 1, None)
    await arrive_and_judge(monitor, replace_id(first))  # the duplicate, while request-2 is in flight
    _, _, in_flight, _ = monitor.triggers.store.state("diabetes")
    assert in_flight is not None and in_flight.request_id == "request-2"  # not answered by the duplicate

    promoted, duplicate = monitor.publisher.decisions()  # type: ignore[attr-defined]
    assert (promoted["event_type"], promoted["version"]) == ("ModelPromoted", 1)
    assert (duplicate["event_type"], duplicate["version"], duplicate["sequence"]) == ("CandidateRejected", 2, 2)
    assert duplicate["reasons"] == [f"duplicate: retrain request request-1 was already answered by v1 (candidate "
                                    f"{first.candidate_id}); a second candidate for one request is not judged"]
    assert (duplicate["checks"], duplicate["holdout"], duplicate["candidate_scores"]) == ([], None, {})
    assert duplicate["champion_version"] == 1
    assert monitor.registry.serving("diabetes").version == 1  # type: ignore[union-attr]
    assert [(v.version, v.status) for v in monitor.registry.versions("diabetes")] == [(2, "rejected"),
                                                                                      (1, "promoted")]
    assert monitor.metrics.decisions.labels("diabetes", "duplicate")._value.get() == 1

    await arrive_and_judge(monitor, candidate("request-2"))  # the next request is judged as usual
    third = monitor.publisher.decisions()[-1]  # type: ignore[attr-defined]
    assert (third["event_type"], third["version"], third["champion_version"]) == ("ModelPromoted", 3, 1)
    assert third["checks"] and third["holdout"]["size"] == len(HOLDOUT)
    _, _, in_flight, _ = monitor.triggers.store.state("diabetes")
    assert in_flight is None


async def test_a_duplicate_is_rejected_even_before_the_first_is_decided(monitor: Monitor,
                                                                        candidate: CandidateFactory) -> None:
    """With a holdout too small, the first candidate waits; its duplicate is refused at once, and
    candidates of no request (sample-count trainings) are never duplicates."""
    monitor.registry._db.execute("DELETE FROM holdout")
    first = candidate("request-1")
    for event in (first, replace_id(first), candidate(None), candidate(None)):
        await arrive_and_judge(monitor, event)
    assert [(d["event_type"], d["version"]) for d in monitor.publisher.decisions()] == [  # type: ignore[attr-defined]
        ("CandidateRejected", 2)]
    assert [(v.version, v.status) for v in monitor.registry.versions("diabetes")] == [
        (4, "pending"), (3, "pending"), (2, "rejected"), (1, "pending")]


def replace_id(event: CandidateTrained) -> CandidateTrained:
    """The same training published again: a new candidate id (and event id), the same request and bytes."""
    return event.model_copy(update={"candidate_id": str(uuid.uuid4()), "event_id": uuid.uuid4()})


# -- lone surrogates in the control plane -------------------------------------------------------------------------

# (method, path, raw body with {s} where a string goes, the location its 422 names, {s} escaped)
SURROGATE_PLACES = [
    ("POST", "/v1/models/diabetes/retrain", '{"reason": "new {s} labels"}', ["body", "reason"]),
    ("POST", "/v1/models/diabetes/rollback", '{"reason": "{s}"}', ["body", "reason"]),
    ("POST", "/v1/models/diabetes/rollback", '{"to_version": 1, "{s}": 1}', ["body", "{s}"]),
    ("PUT", "/v1/models/diabetes/config", '{"schedules": [{"name": "{s}", "cron": {"hour": 3}}]}',
     ["body", "schedules", 0, "name"]),
    ("PUT", "/v1/models/diabetes/config", '{"schedules": [{"name": "n", "cron": {"hour": 3}, "timezone": "{s}"}]}',
     ["body", "schedules", 0, "timezone"]),
    ("PUT", "/v1/models/diabetes/config", '{"schedules": [{"name": "n", "cron": {"{s}": 3}}]}',
     ["body", "schedules", 0, "cron", "{s}"]),
]


@pytest.mark.parametrize(("text", "shown"), [("\\ud800", "\\ud800"), ("\\udfff", "\\udfff"), ("\udfff", "\\udfff")],
                         ids=["ud800", "udfff", "raw-bytes"])
@pytest.mark.parametrize(("method", "path", "body", "loc"), SURROGATE_PLACES,
                         ids=[f"{p[1].rsplit('/', 1)[1]}-{p[3][-1]}" for p in SURROGATE_PLACES])
def test_a_lone_surrogate_in_a_body_is_a_422_naming_the_field(api: TestClient, monitor: Monitor, method: str,
                                                              path: str, body: str, loc: list[Any], text: str,
                                                              shown: str) -> None:
    response = api.request(method, path, headers=AUTH, content=body.replace("{s}", text).encode(
        "utf-8", "surrogatepass"))
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == [p.replace("{s}", shown) if isinstance(p, str) else p for p in loc]
    assert f"lone surrogate ({shown})" in error["msg"]
    assert monitor.publisher.sent == []  # type: ignore[attr-defined]
    assert api.get("/v1/models/diabetes/config").json()["source"] == "spec"


async def test_a_valid_surrogate_pair_is_taken_everywhere(api: TestClient, monitor: Monitor,
                                                          candidate: CandidateFactory) -> None:
    for request_id in ("a", "b"):  # two champions, so that there is something to roll back to
        await arrive_and_judge(monitor, candidate(request_id))
    pair, emoji = "\\ud83d\\ude00", "\U0001f600"

    retrain = api.post("/v1/models/diabetes/retrain", headers=AUTH, content=f'{{"reason": "new {pair}"}}')
    assert retrain.status_code == 202, retrain.text
    assert monitor.triggers.store.history("diabetes")[0]["reason"] == f"new {emoji}"
    rollback = api.post("/v1/models/diabetes/rollback", headers=AUTH, content=f'{{"reason": "{pair}"}}')
    assert rollback.status_code == 200, rollback.text
    assert monitor.publisher.decisions()[-1]["reasons"] == [f"rollback from v2 to v1: {emoji}"]  # type: ignore
    schedule = f'{{"name": "{pair}", "cron": {{"hour": 3}}, "timezone": "Europe/Paris"}}'
    config = api.put("/v1/models/diabetes/config", headers=AUTH, content=f'{{"schedules": [{schedule}]}}')
    assert config.status_code == 200, config.text
    assert api.get("/v1/models/diabetes/config").json()["triggers"]["schedules"][0]["name"] == emoji


@pytest.mark.parametrize("path", ["/v1/models/%ED%A0%80", "/v1/models/%ED%A0%80/decisions", "/v1/artifacts/%ED%A0%80",
                                  "/v1/models/diabetes/decisions?limit=%ED%A0%80", "/v1/reports?days=%ED%BF%BF",
                                  "/v1/models/diabetes/dataset?format=%ED%A0%80"])
def test_surrogate_bytes_in_a_path_or_query_are_a_4xx(api: TestClient, path: str) -> None:
    """URLs are decoded as UTF-8 with replacement: such bytes arrive as U+FFFD, never as a surrogate."""
    response = api.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_the_newest_holdout_rows_are_read_through_an_index_not_a_sort(tmp_path: Path) -> None:
    from services.monitor.registry import Registry

    registry = Registry(tmp_path / "monitor.sqlite")
    for query, args in (("SELECT sample_id FROM holdout WHERE model = ? ORDER BY seq DESC LIMIT ?", ("m", 10)),
                        ("SELECT sample_id FROM holdout WHERE model = ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
                         ("m", 5, 10))):
        plan = " ".join(str(row[-1]) for row in registry._db.execute(f"EXPLAIN QUERY PLAN {query}", args))
        assert "holdout_by_model_seq" in plan and "TEMP B-TREE" not in plan, plan


# -- a candidate whose judging fails (issue 17, defect 1) ----------------------------------------------------------


async def test_a_candidate_whose_judging_fails_is_rejected_with_the_reason_and_the_next_is_judged(
        monitor: Monitor, candidate: CandidateFactory, onnx_bytes: bytes) -> None:
    """A spec whose features changed after a candidate was trained: scoring it on the holdout raises.
    Before, the exception ended the judging loop (a zombie monitor, the version pending forever)."""
    proto = onnx.load_from_string(onnx_bytes)
    onnx.helper.set_model_props(proto, {META_TASK: "regression", META_INPUT_KIND: "numeric",
                                        META_FEATURES: orjson.dumps([*SPEC.input.features[:-1], "gone"]).decode()})
    stale = candidate(None)
    stale_digest = monitor.artifacts.put(proto.SerializeToString())
    stale = stale.model_copy(update={"artifact": stale.artifact.model_copy(update={"digest": stale_digest})})

    await arrive_and_judge(monitor, stale)
    await arrive_and_judge(monitor, candidate(None))

    rejected, promoted = monitor.publisher.decisions()  # type: ignore[attr-defined]
    assert (rejected["event_type"], rejected["version"], rejected["checks"]) == ("CandidateRejected", 1, [])
    assert rejected["reasons"] == ["judging failed: KeyError: 'gone'; the candidate is rejected and the champion "
                                   "stays"]
    assert (promoted["event_type"], promoted["version"], promoted["sequence"]) == ("ModelPromoted", 2, 2)
    assert [(v.version, v.status) for v in monitor.registry.versions("diabetes")] == [(2, "promoted"),
                                                                                      (1, "rejected")]
    assert monitor.metrics.decisions.labels("diabetes", "judging_failed")._value.get() == 1


# -- judging on the current concept (issue 12, item 2) ---------------------------------------------------------------


def ridge_onnx(labels: list[float]) -> bytes:
    features = list(SPEC.input.features)
    x = np.array([[r["features"][f] for f in features] for r in TRAINING], dtype=np.float32)
    proto = to_onnx(Ridge(alpha=0.1).fit(x, labels), initial_types=[("input", FloatTensorType([None, len(features)]))])
    onnx.helper.set_model_props(proto, {META_TASK: "regression", META_INPUT_KIND: "numeric",
                                        META_FEATURES: orjson.dumps(features).decode()})
    return proto.SerializeToString()


def flipped(label: float) -> float:
    """The new concept: the same inputs, the target turned around."""
    return 400.0 - label


@pytest.mark.parametrize("current_concept", [True, False], ids=["after-the-change", "whole-window"])
async def test_after_a_change_a_candidate_of_the_new_concept_is_judged_on_rows_after_it(
        tmp_path: Path, candidate: CandidateFactory, current_concept: bool) -> None:
    """The champion learnt the old concept; after a detected change, 50 holdout rows of the new one
    arrive beside 142 of the old. Judged on the rows after the change, the candidate trained on the
    new concept is promoted; judged on the whole window, dominated by the ended concept, it is rejected."""
    data = yaml.safe_load(SPECS.read_text())
    for model in data["models"]:
        model.setdefault("safeguard", {})["judge_on_current_concept"] = current_concept
    (tmp_path / "specs.yaml").write_text(yaml.safe_dump(data))
    specs = load_specs(tmp_path / "specs.yaml")
    settings = MonitorSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=tmp_path / "specs.yaml",
                               state_dir=tmp_path / "m", artifact_dir=tmp_path / "m" / "artifacts")
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        seed_holdout(monitor)
        old = candidate(None)
        digest = monitor.artifacts.put(ridge_onnx([r["label"] for r in TRAINING]))
        await arrive_and_judge(monitor, old.model_copy(update={"artifact": old.artifact.model_copy(
            update={"digest": digest})}))
        changed_at = datetime.now(UTC)
        monitor.registry.record_change("diabetes", monitor.registry.holdout_top_seq("diabetes"), changed_at,
                                       "ADWIN on the champion's live error")
        monitor.registry.add_holdout([SampleIngested(model="diabetes", sample_id=f"n{i}", features=r["features"],
                                                     label=flipped(r["label"])) for i, r in enumerate(HOLDOUT[:50])])
        new = candidate(None)
        digest = monitor.artifacts.put(ridge_onnx([flipped(r["label"]) for r in TRAINING]))
        await arrive_and_judge(monitor, new.model_copy(update={"artifact": new.artifact.model_copy(
            update={"digest": digest})}))
        first, second = monitor.publisher.decisions()  # type: ignore[attr-defined]

    assert first["event_type"] == "ModelPromoted" and first["window"]["after_seq"] is None
    window = second["window"]
    if current_concept:
        assert second["event_type"] == "ModelPromoted", second["reasons"]
        assert (window["rows"], second["holdout"]["size"]) == (50, 50)
        assert window["after_seq"] == len(HOLDOUT) and window["changed_at"] == changed_at.isoformat().replace(
            "+00:00", "Z")
        assert window["reason"].startswith("the current concept: holdout rows that arrived after the change "
                                           "detected by ADWIN on the champion's live error")
        assert second["candidate_scores"]["rmse"] < second["champion_scores"]["rmse"] / 2
    else:
        assert second["event_type"] == "CandidateRejected"
        assert (window["rows"], window["after_seq"]) == (len(HOLDOUT) + 50, None)
        assert {c["metric"] for c in second["checks"] if not c["passed"]} >= {"rmse", "mae"}


# -- live evidence: promotion and rollback (issue 12, items 3 and 4) -------------------------------------------------


def no_gates_specs(tmp_path: Path) -> tuple[MonitorSettings, ModelSpecs]:
    """The repository's specs, but diabetes judged on tolerances only (so a model of the other concept may
    be the first champion)."""
    data = yaml.safe_load(SPECS.read_text())
    for model in data["models"]:
        if model["name"] == "diabetes":
            model["safeguard"]["metrics"] = [{"name": "rmse", "max_relative_degradation": 0.01}]
    (tmp_path / "specs.yaml").write_text(yaml.safe_dump(data))
    settings = MonitorSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=tmp_path / "specs.yaml",
                               state_dir=tmp_path / "m", artifact_dir=tmp_path / "m" / "artifacts")
    return settings, load_specs(tmp_path / "specs.yaml")


async def arrive_trained_on(monitor: Monitor, candidate: CandidateFactory, labels: list[float]) -> None:
    made = candidate(None)
    digest = monitor.artifacts.put(ridge_onnx(labels))
    await arrive_and_judge(monitor, made.model_copy(update={"artifact": made.artifact.model_copy(
        update={"digest": digest})}))


async def stream_live(monitor: Monitor, labels: Callable[[float], float], rounds: int = 6) -> list[dict[str, Any]]:
    """Labeled samples of the live concept, 20 at a time, each round followed by the engine's tick;
    returns the decisions published, once one more than before the stream came (or every round ran)."""
    before = len(monitor.publisher.decisions())  # type: ignore[attr-defined]
    for k in range(rounds):
        rows = ROWS[20 * k:20 * (k + 1)]
        samples = [SampleIngested(model="diabetes", sample_id=f"live{k}-{i}", features=r["features"],
                                  label=labels(r["label"])) for i, r in enumerate(rows)]
        assert await monitor.intake.handle([Incoming(record=None, event=s) for s in samples]) == {}  # type: ignore
        await monitor.triggers.tick()
        if len(monitor.publisher.decisions()) > before:  # type: ignore[attr-defined]
            break
    return monitor.publisher.decisions()  # type: ignore[attr-defined,no-any-return]


async def test_a_candidate_rejected_on_the_holdout_but_better_live_is_promoted_with_the_evidence(
        tmp_path: Path, candidate: CandidateFactory) -> None:
    settings, specs = no_gates_specs(tmp_path)
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        seed_holdout(monitor)
        await arrive_trained_on(monitor, candidate, [r["label"] for r in TRAINING])
        await arrive_trained_on(monitor, candidate, [flipped(r["label"]) for r in TRAINING])
        decisions = await stream_live(monitor, flipped)
        challengers = monitor.triggers.describe("diabetes")["challengers"]

    assert [(d["event_type"], d["version"]) for d in decisions] == [
        ("ModelPromoted", 1), ("CandidateRejected", 2), ("ModelPromoted", 2)]
    live = decisions[-1]["live"]
    assert (live["challenger_version"], live["champion_version"], live["alpha"], live["min_pairs"]) == (2, 1, 0.01,
                                                                                                        40)
    assert live["pairs"] >= 40 and live["e_value"] >= 100 and live["wins"] > live["losses"]
    assert decisions[-1]["reasons"][0].startswith("better than champion v1 on live labeled traffic")
    assert challengers == []  # the new champion is challenged from the next tick on


async def test_a_champion_worse_live_than_the_one_it_replaced_is_rolled_back_with_the_evidence(
        tmp_path: Path, candidate: CandidateFactory) -> None:
    settings, specs = no_gates_specs(tmp_path)
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        seed_holdout(monitor)
        await arrive_trained_on(monitor, candidate, [flipped(r["label"]) for r in TRAINING])  # v1, tolerance only
        await arrive_trained_on(monitor, candidate, [r["label"] for r in TRAINING])  # v2, better on the holdout
        decisions = await stream_live(monitor, flipped)  # but live traffic is v1's concept

    assert [(d["event_type"], d["version"]) for d in decisions] == [
        ("ModelPromoted", 1), ("ModelPromoted", 2), ("ModelRolledBack", 1)]
    rollback = decisions[-1]
    assert (rollback["champion_version"], rollback["requested_by"]) == (2, "monitor: live evidence")
    assert (rollback["live"]["challenger_version"], rollback["live"]["champion_version"]) == (1, 2)
    assert rollback["live"]["pairs"] >= 40 and rollback["live"]["e_value"] >= 100
    assert "is worse than v1 on live labeled traffic" in rollback["reasons"][0]


async def test_without_live_labels_nothing_is_decided_live(tmp_path: Path, candidate: CandidateFactory) -> None:
    """The same two models, live traffic of the holdout's own concept: the champion stays."""
    settings, specs = no_gates_specs(tmp_path)
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        seed_holdout(monitor)
        await arrive_trained_on(monitor, candidate, [r["label"] for r in TRAINING])
        await arrive_trained_on(monitor, candidate, [flipped(r["label"]) for r in TRAINING])
        decisions = await stream_live(monitor, lambda label: label)
        challengers = monitor.triggers.describe("diabetes")["challengers"]
    assert [(d["event_type"], d["version"]) for d in decisions] == [("ModelPromoted", 1), ("CandidateRejected", 2)]
    assert challengers[0]["version"] == 2 and challengers[0]["pairs"] == 120 and challengers[0]["worse"]


async def test_rejections_in_a_row_are_counted_per_trigger_with_the_samples_since(monitor: Monitor,
                                                                               candidate: CandidateFactory,
                                                                               onnx_bytes: bytes) -> None:
    """What backs a trigger off (refit.core.triggers.rejection_backoff): derived from the registry alone."""
    await arrive_and_judge(monitor, candidate("first"))  # promoted: streaks count from here
    proto = onnx.load_from_string(onnx_bytes)
    onnx.helper.set_model_props(proto, {META_TASK: "regression", META_INPUT_KIND: "numeric",
                                        META_FEATURES: orjson.dumps(["gone"]).decode()})
    digest = monitor.artifacts.put(proto.SerializeToString())
    for _ in range(2):  # two candidates of the sample-count trigger that cannot be judged: rejected
        made = candidate(None)
        await arrive_and_judge(monitor, made.model_copy(update={"artifact": made.artifact.model_copy(
            update={"digest": digest})}))
    assert monitor.registry.rejection_streaks("diabetes", 0.2) == {"sample_count": (2, 0)}
    monitor.registry.add_holdout([SampleIngested(model="diabetes", sample_id=f"later{i}", features=r["features"],
                                                 label=r["label"]) for i, r in enumerate(HOLDOUT[:10])])
    assert monitor.registry.rejection_streaks("diabetes", 0.2) == {"sample_count": (2, 50)}  # 10 holdout rows
    await arrive_and_judge(monitor, candidate("next"))  # a promotion ends every streak
    assert monitor.registry.rejection_streaks("diabetes", 0.2) == {}


async def test_the_champion_is_served_signed_with_the_monitors_current_key(monitor: Monitor,
                                                                           candidate: CandidateFactory) -> None:
    """Issue 17, defect 13: `refit up` now signs with a key of its own per state dir. On a state made
    before (decisions signed with the old key), or after a key rotation, a replica still follows the
    monitor's answer: the same bytes, signed with the key the monitor has now."""
    from refit import signing

    await arrive_and_judge(monitor, candidate(None))
    published = monitor.publisher.decisions()  # type: ignore[attr-defined]
    rotated = monitor.settings.model_copy(update={"decision_signing_key": SecretStr("a rotated key")})
    with open_monitor(rotated, monitor.specs, RecordingPublisher(), Metrics("monitor")) as reopened:  # type: ignore[arg-type]
        app = create_app(rotated, reopened.specs)
        app.dependency_overrides[get_monitor] = lambda: reopened
        answer = TestClient(app).get("/v1/models/diabetes/champion").json()
    assert orjson.loads(answer["decision"]) == published[-1]
    signing.verify(b"a rotated key", answer["decision"].encode(), answer["signature"])


# -- recording a concept change ------------------------------------------------------------------------------------


async def test_a_change_located_fewer_than_min_holdout_rows_after_the_latest_is_that_change_again(monitor: Monitor) -> None:
    """ADWIN alarms more than once after a change (and a regression's CUSUM may alarm on it too), each alarm
    located a few rows from the last: one change is recorded, not one per alarm; a change located a full
    ``min_holdout`` rows later is a new one. Each recorded change is published for the trainer (ConceptChanged)."""
    fraction, top = SPEC.training.holdout_fraction, monitor.registry.holdout_top_seq("diabetes")
    held = [i for i in range(len(HOLDOUT)) if is_holdout(f"h{i}", fraction, "diabetes")]

    async def located_at(i: int) -> bool:  # the change began with holdout row h{i}
        return await monitor.triggers._record_change(SPEC, [(f"h{i}", T0 + timedelta(seconds=i))],  # noqa: SLF001
                                                     "ADWIN")

    first = held[0]
    near = next(i for i in held if 0 < i - first < SPEC.safeguard.min_holdout)
    far = next(i for i in held if i - first >= SPEC.safeguard.min_holdout)
    assert await located_at(first)
    assert not await located_at(near) and not await located_at(first)  # the same change, located again
    assert await located_at(far)
    assert not await located_at(near)  # before the latest
    assert [c.after_seq for c in monitor.registry.changes("diabetes")] == [
        top - len(HOLDOUT) + far, top - len(HOLDOUT) + first]
    published = [parse_event(value) for topic, value in monitor.publisher.sent  # type: ignore[attr-defined]
                 if topic == topics.RETRAIN_REQUESTS]
    assert [(type(e), e.changed_at) for e in published] == [(ConceptChanged, T0 + timedelta(seconds=i))  # type: ignore[attr-defined]
                                                            for i in (first, far)]
