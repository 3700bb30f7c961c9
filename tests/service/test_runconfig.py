"""Configuration at run time (issue 17, the mission's row): the safeguard and training sections, besides the
triggers, set through the monitor's API, validated as one spec, versioned, told to the trainer, persisted, and
named by every decision made under them. A real Monitor (its SQLite stores, a real diabetes model judged on a
real holdout), as in test_monitor.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from aiokafka import ConsumerRecord
from fastapi.testclient import TestClient

from refit import topics
from refit.artifacts import LocalArtifactStore
from refit.datasets import sample_rows
from refit.events import ModelConfigured, SampleIngested
from refit.kafka import Incoming
from refit.metrics import Metrics
from refit.settings import TrainerSettings
from refit.specs import load_specs
from services.monitor.parts import Monitor, open_monitor
from services.trainer.app import Trainer
from services.trainer.fitter import Fitter
from services.trainer.store import DatasetStore
from tests.conftest import SPECS
from tests.service.test_monitor import (AUTH, CandidateFactory, api, arrive_and_judge, candidate,  # noqa: F401
                                        monitor, onnx_bytes)
from tests.support.fakes import RecordingPublisher


def configured(monitor: Monitor) -> list[dict]:
    return [orjson.loads(v) for t, v in monitor.publisher.sent if t == topics.RETRAIN_REQUESTS  # type: ignore
            and orjson.loads(v)["event_type"] == "ModelConfigured"]


async def test_a_safeguard_set_at_run_time_judges_the_next_candidate_and_is_named_by_its_decision(
        api: TestClient, monitor: Monitor, candidate: CandidateFactory) -> None:
    await arrive_and_judge(monitor, candidate("first"))
    assert monitor.publisher.decisions()[-1]["config_version"] == 0  # type: ignore[attr-defined]
    shown = api.get("/v1/models/diabetes/config").json()
    assert (shown["version"], shown["overridden"], shown["source"]) == (0, [], "spec")

    strict = {**shown["safeguard"], "metrics": [{"name": "r2", "min": 0.99}]}
    assert api.put("/v1/models/diabetes/config/safeguard", json=strict).status_code == 401
    changed = api.put("/v1/models/diabetes/config/safeguard", headers=AUTH, json=strict)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["version"], changed.json()["overridden"]) == (1, ["safeguard"])
    r2 = next(m for m in changed.json()["safeguard"]["metrics"] if m["name"] == "r2")
    assert r2["min"] == 0.99  # the task's other default metrics are filled in as the spec file's would be
    (event,) = configured(monitor)
    assert (event["config_version"], event["sections"]["safeguard"]["metrics"][0]) == (1, r2)

    await arrive_and_judge(monitor, candidate("second"))  # the same bytes: a tie passes, but not the new gate
    decision = monitor.publisher.decisions()[-1]  # type: ignore[attr-defined]
    assert (decision["event_type"], decision["config_version"]) == ("CandidateRejected", 1)
    assert any(r.startswith("r2 ") and "must be >= 0.99" in r for r in decision["reasons"]), decision["reasons"]

    reset = api.delete("/v1/models/diabetes/config/safeguard", headers=AUTH)
    assert (reset.json()["version"], reset.json()["overridden"]) == (2, [])
    await arrive_and_judge(monitor, candidate("third"))
    decision = monitor.publisher.decisions()[-1]  # type: ignore[attr-defined]
    assert (decision["event_type"], decision["config_version"]) == ("ModelPromoted", 2)


def test_a_section_that_makes_the_spec_invalid_is_a_422_and_changes_nothing(api: TestClient,
                                                                           monitor: Monitor) -> None:
    before = api.get("/v1/models/diabetes/config").json()
    wrong_metric = {**before["safeguard"], "metrics": [{"name": "accuracy"}]}  # diabetes is a regression
    response = api.put("/v1/models/diabetes/config/safeguard", headers=AUTH, json=wrong_metric)
    assert response.status_code == 422 and "do not apply to regression" in response.text, response.text
    out_of_range = api.put("/v1/models/diabetes/config/training", headers=AUTH,
                           json={**before["training"], "holdout_fraction": 2})
    assert out_of_range.status_code == 422 and out_of_range.json()["detail"][0]["loc"] == ["body",
                                                                                          "holdout_fraction"]
    too_large = api.put("/v1/models/diabetes/config/training", headers=AUTH,
                        json={**before["training"], "min_samples": 10**30})  # was a 500, and a poison event
    assert too_large.status_code == 422 and too_large.json()["detail"][0]["loc"] == ["body", "min_samples"]
    unknown = api.delete("/v1/models/diabetes/config/estimator", headers=AUTH)
    assert unknown.status_code in (404, 405)  # no such section to reset
    assert api.get("/v1/models/diabetes/config").json() == before and configured(monitor) == []


async def test_the_configuration_survives_a_restart(tmp_path: Path, monitor: Monitor, api: TestClient) -> None:
    training = {**api.get("/v1/models/diabetes/config").json()["training"], "holdout_max_rows": 60}
    assert api.put("/v1/models/diabetes/config/training", headers=AUTH, json=training).status_code == 200
    assert monitor.specs.get("diabetes").training.holdout_max_rows == 60  # in use at once
    with open_monitor(monitor.settings, load_specs(SPECS), RecordingPublisher(),  # type: ignore[arg-type]
                      Metrics("monitor")) as reopened:
        shown = reopened.triggers.runconfig.describe("diabetes")
        assert (shown["version"], shown["overridden"], shown["training"]["holdout_max_rows"]) == (1, ["training"], 60)
        assert reopened.specs.get("diabetes").training.holdout_max_rows == 60
        assert reopened.specs.get("breast-cancer").training.holdout_max_rows == 5000  # other models untouched


async def test_the_trainer_follows_the_latest_configuration_and_keeps_it_across_a_restart(tmp_path: Path) -> None:
    """ModelConfigured on refit.retrain-requests: the trainer trains by its sections from then on, ignores an
    older version delivered again, and applies the latest after a restart; candidates name the version."""
    settings = TrainerSettings(specs_path=SPECS, state_dir=tmp_path, artifact_dir=tmp_path / "artifacts")
    training = load_specs(SPECS).get("diabetes").training.model_dump(mode="json")

    def event(version: int, window: int) -> Incoming:
        record = ConsumerRecord(topics.RETRAIN_REQUESTS, 0, version, 0, 0, b"diabetes", b"", None, 8, 0, ())
        return Incoming(record=record, event=ModelConfigured(
            model="diabetes", config_version=version, sections={"training": {**training, "window_max_rows": window}}))

    def opened() -> Trainer:
        return Trainer(settings, load_specs(SPECS), DatasetStore(tmp_path / "dataset.sqlite"),
                       LocalArtifactStore(settings.artifact_dir), RecordingPublisher(),  # type: ignore[arg-type]
                       Metrics("trainer"), Fitter())

    trainer = opened()
    assert await trainer.handle([event(2, 200), event(1, 300)]) == {}  # the older one, delivered after, loses
    assert trainer.specs.get("diabetes").training.window_max_rows == 200
    assert trainer.store.configured("diabetes")[0] == 2
    # one that does not fit this trainer's spec file is handed back (a dead letter), and nothing changes
    rejected = await trainer.handle([event(3, 5)])
    assert "configuration 3 does not fit" in rejected[0] and "window_max_rows" in rejected[0], rejected
    assert trainer.store.configured("diabetes")[0] == 2
    await trainer.handle([Incoming(record=ConsumerRecord(topics.SAMPLES, 0, i, 0, 0, b"diabetes", b"", None, 8, 0, ()),
                                   event=SampleIngested(model="diabetes", sample_id=f"s{i}", features=row["features"],
                                                        label=row["label"]))
                          for i, row in enumerate(sample_rows("diabetes"))])
    await trainer.train(trainer.specs.get("diabetes"), "manual", None, None, asyncio.Event())
    (candidate,) = [orjson.loads(v) for t, v in trainer.publisher.sent if t == topics.CANDIDATES]  # type: ignore
    assert candidate["training"]["config_version"] == 2 and candidate["training"]["rows_seen"] == 200
    assert candidate["training"]["spec_hash"] == trainer.specs.get("diabetes").spec_hash() != \
        load_specs(SPECS).get("diabetes").spec_hash()
    trainer.fitter.close()
    trainer.store.close()

    restarted = opened()
    assert restarted.specs.get("diabetes").training.window_max_rows == 200
    restarted.fitter.close()
    restarted.store.close()
