"""``refit up``'s supervisor: a service process that dies is restarted, with capped backoff.

A thread beside the stack polls its service processes. A death is logged (``say``) and counted; the
service is started again after the delay :func:`refit.core.restarts.after_death` gives, and after too
many fast failures in a row the supervisor gives up: it says why and calls ``on_give_up``, so that
``refit up`` stops the rest and exits non-zero. What it knows is in ``<state dir>/supervisor.json``
(``refit status`` shows it). The test fixtures' stacks have no supervisor: their kills stay kills.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from refit.core.restarts import RestartPolicy, after_death
from refit.stack import Stack

STATUS_FILE = "supervisor.json"


def exit_text(code: int) -> str:
    """``exited with status 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Watched:
    """One service as the supervisor sees it."""

    pid: int
    state: str = "running"  # running | restarting | gave up
    restarts: int = 0
    fast_failures: int = 0
    last_exit: str | None = None
    last_exit_at: str | None = None


class Supervisor:
    """Keeps the stack's services running; start with :meth:`start`, stop before stopping the stack."""

    def __init__(self, stack: Stack, policy: RestartPolicy, say: Callable[[str], None],
                 on_give_up: Callable[[], None], interval_s: float = 0.2) -> None:
        self.stack, self.policy, self.say, self.on_give_up = stack, policy, say, on_give_up
        self.interval_s = interval_s
        self.gave_up: str | None = None
        self.path = stack.state_dir / STATUS_FILE
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refit-supervisor", daemon=True)
        self._watched: dict[str, Watched] = {}
        self._started: dict[str, float] = {}
        self._due: dict[str, float] = {}

    def start(self) -> Supervisor:
        now = time.monotonic()
        for name in self.stack.ports:  # the services (brokers have no HTTP port)
            self._watched[name] = Watched(pid=self.stack.procs[name].pid)
            self._started[name] = now
        self._write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self.gave_up is None:
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Restart what is due; note every service that died since the last check."""
        for name, watched in self._watched.items():
            if name in self._due:
                if now >= self._due[name]:
                    self._restart(name, now)
                continue
            proc = self.stack.procs.get(name)
            if proc is not None and proc.poll() is not None:
                self._died(name, proc.returncode, now)
                if self.gave_up is not None:
                    return

    def _died(self, name: str, code: int, now: float) -> None:
        watched = self._watched[name]
        restart = after_death(self.policy, watched.fast_failures, now - self._started[name])
        watched.fast_failures = restart.fast_failures
        watched.last_exit = exit_text(code)
        watched.last_exit_at = datetime.now(UTC).isoformat(timespec="seconds")
        log = self.stack.state_dir / "logs" / f"{name}.log"
        if restart.delay_s is None:
            watched.state = "gave up"
            self.gave_up = (f"{name} {watched.last_exit}: {restart.fast_failures} fast failures in a row (each within "
                            f"{self.policy.fast_s:g} s of starting), giving up; see {log}")
            self.say(f"supervisor: {self.gave_up}")
            self._write()
            self.on_give_up()
            return
        watched.state = "restarting"
        self._due[name] = now + restart.delay_s
        self.say(f"supervisor: {name} (pid {watched.pid}) {watched.last_exit}; restarting in {restart.delay_s:g} s "
                 f"(log: {log})")
        self._write()

    def _restart(self, name: str, now: float) -> None:
        del self._due[name]
        self.stack.start_service(name)
        watched = self._watched[name]
        watched.pid, watched.state = self.stack.procs[name].pid, "running"
        watched.restarts += 1
        self._started[name] = now
        self.say(f"supervisor: {name} restarted as pid {watched.pid} (restart {watched.restarts})")
        self._write()

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "policy": asdict(self.policy), "gave_up": self.gave_up,
                "services": {name: asdict(w) for name, w in self._watched.items()}}

    def _write(self) -> None:
        """Replace the status file whole, so a reader never sees half of it."""
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.status(), indent=2))
        os.replace(partial, self.path)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The status a running ``refit up`` keeps in ``state_dir``, or None when none runs there."""
    try:
        data: dict[str, Any] = json.loads((state_dir / STATUS_FILE).read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data
