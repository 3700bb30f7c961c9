"""Worker processes for an HTTP service: one per core, each with its own socket (SO_REUSEPORT).

Why not ``uvicorn --workers``: its workers share the supervisor's listening socket, which
never gets TCP_NODELAY (about 44 ms added to every keep-alive response, a known uvicorn
issue), and the kernel hands one worker most of the connections (16/0 seen with 16 clients).
With one socket per worker bound to the same port with SO_REUSEPORT, the kernel spreads new
connections evenly over the workers and each worker is an ordinary single-process server.

Each worker is a separate ``python -m <module>`` process started with ``REFIT_WORKER_INDEX``
set: it builds its own app (its own Kafka consumer, its own champions, swapped atomically in
its own event loop). Metrics of all workers are summed through prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set here for the workers only). A worker that
dies is started again after a short pause; SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import structlog

from refit.lifecycle import terminate

log = structlog.get_logger("workers")

WORKER_INDEX = "REFIT_WORKER_INDEX"
RESTART_PAUSE_S = 1.0


def worker_index() -> int | None:
    """This process's worker number, or None when it is not a supervised worker."""
    value = os.environ.get(WORKER_INDEX)
    return int(value) if value is not None else None


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other workers may bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def supervise(module: str, workers: int) -> int:
    """Run ``workers`` copies of ``python -m module`` until SIGTERM/SIGINT; restart any that dies."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="refit-metrics-") as metrics_dir:
        base = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}

        def start(index: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", module], env={**base, WORKER_INDEX: str(index)})

        procs = {i: start(i) for i in range(workers)}
        log.info("workers started", module=module, workers=workers, pids=[p.pid for p in procs.values()])
        while not stopping:
            time.sleep(0.2)
            for index, proc in list(procs.items()):
                if proc.poll() is not None and not stopping:
                    _forget(metrics_dir, proc.pid)
                    log.error("worker exited, starting it again", worker=index, pid=proc.pid, code=proc.returncode)
                    time.sleep(RESTART_PAUSE_S)
                    procs[index] = start(index)
        terminate(procs.values())
    return 0


def _forget(metrics_dir: str, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the sums, as they should)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def serve_worker(app: Any, host: str, port: int) -> None:
    """Serve ``app`` as one supervised worker: refit's uvicorn settings on a SO_REUSEPORT socket."""
    from refit.server import config
    from refit.web import run_server

    run_server(app, config(app, host, port), sockets=[reuse_port_socket(host, port)])
