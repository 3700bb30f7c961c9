"""refit inference against its ceiling, its peers and the wire, round-robin in one run.

    make bench        # installs wrk, the peers' environments and nginx, then runs this with its defaults
    .venv/bin/python bench/inference_peers.py --rounds 3 --seconds 5

Servers, each on loopback, started here and stopped by PID:

- **nginx** (the wire): Debian's nginx, one worker, answering the same POST with a constant JSON
  body: the fastest server this machine runs, the physical anchor;
- **ceiling**: FastAPI on refit's server stack (uvicorn, uvloop, httptools, one worker) that
  parses the same JSON body and answers a constant (``bench/peers.py``);
- **refit**: an inference replica of a real local stack (embedded broker, the four services),
  serving champions the stack trained and promoted: ``digits-lr`` (the repo's digits spec,
  a logistic regression) and ``digits-rf`` (100 trees);
- the peers, each serving the same scikit-learn pipeline's ``predict_proba`` in one worker, from
  an environment of its own (``bench/peer_envs.py``, pins in ``pyproject.toml``), in its own
  protocol: **sklearn** (FastAPI on refit's stack, ``bench/peers.py``), **mlflow** (``mlflow
  models serve --env-manager local``, saved with ``pyfunc_predict_fn="predict_proba"``),
  **mlserver** (``mlserver-sklearn``, ``parallel_workers: 0``, V2 asking for ``predict_proba``),
  **kserve** (``kserve.ModelServer``, V2, ``bench/peer_kserve.py``), **pytriton** (Triton's
  server through PyTriton, V2, ``bench/peer_pytriton.py``), **litserve** (``bench/peer_litserve.py``)
  and **bentoml** (``bench/peer_bento.py``).

A peer that cannot be started is reported with its reason (its log's tail) and left out of that
case; it is never dropped silently.

The scikit-learn pipeline is built from the same spec (``services.trainer.fit.build_pipeline``)
and fitted on the same 1,797 digits rows refit's trainer was given. Load: ``wrk`` (one thread,
keep-alive connections, ``--seconds`` per run), for single-row and 64-row bodies; every (model,
rows, connections) case runs the servers in turn, rotating the order each round. Per case: median
over rounds of requests/s, p50 and p99, the errors (non-2xx and socket errors), the server's RSS
after the runs (children included), and the ratios: each server to the wire, refit to each server.
Then the workers phase: refit with one worker per core (``REFIT_INFERENCE_WORKERS=0``) against the
single-worker ceiling, round-robin again.

The shadow case (``--cases shadow-1``) measures what shadow scoring costs: in the same replica,
``digits-lr`` (no challenger) against ``digits-shadow`` (the same spec and rows, retrained once, so
its first version challenges the second and every served row is scored by it off the response
path), single-row requests, round-robin. Per run: p50 from wrk and the replica's CPU time per
request (``psutil``, after the shadow queue drained); the ratios are shadow over no shadow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import joblib
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs")]

from refit.datasets import sample_rows  # noqa: E402
from refit.demo import post_rows, wait_for_decisions  # noqa: E402
from refit.specs import ModelSpecs, load_specs  # noqa: E402
from refit.stack import Stack, free_port, wait_http  # noqa: E402
from services.trainer.fit import build_pipeline  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
import peer_envs  # noqa: E402

MODELS = {"digits-lr": "lr", "digits-rf": "rf"}
SHADOWED = "digits-shadow"  # digits-lr's spec, with a challenger
WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_TRACEPARENT") then wrk.headers["traceparent"] = os.getenv("BENCH_TRACEPARENT") end
"""


def specs_file(directory: Path) -> Path:
    """The repo's digits spec as ``digits-lr``, and the same spec with a 100-tree forest as ``digits-rf``.

    Each is trained once (``min_new_samples`` 1,000 of the ~1,440 training rows posted): a second
    promotion would leave the first champion loaded and shadow-scored beside the second (refit's
    live rollback), which the peers do not do; the ``shadow-1`` case measures that cost."""
    config = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
    digits = next(m for m in config["models"] if m["name"] == "digits")
    digits = {**digits, "training": {**digits["training"], "min_new_samples": 1000}}
    rf = {**digits, "name": "digits-rf", "estimator": {
        "class": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 100, "random_state": 0, "n_jobs": 1}, "scale": False}}
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{**digits, "name": "digits-lr"}, rf, {**digits, "name": SHADOWED}]}))
    return path


@dataclass
class Server:
    name: str
    url: str           # the prediction URL
    pid: int
    proc: subprocess.Popen[bytes] | None = None   # ours to stop (refit's belongs to the stack)
    settle: Callable[[], None] = lambda: None      # after a run: wait for work the run left queued
    body: Path | None = None                       # its own body (another protocol), else the case's
    protocol: str = "v1"                           # which of the case's bodies it takes (``bodies``)
    traceparent: str | None = None                 # sent with every request (a sampled trace)
    lua: str = ""                                  # more of wrk's script (e.g. a ``request`` function)

    def cpu_s(self) -> float:
        process = psutil.Process(self.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])

    def rss_mib(self) -> float:
        try:
            process = psutil.Process(self.pid)
            procs = [process, *process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.NoSuchProcess:
            return float("nan")

    def stop(self) -> None:
        """The server and every process it started (its own session: LitServe's workers, Triton, BentoML's
        circus, outlive a SIGTERM to their parent alone)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of the group
        except ProcessLookupError:
            pass


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float = float("nan")  # the server's CPU time per request


@dataclass
class Case:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)

    def median(self, server: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[server])


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, body: Path, seconds: float, connections: int, traceparent: str | None = None,
        lua: str = "") -> Run:
    """One bounded wrk run (one thread, ``seconds`` long, 10 s request timeout), parsed."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT + lua)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "--timeout", "10s", "-s", script.name, url],
            env={**os.environ, "BENCH_BODY": str(body), **({"BENCH_TRACEPARENT": traceparent} if traceparent else {})},
            capture_output=True, text=True, timeout=seconds + 60,
            check=True).stdout
    finally:
        os.unlink(script.name)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # No distribution when no request completed (every one timed out): no latency, all errors.
    p50, p99 = (_ms(latency["50"]), _ms(latency["99"])) if "99" in latency else (float("nan"), float("nan"))
    return Run(rps, p50, p99, requests, errors)


def start_process(name: str, argv: list[str], port: int, path: str, health: str, env: dict[str, str] | None = None,
                  log_dir: Path | None = None, cwd: Path | None = None) -> Server:
    log = open(log_dir / f"{name}.log", "ab") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd,
                            start_new_session=True)  # its own process group: stopped with every child
    server = Server(name, f"http://127.0.0.1:{port}{path}", proc.pid, proc)
    try:
        wait_http(f"http://127.0.0.1:{port}{health}", timeout_s=120, proc=proc)
    except Exception:
        server.stop()  # started here, stopped here: a server that never answered is not left behind
        raise
    return server


NGINX_CONF = """worker_processes 1;
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"model":"digits","version":1,"predictions":[{{"label":"0"}}]}}';
        }}
    }}
}}
"""


def start_nginx(work: Path, logs: Path) -> Server:
    """The wire: Debian's nginx, one worker, a constant JSON answer to any request."""
    home, port = work / "nginx", free_port()
    home.mkdir(exist_ok=True)
    (home / "nginx.conf").write_text(NGINX_CONF.format(home=home, port=port))
    return start_process("nginx", [str(peer_envs.nginx()), "-p", str(home), "-c", str(home / "nginx.conf"),
                                   "-e", str(home / "error.log")], port, "/predict", "/", log_dir=logs)


def peer_launchers(model: str, pipeline: Path, mlflow_dir: Path, work: Path) -> dict[str, Callable[[int], tuple[
        list[str], str, str, str, dict[str, str], Path | None]]]:
    """Per peer: given a port, its argv, prediction path, health path, protocol, environment and cwd."""
    bench = REPO / "bench"

    def python(name: str) -> str:
        return str(peer_envs.ensure(name) / "python")

    def mlserver(port: int) -> tuple[list[str], str, str, str, dict[str, str], Path | None]:
        home = work / f"mlserver-{model}"
        home.mkdir(exist_ok=True)
        (home / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False}))
        (home / "model-settings.json").write_text(json.dumps({
            "name": "digits", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(pipeline)}}))
        return ([str(peer_envs.ensure("mlserver") / "mlserver"), "start", str(home)],
                "/v2/models/digits/infer", "/v2/models/digits/ready", "mlserver", {}, None)

    return {
        "sklearn": lambda port: ([sys.executable, str(bench / "peers.py"), "sklearn", "--model", str(pipeline),
                                  "--port", str(port)], "/predict", "/docs", "v1", {}, None),
        # MLflow runs `uvicorn` by name: the venv's bin must be on PATH.
        "mlflow": lambda port: ([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                 str(mlflow_dir), "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                                 "-w", "1"], "/invocations", "/ping", "v1",
                                {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}, None),
        "mlserver": mlserver,
        "kserve": lambda port: ([python("kserve"), str(bench / "peer_kserve.py"), "--model", str(pipeline),
                                 "--port", str(port)], "/v2/models/digits/infer", "/v2/models/digits/ready", "v2",
                                {}, None),
        "pytriton": lambda port: ([python("pytriton"), str(bench / "peer_pytriton.py"), "--model", str(pipeline),
                                   "--port", str(port)], "/v2/models/digits/infer", "/v2/models/digits/ready",
                                  "v2", {}, None),
        "litserve": lambda port: ([python("litserve"), str(bench / "peer_litserve.py"), "--model", str(pipeline),
                                   "--port", str(port)], "/predict", "/health", "v1", {}, None),
        "bentoml": lambda port: ([str(peer_envs.ensure("bentoml") / "bentoml"), "serve", "peer_bento:Digits",
                                  "--host", "127.0.0.1", "--port", str(port)], "/predict", "/readyz", "v1",
                                 {"BENCH_MODEL": str(pipeline), "BENTOML_DO_NOT_TRACK": "true"}, bench),
    }


def peers_for(model: str, pipeline: Path, mlflow_dir: Path, work: Path, wanted: list[str],
              unavailable: dict[str, str], say: Callable[[str], None]) -> list[Server]:
    """The peers of ``wanted`` serving ``model``'s pipeline; one that cannot start goes to ``unavailable``
    with its reason (the exception and its log's tail), and the others still run."""
    logs, servers = work / "logs", []
    for name, launch in peer_launchers(model, pipeline, mlflow_dir, work).items():
        if name not in wanted:
            continue
        try:
            port = free_port()
            argv, path, health, protocol, env, cwd = launch(port)
            server = start_process(f"{name}-{model}", argv, port, path, health, env=env, log_dir=logs, cwd=cwd)
        except Exception as exc:  # noqa: BLE001 (reported, not hidden: the report lists it with its reason)
            log = logs / f"{name}-{model}.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            unavailable[f"{name} ({model})"] = f"{type(exc).__name__}: {exc}" + (f" — {' / '.join(tail)}" if tail else "")
            say(f"  {name} could not start for {model}: {unavailable[f'{name} ({model})']}")
            continue
        server.name, server.protocol = name, protocol
        servers.append(server)
    return servers


def train_peers(specs: ModelSpecs, work: Path) -> dict[str, tuple[Path, Path]]:
    """Each model's scikit-learn pipeline (joblib) and MLflow model directory, fitted on the digits rows."""
    import mlflow.sklearn
    import numpy as np

    rows = sample_rows("digits", 7)
    out = {}
    for name in MODELS:
        spec = specs.get(name)
        x = np.array([[r["features"][f] for f in spec.input.features] for r in rows], dtype=np.float32)
        y = np.array([str(r["label"]) for r in rows], dtype=object)
        pipeline = build_pipeline(spec).fit(x, y)
        joblib.dump(pipeline, work / f"{name}.joblib")
        mlflow.sklearn.save_model(pipeline, work / f"{name}-mlflow", pyfunc_predict_fn="predict_proba",
                                 skops_trusted_types=["sklearn.tree._tree.Tree"])  # we made it
        out[name] = (work / f"{name}.joblib", work / f"{name}-mlflow")
    return out


def bodies(work: Path) -> dict[tuple[str, int], Path]:
    """The same rows in each protocol, single-row and 64-row: refit's ``/v1`` body ``{"inputs": rows}``
    (also MLflow's, LitServe's and BentoML's), the Open Inference Protocol's one FP32 tensor
    ``[N, 64]`` named ``input``, and the same asking MLServer for ``predict_proba``."""
    rows = [[float(v) for v in r["features"].values()] for r in sample_rows("digits", 7)[:64]]
    out = {}
    for size in (1, 64):
        tensor = {"name": "input", "shape": [size, 64], "datatype": "FP32", "data": rows[:size]}
        for protocol, body in (("v1", {"inputs": rows[:size]}), ("v2", {"inputs": [tensor]}),
                               ("mlserver", {"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})):
            out[protocol, size] = work / f"body-{protocol}-{size}.json"
            out[protocol, size].write_text(json.dumps(body))
    return out


def check_answers(servers: list[Server], body: Path) -> None:
    """Every server answers the body with 200 before it is measured (a fast error is not a result)."""
    for server in servers:
        response = httpx.post(server.url, content=(server.body or body).read_bytes(),
                              headers={"content-type": "application/json"}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{server.name} answered {response.status_code}: {response.text[:300]}")


def round_robin(servers: list[Server], body: Path, rounds: int, seconds: float, connections: int,
                say: Callable[[str], None]) -> Case:
    case = Case({s.name: [] for s in servers})
    check_answers(servers, body)
    for server in servers:  # warm-up, discarded
        wrk(server.url, server.body or body, 1, connections, server.traceparent, server.lua)
    for number in range(rounds):
        order = servers[number % len(servers):] + servers[:number % len(servers)]
        for server in order:
            before = server.cpu_s()
            run = wrk(server.url, server.body or body, seconds, connections, server.traceparent, server.lua)
            server.settle()
            run.cpu_us = (server.cpu_s() - before) / max(run.requests, 1) * 1e6
            case.runs[server.name].append(run)
            say(f"    round {number + 1} {server.name:9} {run.rps:9.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
                f"p99 {run.p99_ms:7.2f} ms  CPU {run.cpu_us:6.1f} us/request  errors {run.errors}")
    case.rss = {s.name: s.rss_mib() for s in servers}
    return case


def table(cases: dict[str, Case]) -> str:
    lines = ["| case | server | req/s | p50 ms | p99 ms | requests | errors | RSS MiB | × wire | × ceiling"
             " | refit × it |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, case in cases.items():
        ceiling = case.median("ceiling", "rps")
        wire = case.median("nginx", "rps") if "nginx" in case.runs else None
        refit = next((case.median(n, "rps") for n in case.runs if n.startswith("refit")), None)
        for name, runs in case.runs.items():
            rps = case.median(name, "rps")
            lines.append(
                f"| {label} | {name} | {rps:,.0f} | {case.median(name, 'p50_ms'):.2f} | {case.median(name, 'p99_ms'):.2f}"
                f" | {sum(r.requests for r in runs):,} | {sum(r.errors for r in runs)} | {case.rss.get(name, 0):.0f}"
                f" | {f'{rps / wire:.3f}' if wire else '-'} | {rps / ceiling:.2f}"
                f" | {f'{refit / rps:.1f}' if refit and not name.startswith('refit') else '-'} |")
    return "\n".join(lines)


def verdicts(cases: dict[str, Case]) -> str:
    """Per case, refit against the fastest serving stack and the wire."""
    lines = ["| case | refit req/s | fastest peer | its req/s | refit × fastest peer | refit × wire |",
             "|---|---|---|---|---|---|"]
    for label, case in cases.items():
        peers = [n for n in case.runs if n in STACKS]
        if "refit" not in case.runs or not peers:
            continue
        refit = case.median("refit", "rps")
        fastest = max(peers, key=lambda n: case.median(n, "rps"))
        wire = case.median("nginx", "rps")
        lines.append(f"| {label} | {refit:,.0f} | {fastest} | {case.median(fastest, 'rps'):,.0f}"
                     f" | {refit / case.median(fastest, 'rps'):.2f} | {refit / wire:.3f} |")
    return "\n".join(lines)


def ratio_table(case: Case, base: str, title: str) -> str:
    """Every server of ``case`` against ``base`` (same replica, same run): medians and ratios."""
    lines = [f"| {title} | req/s | p50 ms | p99 ms | CPU µs/request | requests | errors | req/s × {base} |"
             f" p50 × {base} |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in case.runs.items():
        rps, p50 = case.median(name, "rps"), case.median(name, "p50_ms")
        lines.append(f"| {name} | {rps:,.0f} | {p50:.2f} | {case.median(name, 'p99_ms'):.2f}"
                     f" | {case.median(name, 'cpu_us'):.1f} | {sum(r.requests for r in runs):,}"
                     f" | {sum(r.errors for r in runs)} | {rps / case.median(base, 'rps'):.3f}"
                     f" | {p50 / case.median(base, 'p50_ms'):.3f} |")
    return "\n".join(lines)


def shadow_table(case: Case) -> str:
    """Shadow scoring with one challenger against none, same replica, same run: medians and ratios."""
    lines = ["| server | req/s | p50 ms | p99 ms | CPU µs/request | requests | errors | p50 × no shadow |"
             " CPU × no shadow |", "|---|---|---|---|---|---|---|---|---|"]
    base_p50, base_cpu = case.median("refit", "p50_ms"), case.median("refit", "cpu_us")
    for name, runs in case.runs.items():
        p50, cpu = case.median(name, "p50_ms"), case.median(name, "cpu_us")
        lines.append(f"| {name} | {case.median(name, 'rps'):,.0f} | {p50:.2f} | {case.median(name, 'p99_ms'):.2f}"
                     f" | {cpu:.1f} | {sum(r.requests for r in runs):,} | {sum(r.errors for r in runs)}"
                     f" | {p50 / base_p50:.3f} | {cpu / base_cpu:.3f} |")
    return "\n".join(lines)


def with_challenger(client: httpx.Client, stack: Stack, say: Callable[[str], None]) -> Server:
    """digits-shadow retrained once (its second version challenged by its first), and its replica scoring it."""
    monitor, replica = stack.url("monitor"), stack.url("inference-0")
    client.post(f"{monitor}/v1/models/{SHADOWED}/retrain", json={"reason": "bench: a challenger"},
                headers={"authorization": "Bearer refit-local-token"}).raise_for_status()
    decision = wait_for_decisions(client, monitor, SHADOWED, 2, 300)[0]
    say(f"  {SHADOWED}: v{decision['version']} {decision['event_type']}")
    deadline = time.monotonic() + 60
    while not client.get(f"{replica}/v1/stats").json()["shadow"]["models"].get(SHADOWED, {}).get("challengers"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{SHADOWED} has no challenger loaded on the replica")
        time.sleep(0.2)
    say(f"  shadow-scoring {client.get(f'{replica}/v1/stats').json()['shadow']['models'][SHADOWED]}")

    def drained() -> None:
        while (stats := client.get(f"{replica}/v1/stats").json()["shadow"])["queued"]:
            time.sleep(0.05)
        say(f"      shadow: {stats['enqueued']:,} requests scored, {stats['published']:,} events, worker thread "
            f"{stats['scoring_cpu_us'] / max(stats['enqueued'], 1):.1f} µs CPU per request so far, dropped "
            f"{stats['dropped_queue_full']}")

    return Server("refit+shadow", f"{replica}/v1/models/{SHADOWED}/predict", stack.procs["inference-0"].pid,
                  settle=drained)


STACKS = ["mlflow", "mlserver", "kserve", "pytriton", "litserve", "bentoml"]  # serving stacks users pick
PEERS = ["sklearn", *STACKS]  # and the FastAPI app a user would write


def against_peers(args: argparse.Namespace, stack: Stack, specs: ModelSpecs, work: Path,
                  body: dict[tuple[str, int], Path], servers: list[Server], cases: dict[str, Case],
                  unavailable: dict[str, str], say: Callable[[str], None]) -> None:
    """The peers' cases and the workers phase (the servers started are appended to ``servers``)."""
    wanted, logs = args.cases.split(","), work / "logs"
    fitted = train_peers(specs, work) if any(c[:2] in MODELS.values() for c in wanted) else {}
    ceiling_port = free_port()
    ceiling = start_process("ceiling", [sys.executable, str(REPO / "bench" / "peers.py"), "ceiling",
                                        "--port", str(ceiling_port)], ceiling_port, "/predict", "/docs",
                            log_dir=logs)
    wire = start_nginx(work, logs)
    servers.extend([ceiling, wire])
    for name, short in MODELS.items():
        if not any(c.startswith(short) for c in wanted):
            continue
        peers = peers_for(name, *fitted[name], work, args.peers.split(","), unavailable, say)
        servers.extend(peers)
        refit = Server("refit", f"{stack.url('inference-0')}/v1/models/{name}/predict",
                       stack.procs["inference-0"].pid)
        for size in (1, 64):
            if f"{short}-{size}" not in wanted:
                continue
            for peer in peers:
                peer.body = body[peer.protocol, size]
            for connections in map(int, args.connections.split(",")):
                label = f"{short}-{size} c{connections}"
                say(f"  case {label}: {name}, {size}-row requests, {connections} connections")
                cases[label] = round_robin([wire, ceiling, refit, *peers], body["v1", size], args.rounds,
                                           args.seconds, connections, say)
                done = {k: c for k, c in cases.items() if "ceiling" in c.runs}  # kept if a later case fails
                args.out.with_suffix(".partial.md").write_text(table(done) + "\n")
        for peer in peers:
            peer.stop()
    if not args.no_workers:
        stack.env["REFIT_INFERENCE_WORKERS"] = "0"
        stack.restart("inference-0")
        wait_http(f"{stack.url('inference-0')}/readyz", timeout_s=120)
        cores = os.cpu_count()
        refit_n = Server(f"refit×{cores}", f"{stack.url('inference-0')}/v1/models/digits-lr/predict",
                         stack.procs["inference-0"].pid)
        connections = int(args.connections.split(",")[0])
        say(f"  case lr-1 with one refit worker per core ({cores}) against the one-worker ceiling")
        cases[f"lr-1 c{connections} workers={cores}"] = round_robin([ceiling, refit_n], body["v1", 1], args.rounds,
                                                                    args.seconds, connections, say)


def tracing_case(args: argparse.Namespace, stack: Stack, work: Path, body: Path, servers: list[Server],
                 connections: int, say: Callable[[str], None]) -> Case:
    """Replicas started the same way, serving the same champion of digits-lr from the same monitor: this
    tree with tracing off, one from ``--baseline-src`` (a tree without tracing, or any other), and this
    tree with tracing on (a span file) and every request sampled. (The stack's own replica is not one of
    them: started by the stack, it measured 20% slower than the same code started here, in two runs.)"""
    path = "/v1/models/digits-lr/predict"
    replicas: list[Server] = []
    variants = [("tracing off", REPO, {}),
                ("tracing on, sampled", REPO, {"REFIT_INFERENCE_TRACE_FILE": str(work / "spans.jsonl")})]
    if args.baseline_src is not None:
        variants.insert(0, ("baseline", args.baseline_src.resolve(), {}))
    for name, tree, extra in variants:
        port = free_port()
        env = {**stack.service_env("inference-0"), "REFIT_INFERENCE_PORT": str(port),
               "REFIT_INFERENCE_REPLICA_ID": f"bench-{len(servers)}", **extra,
               "PYTHONPATH": f"{tree / 'libs'}{os.pathsep}{tree}"}
        server = start_process(name, [sys.executable, "-m", "services.inference"], port, path, "/readyz", env=env,
                               log_dir=work / "logs", cwd=tree)
        servers.append(server)
        if "sampled" in name:
            server.traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
        replicas.append(server)
    say(f"  case trace-1: digits-lr, one row, c{connections}: {', '.join(s.name for s in replicas)}")
    return round_robin(replicas, body, args.rounds, args.seconds, connections, say)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--connections", default="16,64", help="the peers' cases run at each of these (the "
                        "other cases at the first)")
    parser.add_argument("--cases", default="lr-1,lr-64,rf-1,rf-64,shadow-1,v2-1", help="which cases to run")
    parser.add_argument("--peers", default=",".join(PEERS), help="which peers to run")
    parser.add_argument("--no-workers", action="store_true", help="skip the one-worker-per-core phase")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="trace-1: also a replica from this source tree (e.g. a worktree of a commit before "
                             "tracing), against the same monitor")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inference_peers.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `make bench`, which installs it")

    def say(text: str) -> None:
        print(text, flush=True)

    work = Path(tempfile.mkdtemp(prefix="refit-bench-"))
    logs = work / "logs"
    logs.mkdir()
    specs_path = specs_file(work)
    specs = load_specs(specs_path)
    stack = Stack(work / "stack", specs_path, env={"REFIT_INFERENCE_WORKERS": "1"})
    servers: list[Server] = []
    cases: dict[str, Case] = {}
    unavailable: dict[str, str] = {}
    connections = int(args.connections.split(",")[0])
    try:
        say(f"starting a local stack in {work} and training digits-lr and digits-rf …")
        stack.start()
        with httpx.Client(timeout=60) as client:
            rows = [{**r, "source": "bench"} for r in sample_rows("digits", 7)]
            for name in (*MODELS, SHADOWED):
                post_rows(client, stack.url("ingest"), name, rows)
            for name in (*MODELS, SHADOWED):
                decision = wait_for_decisions(client, stack.url("monitor"), name, 1, 300)[0]
                if decision["event_type"] != "ModelPromoted":
                    raise RuntimeError(f"{name} was not promoted: {decision['reasons']}")
                say(f"  {name}: v{decision['version']} promoted")
        wait_http(f"{stack.url('inference-0')}/readyz", timeout_s=120)
        body = bodies(work)
        wanted = args.cases.split(",")
        if "shadow-1" in wanted:
            refit = Server("refit", f"{stack.url('inference-0')}/v1/models/digits-lr/predict",
                           stack.procs["inference-0"].pid)
            with httpx.Client(timeout=60) as client:
                shadowed = with_challenger(client, stack, say)
                say(f"  case shadow-1: digits-lr without a challenger, {SHADOWED} with one, c{connections}")
                cases["shadow-1"] = round_robin([refit, shadowed], body["v1", 1], args.rounds, args.seconds,
                                                connections, say)
        if "v2-1" in wanted:
            replica = stack.url("inference-0")
            pid = stack.procs["inference-0"].pid
            protocols = [Server("refit /v1", f"{replica}/v1/models/digits-lr/predict", pid),
                         Server("refit /v2", f"{replica}/v2/models/digits-lr/infer", pid, body=body["v2", 1])]
            say(f"  case v2-1: digits-lr, one row, /v1 against the Open Inference Protocol, c{connections}")
            cases["v2-1"] = round_robin(protocols, body["v1", 1], args.rounds, args.seconds, connections, say)
        if "trace-1" in wanted:
            cases["trace-1"] = tracing_case(args, stack, work, body["v1", 1], servers, connections, say)
        if any(c[:2] in MODELS.values() for c in wanted) or not args.no_workers:
            against_peers(args, stack, specs, work, body, servers, cases, unavailable, say)
    finally:
        for server in servers:
            server.stop()
        stack.stop()
    shadow = cases.pop("shadow-1", None)
    protocols = cases.pop("v2-1", None)
    traced = cases.pop("trace-1", None)
    report = table(cases) if cases else ""
    if cases:
        report += "\n\nrefit against the fastest peer and the wire, per case:\n\n" + verdicts(cases)
    if unavailable:
        report += "\n\nPeers that could not be started here:\n\n" + "\n".join(
            f"- {name}: {why}" for name, why in unavailable.items())
    if protocols is not None:
        report += "\n\nThe Open Inference Protocol (V2) against /v1, one row, same replica, same run:\n\n" + \
            ratio_table(protocols, "refit /v1", "protocol")
    if traced is not None:
        report += "\n\nTracing: off (this tree), off (--baseline-src), on with every request sampled; one row:\n\n" + \
            ratio_table(traced, "tracing off", "replica")
    if shadow is not None:
        report += "\n\nShadow scoring, one challenger (ratios: with a challenger over without):\n\n" + \
            shadow_table(shadow)
    say("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"<!-- {' '.join(sys.argv)} on {time.strftime('%Y-%m-%d %H:%M')} -->\n{report}\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
