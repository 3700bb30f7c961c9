"""refit inference against its ceiling and its peers, round-robin in one run.

    make bench        # installs wrk and the bench extra (MLflow), then runs this with its defaults
    .venv/bin/python bench/inference_peers.py --rounds 3 --seconds 5

Servers, each one process on loopback, started here and stopped by PID:

- **ceiling**: FastAPI on refit's server stack (uvicorn, uvloop, httptools, one worker) that
  parses the same JSON body and answers a constant (``bench/peers.py``);
- **refit**: an inference replica of a real local stack (embedded broker, the four services),
  serving champions the stack trained and promoted: ``digits-lr`` (the repo's digits spec,
  a logistic regression) and ``digits-rf`` (100 trees);
- **sklearn**: FastAPI on the same stack calling the scikit-learn pipeline's ``predict_proba``;
- **mlflow**: ``mlflow models serve --env-manager local`` (one worker) for the same pipeline,
  saved with ``pyfunc_predict_fn="predict_proba"``.

The scikit-learn pipeline is built from the same spec (``services.trainer.fit.build_pipeline``)
and fitted on the same 1,797 digits rows refit's trainer was given. Load: ``wrk`` (one thread,
``--connections`` keep-alive connections, ``--seconds`` per run), for single-row and 64-row
bodies ``{"inputs": [[64 numbers], ...]}``; every (model, batch) case runs the servers in
turn, A B C D, rotating the order each round. Per case: median over rounds of requests/s, p50
and p99, the errors (non-2xx and socket errors), the server's RSS after the runs, and the
ratios to the ceiling and to MLflow. Then the workers phase: refit with one worker per core
(``REFIT_INFERENCE_WORKERS=0``) against the single-worker ceiling, round-robin again.

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
    """The repo's digits spec as ``digits-lr``, and the same spec with a 100-tree forest as ``digits-rf``."""
    config = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
    digits = next(m for m in config["models"] if m["name"] == "digits")
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
    traceparent: str | None = None                 # sent with every request (a sampled trace)

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


def wrk(url: str, body: Path, seconds: float, connections: int, traceparent: str | None = None) -> Run:
    """One bounded wrk run (one thread, ``seconds`` long, 10 s request timeout), parsed."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
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
    return Run(rps, _ms(latency["50"]), _ms(latency["99"]), requests, errors)


def start_process(name: str, argv: list[str], port: int, path: str, health: str, env: dict[str, str] | None = None,
                  log_dir: Path | None = None, cwd: Path | None = None) -> Server:
    log = open(log_dir / f"{name}.log", "ab") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    server = Server(name, f"http://127.0.0.1:{port}{path}", proc.pid, proc)
    try:
        wait_http(f"http://127.0.0.1:{port}{health}", timeout_s=120, proc=proc)
    except Exception:
        server.stop()  # started here, stopped here: a server that never answered is not left behind
        raise
    return server


def peers_for(model: str, pipeline_path: Path, mlflow_dir: Path, logs: Path) -> list[Server]:
    sk_port, ml_port = free_port(), free_port()
    sklearn = start_process(f"sklearn-{model}", [sys.executable, str(REPO / "bench" / "peers.py"), "sklearn",
                                                   "--model", str(pipeline_path), "--port", str(sk_port)],
                            sk_port, "/predict", "/docs", log_dir=logs)
    try:
        mlflow = start_process(f"mlflow-{model}", [str(Path(sys.executable).parent / "mlflow"), "models", "serve",
                                                     "-m", str(mlflow_dir), "--env-manager", "local", "-h", "127.0.0.1",
                                                     "-p", str(ml_port), "-w", "1"],
                               ml_port, "/invocations", "/ping",
                               # MLflow runs `uvicorn` by name: the venv's bin must be on PATH.
                               env={"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
                               log_dir=logs)
    except Exception:
        sklearn.stop()  # ours: never leave it running when MLflow cannot start
        raise
    return [Server("sklearn", sklearn.url, sklearn.pid, sklearn.proc), Server("mlflow", mlflow.url, mlflow.pid,
                                                                              mlflow.proc)]


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


def bodies(work: Path) -> dict[int, Path]:
    rows = [[float(v) for v in r["features"].values()] for r in sample_rows("digits", 7)[:64]]
    out = {}
    for size in (1, 64):
        out[size] = work / f"body-{size}.json"
        out[size].write_text(json.dumps({"inputs": rows[:size]}))
    return out


def v2_body(work: Path) -> Path:
    """The single-row body in the Open Inference Protocol: one FP32 tensor of shape [1, 64]."""
    row = [float(v) for v in sample_rows("digits", 7)[0]["features"].values()]
    path = work / "body-v2-1.json"
    path.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}))
    return path


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
        wrk(server.url, server.body or body, 1, connections, server.traceparent)
    for number in range(rounds):
        order = servers[number % len(servers):] + servers[:number % len(servers)]
        for server in order:
            before = server.cpu_s()
            run = wrk(server.url, server.body or body, seconds, connections, server.traceparent)
            server.settle()
            run.cpu_us = (server.cpu_s() - before) / max(run.requests, 1) * 1e6
            case.runs[server.name].append(run)
            say(f"    round {number + 1} {server.name:9} {run.rps:9.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
                f"p99 {run.p99_ms:7.2f} ms  CPU {run.cpu_us:6.1f} us/request  errors {run.errors}")
    case.rss = {s.name: s.rss_mib() for s in servers}
    return case


def table(cases: dict[str, Case]) -> str:
    lines = ["| case | server | req/s | p50 ms | p99 ms | requests | errors | RSS MiB | × ceiling | × MLflow |"
             " p99 / ceiling p99 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, case in cases.items():
        ceiling = case.median("ceiling", "rps")
        ceiling_p99 = case.median("ceiling", "p99_ms")
        mlflow = case.median("mlflow", "rps") if "mlflow" in case.runs else None
        for name, runs in case.runs.items():
            rps = case.median(name, "rps")
            lines.append(
                f"| {label} | {name} | {rps:,.0f} | {case.median(name, 'p50_ms'):.2f} | {case.median(name, 'p99_ms'):.2f}"
                f" | {sum(r.requests for r in runs):,} | {sum(r.errors for r in runs)} | {case.rss.get(name, 0):.0f}"
                f" | {rps / ceiling:.2f} | {f'{rps / mlflow:.1f}' if mlflow else '-'}"
                f" | {case.median(name, 'p99_ms') / ceiling_p99:.2f} |")
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


def against_peers(args: argparse.Namespace, stack: Stack, specs: ModelSpecs, work: Path, body: dict[int, Path],
                  servers: list[Server], cases: dict[str, Case], say: Callable[[str], None]) -> None:
    """The peers' cases and the workers phase (the servers started are appended to ``servers``)."""
    wanted, logs = args.cases.split(","), work / "logs"
    fitted = train_peers(specs, work) if any(c[:2] in MODELS.values() for c in wanted) else {}
    ceiling_port = free_port()
    ceiling = start_process("ceiling", [sys.executable, str(REPO / "bench" / "peers.py"), "ceiling",
                                        "--port", str(ceiling_port)], ceiling_port, "/predict", "/docs",
                            log_dir=logs)
    servers.append(ceiling)
    for name, short in MODELS.items():
        if not any(c.startswith(short) for c in wanted):
            continue
        peers = peers_for(name, *fitted[name], logs)
        servers.extend(peers)
        refit = Server("refit", f"{stack.url('inference-0')}/v1/models/{name}/predict",
                       stack.procs["inference-0"].pid)
        for size in (1, 64):
            label = f"{short}-{size}"
            if label not in wanted:
                continue
            say(f"  case {label}: {name}, {size}-row requests, c{args.connections}")
            cases[label] = round_robin([ceiling, refit, *peers], body[size], args.rounds, args.seconds,
                                       args.connections, say)
        for peer in peers:
            peer.stop()
    if not args.no_workers:
        stack.env["REFIT_INFERENCE_WORKERS"] = "0"
        stack.restart("inference-0")
        wait_http(f"{stack.url('inference-0')}/readyz", timeout_s=120)
        cores = os.cpu_count()
        refit_n = Server(f"refit×{cores}", f"{stack.url('inference-0')}/v1/models/digits-lr/predict",
                         stack.procs["inference-0"].pid)
        say(f"  case lr-1 with one refit worker per core ({cores}) against the one-worker ceiling")
        cases[f"lr-1 workers={cores}"] = round_robin([ceiling, refit_n], body[1], args.rounds, args.seconds,
                                                    args.connections, say)


def tracing_case(args: argparse.Namespace, stack: Stack, work: Path, body: Path, servers: list[Server],
                 say: Callable[[str], None]) -> Case:
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
    say(f"  case trace-1: digits-lr, one row, c{args.connections}: {', '.join(s.name for s in replicas)}")
    return round_robin(replicas, body, args.rounds, args.seconds, args.connections, say)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--cases", default="lr-1,lr-64,rf-1,rf-64,shadow-1,v2-1", help="which cases to run")
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
                say(f"  case shadow-1: digits-lr without a challenger, {SHADOWED} with one, c{args.connections}")
                cases["shadow-1"] = round_robin([refit, shadowed], body[1], args.rounds, args.seconds,
                                                args.connections, say)
        if "v2-1" in wanted:
            replica = stack.url("inference-0")
            pid = stack.procs["inference-0"].pid
            protocols = [Server("refit /v1", f"{replica}/v1/models/digits-lr/predict", pid),
                         Server("refit /v2", f"{replica}/v2/models/digits-lr/infer", pid, body=v2_body(work))]
            say(f"  case v2-1: digits-lr, one row, /v1 against the Open Inference Protocol, c{args.connections}")
            cases["v2-1"] = round_robin(protocols, body[1], args.rounds, args.seconds, args.connections, say)
        if "trace-1" in wanted:
            cases["trace-1"] = tracing_case(args, stack, work, body[1], servers, say)
        if any(c[:2] in MODELS.values() for c in wanted) or not args.no_workers:
            against_peers(args, stack, specs, work, body, servers, cases, say)
    finally:
        for server in servers:
            server.stop()
        stack.stop()
    shadow = cases.pop("shadow-1", None)
    protocols = cases.pop("v2-1", None)
    traced = cases.pop("trace-1", None)
    report = table(cases) if cases else ""
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
