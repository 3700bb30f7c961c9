"""Many models in one inference replica: memory per model, the time to load them all, requests spread
over them against one model, and a swap while the others serve.

    .venv/bin/python bench/many_models.py --models 100,1000

For each N of ``--models``: a real local stack (embedded broker, the four services, one inference
replica) with N digits logistic-regression specs (``digits-0000`` …, the repo's digits spec),
each trained by the trainer on its own seeded ``--rows`` of the 1,797 digits rows (so N distinct
sets of weights) and promoted by the monitor. Then:

- **memory**: the replica's RSS (children included) when it serves its first champion, and when it
  serves all N: per model beyond the first, (RSS at N - RSS at 1) / (N - 1);
- **load**: the replica restarted, the time from its start to serving all N champions (fetched
  from the monitor, checked, loaded and warmed), and its RSS then;
- **throughput**: single-row requests (wrk, one thread, 16 connections) to one model against the
  same requests spread uniformly over the N models (a seeded random model per request),
  round-robin over ``--rounds``, medians;
- **swap**: during a spread run, ``--rows`` new rows for one model, which trains again on more data
  (new weights): the time from the monitor's decision to the replica serving the new version (their
  log lines, one clock), the replica's own fetch + load + warm, and the errors wrk saw over the run.

Results go to ``bench/results/many_models.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs"), str(REPO / "bench")]

from inference_peers import Run, Server, bodies, round_robin, wrk  # noqa: E402
from sample_to_serving import at, log_lines  # noqa: E402
from refit.datasets import sample_rows  # noqa: E402
from refit.demo import post_rows  # noqa: E402
from refit.stack import Stack, wait_http  # noqa: E402

SPREAD_LUA = """
math.randomseed(7)
local models = tonumber(os.getenv("BENCH_MODELS"))
request = function()
  return wrk.format(nil, string.format("/v1/models/digits-%04d/predict", math.random(0, models - 1)))
end
"""


def name(index: int) -> str:
    return f"digits-{index:04d}"


def specs_file(directory: Path, models: int, rows: int) -> Path:
    """N copies of the repo's digits spec, each trained once on its ``rows`` (no drift or performance
    triggers: no labels flow after training), every candidate promoted."""
    digits = next(m for m in yaml.safe_load((REPO / "config" / "models.yaml").read_text())["models"]
                  if m["name"] == "digits")
    digits["training"] = {**digits["training"], "min_new_samples": int(rows * 0.6), "min_samples": 100}
    digits["triggers"] = {"drift": False, "performance": False, "max_age_days": None}
    # Every candidate promoted (no absolute gate, a wide tolerance): the replica is measured, not the
    # verdict; a first model on a few hundred rows can miss the spec's 0.80 gate on 60 holdout rows.
    digits["safeguard"] = {"min_holdout": 20, "metrics": [{"name": m, "max_relative_degradation": 1.0}
                                                          for m in ("accuracy", "f1_macro", "f1_weighted")]}
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{**digits, "name": name(i)} for i in range(models)]}))
    return path


def rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def served(client: httpx.Client, replica: str) -> dict[str, int | None]:
    return {m["name"]: m["version"] for m in client.get(f"{replica}/v1/models").json()}


def settle(pid: int, timeout_s: float = 120.0) -> float:
    """Seconds until the replica is idle (under 5 % of a core over a second): what start-up left to do
    (fetching each model's prior, the first reconcile with the monitor) is done before measuring."""
    process, started = psutil.Process(pid), time.monotonic()
    process.cpu_percent()
    while process.cpu_percent(interval=1.0) >= 5 and time.monotonic() - started < timeout_s:
        pass
    return time.monotonic() - started


def wait_all_served(client: httpx.Client, replica: str, models: int, timeout_s: float) -> float:
    """Seconds until the replica serves a champion of every model."""
    started = time.monotonic()
    while sum(v is not None for v in served(client, replica).values()) < models:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the replica does not serve all {models} models after {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def swap_during_spread(client: httpx.Client, stack: Stack, body: Path, rows: int,
                       seconds: float) -> tuple[float, float, Run]:
    """New rows for one model while spread requests run, so it trains again on more data (new weights)
    and is promoted: from the monitor's decision to the replica serving it (their log lines, one
    clock), the replica's own fetch + load + warm, and the spread run."""
    replica, target = stack.url("inference-0"), name(1)
    before = served(client, replica)[target]
    result: dict[str, Run] = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", wrk(
        f"{replica}/v1/models/{name(0)}/predict", body, seconds, 16, lua=SPREAD_LUA)))
    thread.start()
    time.sleep(1)
    post_rows(client, stack.url("ingest"), target,
              [{**r, "source": "bench"} for r in sample_rows("digits", 100_000)[:rows]])
    deadline = time.monotonic() + 300
    while served(client, replica)[target] in (before, None):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target} was not served again within 300 s")
        time.sleep(0.05)
    thread.join()
    version = served(client, replica)[target]
    logs = stack.state_dir / "logs"
    decided = next(r for r in log_lines(logs / "monitor.log", "decided")
                   if r["model"] == target and r["version"] == version)
    serving = next(r for r in log_lines(logs / "inference-0.log", "serving")
                   if r["model"] == target and r["version"] == version)
    return at(serving) - at(decided), serving["seconds"], result["run"]


def one_size(args: argparse.Namespace, models: int, work: Path, say) -> dict[str, object]:  # type: ignore[no-untyped-def]
    directory = work / f"n{models}"
    directory.mkdir()
    specs = specs_file(directory, models, args.rows)
    stack = Stack(directory / "stack", specs, env={"REFIT_INFERENCE_WORKERS": "1"})
    os.environ["BENCH_MODELS"] = str(models)  # the spread script's model count (wrk inherits it)
    try:
        say(f"N = {models}: starting a local stack in {directory} …")
        stack.start()
        replica = stack.url("inference-0")
        with httpx.Client(timeout=120) as client:
            pid = stack.procs["inference-0"].pid
            base_rss = rss_mib(pid)
            started = time.monotonic()
            post_rows(client, stack.url("ingest"), name(0),
                      [{**r, "source": "bench"} for r in sample_rows("digits", 0)[:args.rows]])
            wait_all_served(client, replica, 1, 300)
            first_rss = rss_mib(pid)
            for i in range(1, models):
                post_rows(client, stack.url("ingest"), name(i),
                          [{**r, "source": "bench"} for r in sample_rows("digits", i)[:args.rows]])
            wait_all_served(client, replica, models, args.timeout)  # all trained, promoted and loaded
            train_s = time.monotonic() - started
            all_rss = rss_mib(pid)
            say(f"  trained, promoted and served {models} models in {train_s:.0f} s; replica RSS "
                f"{base_rss:.0f} MiB with none, {first_rss:.0f} with one, {all_rss:.0f} with {models}")
            stack.restart("inference-0")
            restarted = time.monotonic()
            wait_http(f"{replica}/readyz", timeout_s=args.timeout)
            wait_all_served(client, replica, models, args.timeout)
            load_s = time.monotonic() - restarted
            pid = stack.procs["inference-0"].pid
            load_rss = rss_mib(pid)
            say(f"  idle {settle(pid):.0f} s after serving all")
            say(f"  restarted: serving all {models} in {load_s:.1f} s, RSS {load_rss:.0f} MiB")
            body = bodies(directory)["v1", 1]
            one = Server("one model", f"{replica}/v1/models/{name(0)}/predict", pid)
            spread = Server("spread", f"{replica}/v1/models/{name(0)}/predict", pid, lua=SPREAD_LUA)
            case = round_robin([one, spread], body, args.rounds, args.seconds, 16, say)
            swap_s, load_swap_s, run = swap_during_spread(client, stack, body, args.rows, args.seconds * 2)
            say(f"  swap of {name(1)} during spread requests: {swap_s * 1000:.0f} ms from the decision to serving "
                f"(fetch + load + warm {load_swap_s * 1000:.1f} ms); {run.requests:,} requests, {run.errors} errors")
    finally:
        stack.stop()
    per_model = (all_rss - first_rss) / (models - 1)
    return {"models": models, "train_s": train_s, "rss_none": base_rss, "rss_one": first_rss, "rss_all": all_rss,
            "per_model": per_model, "load_s": load_s, "load_rss": load_rss,
            "one_rps": case.median("one model", "rps"), "spread_rps": case.median("spread", "rps"),
            "one_p99": case.median("one model", "p99_ms"), "spread_p99": case.median("spread", "p99_ms"),
            "errors": sum(r.errors for runs in case.runs.values() for r in runs) + run.errors,
            "swap_ms": swap_s * 1000, "swap_load_ms": load_swap_s * 1000, "swap_requests": run.requests, "swap_errors": run.errors}


def table(results: list[dict[str, object]]) -> str:
    lines = ["| models | RSS with 1 | RSS with N | MiB per model beyond the first | restart to serving all"
             " | RSS after the restart | one model req/s | spread req/s | spread × one | p99 one / spread ms"
             " | swap during spread (decision to serving) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['models']:,} | {r['rss_one']:.0f} MiB | {r['rss_all']:.0f} MiB | {r['per_model']:.2f}"
            f" | {r['load_s']:.1f} s | {r['load_rss']:.0f} MiB | {r['one_rps']:,.0f} | {r['spread_rps']:,.0f}"
            f" | {r['spread_rps'] / r['one_rps']:.2f} | {r['one_p99']:.2f} / {r['spread_p99']:.2f}"
            f" | {r['swap_ms']:.0f} ms (fetch + load + warm {r['swap_load_ms']:.1f} ms) | {r['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="100,1000", help="the replica sizes to measure")
    parser.add_argument("--rows", type=int, default=300, help="digits rows per model (a fifth go to the holdout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on training and loading, per size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "many_models.md")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, flush=True)

    work = Path(tempfile.mkdtemp(prefix="refit-many-"))
    results = [one_size(args, int(n), work, say) for n in args.models.split(",")]
    report = table(results)
    say("\n" + report)
    args.out.write_text(f"<!-- {' '.join(sys.argv)} on {time.strftime('%Y-%m-%d %H:%M')} -->\n{report}\n")


if __name__ == "__main__":
    main()
