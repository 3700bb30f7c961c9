"""MLflow against a real ``mlflow server`` (SQLite store, local artifacts), read back with MLflow's own
client: a run per candidate, a registered version per promotion, the ``champion`` alias following
promotions and a rollback; with MLflow stopped, decisions still happen and reach it once it is back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.lifecycle import terminate
from refit.stack import free_port, wait_http

pytestmark = pytest.mark.e2e

TOKEN = {"authorization": "Bearer refit-local-token"}


class MlflowServer:
    """``mlflow server`` on loopback, started and stopped by PID, on one store across restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / "mlflow.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
             # artifacts uploaded through the server, as compose's `mlflow` profile runs it
             "--serve-artifacts", "--artifacts-destination", str(self.directory / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/health", timeout_s=90, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            terminate([self.proc])
            self.proc = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def until(read: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := read():
                return found
        except Exception:  # noqa: BLE001 - MLflow's "not found yet" is an exception
            pass
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s} s")


def test_runs_versions_and_the_champion_alias_follow_refit_and_survive_mlflow_down(
        stack_factory, specs_file, mlflow_server) -> None:
    stack = stack_factory(specs_file(only=("digits",)), env={"REFIT_MONITOR_MLFLOW_TRACKING_URI": mlflow_server.url})
    mlflow = MlflowClient(mlflow_server.url)
    monitor = stack.url("monitor")
    rows = [row for wave in digits_waves(3) for row in wave]

    def champion() -> str:
        return mlflow.get_model_version_by_alias("digits", "champion").tags["refit.version"]

    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows[:400])
        first = wait_for_decisions(client, monitor, "digits", 1)[0]
        assert first["event_type"] == "ModelPromoted"
        until(lambda: champion() == "1")
        (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("refit/digits").experiment_id],
                                    f"tags.`refit.candidate_id` = '{first['candidate_id']}'")
        assert run.data.tags["refit.digest"] == first["digest"] and run.data.tags["refit.decision"] == "ModelPromoted"
        assert run.data.tags["refit.spec_hash"] and run.data.tags["refit.data_fingerprint"]
        assert run.data.params["estimator"] == "sklearn.linear_model.LogisticRegression"
        assert run.data.metrics["holdout.accuracy"] == pytest.approx(first["candidate_scores"]["accuracy"])
        assert run.data.metrics["rows_trained"] > 0
        assert [a.path for a in mlflow.list_artifacts(run.info.run_id, "onnx")] == ["onnx/model.onnx"]

        post_rows(client, stack.url("ingest"), "digits", rows[400:800])  # one training, promoted (test_core_loop)
        second = wait_for_decisions(client, monitor, "digits", 2)[0]
        assert second["event_type"] == "ModelPromoted" and second["version"] == 2
        until(lambda: champion() == "2")
        client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "mlflow test"},
                    headers=TOKEN).raise_for_status()
        until(lambda: champion() == "1")
        versions = {v.tags["refit.version"]: v for v in mlflow.search_model_versions("name = 'digits'")}
        assert sorted(versions) == ["1", "2"]
        assert versions["1"].tags["refit.decision"] == "ModelRolledBack"

        mlflow_server.stop()
        client.post(f"{monitor}/v1/models/digits/retrain", json={"reason": "while MLflow is down"},
                    headers=TOKEN).raise_for_status()
        third = wait_for_decisions(client, monitor, "digits", 4)[0]  # the decision did not wait for MLflow
        assert third["version"] == 3
        outbox = until(lambda: (h := client.get(f"{monitor}/v1/health").json()["mlflow"])["last_error"] and h)
        assert outbox["backlog"] >= 2  # the candidate and its decision, waiting

        mlflow_server.start()
        until(lambda: client.get(f"{monitor}/v1/health").json()["mlflow"]["backlog"] == 0, 120)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("refit/digits").experiment_id],
                                f"tags.`refit.candidate_id` = '{third['candidate_id']}'")
    assert run.data.tags["refit.decision"] == third["event_type"]
    if third["event_type"] == "ModelPromoted":
        assert champion() == "3"
    else:
        assert run.data.tags["refit.failing_checks"] and champion() == "1"
    assert len(mlflow.search_runs([run.info.experiment_id])) == 3  # nothing written twice
