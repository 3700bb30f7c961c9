"""``refit up`` supervises its services (issue 17, defect 2): each service SIGKILLed in turn is started
again without a person (a new PID, its health answering, counted in ``refit status``), the stack keeps
working, and a service that keeps failing fast makes ``refit up`` give up loudly and stop the rest.

``refit up`` runs as users run it: a real subprocess on Apache Kafka, its output read as text.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from refit.core.restarts import RestartPolicy
from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.supervisor import read_status
from tests.chaos.helpers import QUIET_TRIGGERS, stored_count, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "trainer", "monitor", "inference-0")


def refit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "refit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def urls_when_up(out: Path, up: subprocess.Popen[bytes]) -> dict[str, str]:
    """The services' URLs as ``refit up`` printed them, once it says it is up."""

    def printed() -> dict[str, str] | None:
        assert up.poll() is None, out.read_text()
        text = out.read_text()
        if "try: curl" not in text:
            return None
        words = [line.split() for line in text.splitlines()]
        return {w[0]: w[1] for w in words if len(w) > 1 and w[0] in SERVICES}

    return wait_until("refit up started the stack", printed, timeout_s=120, interval_s=0.2)


def healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def restarted(state: Path, name: str, old_pid: int) -> dict[str, Any] | None:
    status = read_status(state)
    service = status["services"][name] if status else None
    return service if service and service["pid"] != old_pid and service["state"] == "running" else None


def hold_port(url: str) -> socket.socket:
    """Listen on the service's port as soon as its dead process let go of it: its restarts cannot bind."""
    port = int(url.rsplit(":", 1)[1])

    def bound() -> socket.socket | None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        sock.listen()
        return sock

    return wait_until(f"port {port} free", bound, timeout_s=10, interval_s=0.01)


def test_refit_up_restarts_each_killed_service_and_gives_up_on_one_that_keeps_failing(tmp_path, specs_file) -> None:
    specs = specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS})
    state, out, err = tmp_path / "state", tmp_path / "up.out", tmp_path / "up.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        up = subprocess.Popen([sys.executable, "-m", "refit.cli", "up", "--broker", "kafka", "--state-dir", str(state),
                               "--specs", str(specs), "--restart-limit", "3"], stdout=stdout, stderr=stderr, cwd=REPO)
    held = None
    try:
        urls = urls_when_up(out, up)
        wave = digits_waves(3)[0]
        with httpx.Client(timeout=30) as client:
            post_rows(client, urls["ingest"], "digits", wave)
            v1 = wait_for_decisions(client, urls["monitor"], "digits", 1, 120)[0]
            assert v1["event_type"] == "ModelPromoted", v1

            seen_restarted: dict[str, float] = {}
            for name in SERVICES:
                before = read_status(state)
                assert before is not None and before["services"][name]["state"] == "running", before
                old_pid = before["services"][name]["pid"]
                os.kill(old_pid, signal.SIGKILL)
                after = wait_until(f"{name} restarted", lambda: restarted(state, name, old_pid), timeout_s=30)
                seen_restarted[name] = time.monotonic()
                assert after["restarts"] == 1 and after["last_exit"] == "killed by SIGKILL", after
                wait_until(f"{name} healthy again", lambda: healthy(client, urls[name]), timeout_s=60)

            # The stack still works: a new sample is stored, a prediction is answered by the champion.
            def stored() -> int:
                return stored_count(client.get(f"{urls['trainer']}/v1/stats").json())

            before_count = stored()
            post_rows(client, urls["ingest"], "digits", digits_waves(3)[1][:50])
            wait_until("the new samples stored", lambda: stored() == before_count + 50, timeout_s=30)

            def predicted() -> dict[str, Any] | None:
                response = client.post(f"{urls['inference-0']}/v1/models/digits/predict",
                                       json={"features": wave[0]["features"]})
                return response.json() if response.status_code == 200 else None

            assert wait_until("a prediction", predicted, timeout_s=60)["version"] == v1["version"]

        status = refit("--monitor", urls["monitor"], "status", "--state-dir", str(state))
        assert status.returncode == 0, status.stdout + status.stderr
        for name in SERVICES:
            assert any(line.split()[:1] == [name] and "restarts 1, last killed by SIGKILL" in line
                       for line in status.stdout.splitlines()), status.stdout

        # A service that cannot start (its port taken) fails fast: restarted twice, then refit up gives up.
        # Its last run must not count as a fast failure itself: let it outlive the policy's fast_s first
        # (on a quick machine the loop above takes less than that).
        time.sleep(max(0.0, seen_restarted["ingest"] + RestartPolicy().fast_s + 0.5 - time.monotonic()))
        ingest_pid = read_status(state)["services"]["ingest"]["pid"]
        os.kill(ingest_pid, signal.SIGKILL)
        held = hold_port(urls["ingest"])
        up.wait(120)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(60)
        if held is not None:
            held.close()

    printed, errors = out.read_text(), err.read_text()
    assert up.returncode == 1, printed + errors
    assert "error: ingest exited with status " in errors and "3 fast failures in a row" in errors, errors
    assert "Traceback" not in printed + errors
    assert printed.count("supervisor: ingest restarted as pid") == 4, printed  # two kills, then two fast failures
    assert "stopping" in printed and not (state / "supervisor.json").exists()
    with httpx.Client() as client:
        for name in ("trainer", "monitor", "inference-0"):
            with pytest.raises(httpx.ConnectError):
                client.get(f"{urls[name]}/healthz", timeout=2)

