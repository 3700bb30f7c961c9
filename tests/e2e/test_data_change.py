"""The data_change trigger (issue 17, seed 004): rows `refit ingest watch` sends from a changed file
request a retraining with the file in the evidence, subject to the usual sufficiency and cooldown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from refit.datasets import sample_rows
from tests.chaos.helpers import QUIET_TRIGGERS, wait_until

pytestmark = pytest.mark.e2e
FEATURES = [f"p{i}" for i in range(64)]


def write(path: Path, rows: list[dict], header: bool) -> None:
    with path.open("a") as f:
        if header:
            f.write(",".join([*FEATURES, "label"]) + "\n")
        for row in rows:
            f.write(",".join([*(f"{row['features'][n]:g}" for n in FEATURES), str(row["label"])]) + "\n")


def watch_once(ingest: str, directory: Path, specs: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "refit.cli", "ingest", "watch", str(directory), "--model", "digits",
                           "--specs", str(specs), "--ingest", ingest, "--once"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_changed_file_requests_retraining_with_the_file_in_the_evidence(stack_factory, specs_file,
                                                                          tmp_path) -> None:
    specs = specs_file(only=("digits",), digits={
        "training": {"min_new_samples": None},
        "triggers": {**QUIET_TRIGGERS, "data_change": True, "min_new_samples": 200, "cooldown_minutes": 30}})
    stack = stack_factory(specs)
    monitor, ingest = stack.url("monitor"), stack.url("ingest")
    rows = sample_rows("digits", 3)
    drop = tmp_path / "drop"
    drop.mkdir()
    with httpx.Client(timeout=30) as client:
        def triggers() -> dict:
            return client.get(f"{monitor}/v1/models/digits/triggers").json()

        write(drop / "digits.csv", rows[:50], header=True)
        watch_once(ingest, drop, specs)
        held = wait_until("held: too few new samples", lambda: triggers()["held"])
        assert held == ["data_change: 50 new rows from changed file(s) digits.csv — held: only 50 new samples "
                        "(need 200)"]

        write(drop / "digits.csv", rows[50:400], header=False)  # the file changed: 350 rows more
        watch_once(ingest, drop, specs)
        (fired,) = wait_until("data_change fired", lambda: triggers()["fired"])
        assert fired["kind"] == "data_change" and fired["evidence"] == {"files": {"digits.csv": 400}}
        assert fired["reason"] == "400 new rows from changed file(s) digits.csv"
        (version,) = wait_until("its candidate", lambda: client.get(f"{monitor}/v1/models/digits/versions").json(),
                                timeout_s=90)
        assert version["trigger"] == "data_change"

        write(drop / "more.csv", rows[400:700], header=True)  # another file changed, within the cooldown
        watch_once(ingest, drop, specs)
        held = wait_until("held: cooldown", lambda: [h for h in triggers()["held"] if "more.csv" in h])
        assert held == ["data_change: 300 new rows from changed file(s) more.csv — held: cooldown of 30 min"]
        assert len(triggers()["fired"]) == 1
