"""Real processes: rows of files dropped and appended in a directory arrive once each, and train a model."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from refit.datasets import sample_rows
from refit.demo import wait_for_decisions

pytestmark = pytest.mark.integration

FEATURES = [f"p{i}" for i in range(64)]
HEADER = ",".join([*FEATURES, "label"]) + "\n"


def csv_line(row: dict, **changes: str) -> str:
    cells = {**{n: f"{v:g}" for n, v in row["features"].items()}, "label": row["label"], **changes}
    return ",".join(cells[n] for n in [*FEATURES, "label"]) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def command(ingest: str, directory: Path, specs: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "refit.cli", "ingest", "watch", str(directory), "--model", "digits",
            "--specs", str(specs), "--ingest", ingest, *options]


def watch_once(ingest: str, directory: Path, specs: Path) -> str:
    done = subprocess.run(command(ingest, directory, specs, "--once"), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def distinct_samples(client: httpx.Client, trainer: str, expected: int, timeout_s: float = 30) -> int:
    """Training rows + holdout rows the trainer has seen, once it reached ``expected`` (or the deadline)."""
    deadline, seen = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        stats = client.get(f"{trainer}/v1/stats").json()
        seen = stats["samples"].get("digits", 0) + stats["holdout_skipped"].get("digits", 0)
        if seen >= expected:
            break
        time.sleep(0.3)
    return seen


def test_new_data_files_become_samples_once_each_and_a_promoted_model(stack_factory, specs_file, tmp_path) -> None:
    specs = specs_file(only=("digits",))
    stack = stack_factory(specs)
    ingest, drop = stack.url("ingest"), tmp_path / "drop"
    drop.mkdir()
    rows = sample_rows("digits")[:601]
    data = drop / "digits.csv"

    # A file with a header, 300 good rows, one row ingest refuses (label) and one refused here (a pixel).
    data.write_text(HEADER + "".join(map(csv_line, rows[:150])) + csv_line(rows[150], label="11")
                    + csv_line(rows[151], p5="oops") + "".join(map(csv_line, rows[152:302])))
    assert watch_once(ingest, drop, specs).endswith("300 rows accepted, 2 rejected")

    # Appended rows and a half-written line: the half waits for its newline.
    half = csv_line(rows[502])
    append(data, "".join(map(csv_line, rows[302:502])) + half[:40])
    assert "200 rows accepted, 0 rejected, 1 file(s) end in a partial line (40 bytes)" in \
        watch_once(ingest, drop, specs)

    # The line is completed; a JSON-lines file arrives beside it.
    append(data, half[40:] + "".join(map(csv_line, rows[503:560])))
    (drop / "more.jsonl").write_bytes(b"".join(orjson.dumps({**r, "idempotency_key": None, "source": "jsonl"})
                                               + b"\n" for r in rows[560:600]))
    assert watch_once(ingest, drop, specs).endswith("98 rows accepted, 0 rejected")

    rejected = [orjson.loads(line) for line in (drop / ".refit-rejected.jsonl").read_bytes().splitlines()]
    assert [(r["file"], r["line"], r["reason"]) for r in rejected] == [
        ("digits.csv", 152, f"label: '11' is not one of {[str(d) for d in range(10)]}"),
        ("digits.csv", 153, "features.p5: expected a number, got 'oops'"),
    ]

    # A crash that lost the state re-sends everything: same keys, so nothing is counted twice.
    (drop / ".refit-watch.json").unlink()
    assert watch_once(ingest, drop, specs).endswith("598 rows accepted, 2 rejected")
    # A long-running watcher picks up one more row, behind the re-sent ones (one partition, in
    # order): when it is in, so are they. Ctrl-C then stops the watcher cleanly.
    watcher = subprocess.Popen(command(ingest, drop, specs, "--interval", "0.2"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        append(data, csv_line(rows[600]))
        with httpx.Client(timeout=30) as client:
            assert distinct_samples(client, stack.url("trainer"), 599) == 599
            decision = wait_for_decisions(client, stack.url("monitor"), "digits", 1, timeout_s=60)[0]
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert out.strip().endswith("1 rows accepted, 0 rejected")
    assert decision["event_type"] == "ModelPromoted", decision["reasons"]
