"""Training scaling: train + convert + judge time and peak memory at 1k, 10k, 100k and 1M samples.

    .venv/bin/python bench/training_scaling.py                                  # the full run
    .venv/bin/python bench/training_scaling.py --sizes 1000,10000 --models diabetes

For each model (the digits and diabetes specs of ``config/models.yaml``) the samples are the
bundled rows resampled with small gaussian noise (5% of each feature's standard deviation,
labels kept), plus 5% exact duplicates, 2% conflicting copies (same input, another label) and
4% low-confidence rows, so the quality filters have work to do. Each sample goes through the
holdout split the services use: training rows into the trainer's store
(``DatasetStore.add_samples``), holdout rows into the monitor's registry. The stores grow from
one size to the next.

Every measurement runs in a fresh subprocess, on the real code paths, one for the trainer and
one for the monitor (as in the services):

- trainer (``services.trainer.training_set.prepare`` then ``services.trainer.fit.fit_set``, what
  ``Trainer.train`` runs): load (read the window from SQLite), filter (the quality filters), fit
  (held-back split, float32 matrix, ``pipeline.fit``), convert (skl2onnx), check (ONNX vs
  scikit-learn on the held-back rows);
- monitor: judge (``Registry.holdout`` of the newest ``holdout_max_rows``, both models loaded
  with onnxruntime, ``services.monitor.judge.assess``: metrics, paired bootstrap, safeguard)
  against a champion (the candidate loaded a second time, so every step of a real decision runs).

Each size is measured with the spec's window (``training.window_max_rows``, 200,000) and,
where the store holds more rows than that, again with a window holding all of them (the raw
scaling of the code path). Peak memory is each subprocess's ``ru_maxrss``; the baseline is a
subprocess that only imports the same modules. Results: a markdown table on stdout and in
``bench/results/training_scaling.md``, every number in ``bench/results/training_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "config" / "models.yaml"
RESULTS = ROOT / "bench" / "results"
NOISE = 0.05  # gaussian noise, as a fraction of each feature's standard deviation
DUPLICATES, CONFLICTS, LOW_CONFIDENCE = 0.05, 0.02, 0.04
CHUNK = 20_000  # samples per store transaction while populating
STAGES = ("load", "filter", "fit", "convert", "check", "judge")
TRAINER_STAGES = STAGES[:-1]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- children --------------------------------------------------------------------------------------

def child_baseline() -> dict[str, Any]:
    """The interpreter plus every module a measurement imports, nothing else."""
    _measurement_imports()
    return {"rss_mib": max_rss_mib()}


def _measurement_imports() -> None:
    import refit.core.filters  # noqa: F401
    import refit.onnx_model  # noqa: F401
    import services.monitor.judge  # noqa: F401
    import services.monitor.registry  # noqa: F401
    import services.trainer.fit  # noqa: F401
    import services.trainer.training_set  # noqa: F401


def child_populate(model: str, state: str, start: int, stop: int, seed: int) -> dict[str, Any]:
    """Add samples ``start`` .. ``stop`` of the synthetic stream to the trainer's store and the monitor's holdout."""
    import numpy as np

    from refit.core.split import is_holdout
    from refit.datasets import sample_rows
    from refit.events import SampleIngested
    from refit.specs import load_specs
    from services.monitor.registry import Registry
    from services.trainer.store import DatasetStore

    spec = load_specs(SPECS).get(model)
    names = list(spec.input.features)
    bundled = sample_rows(model)
    base = np.array([[r["features"][f] for f in names] for r in bundled], dtype=np.float64)
    labels = [r["label"] for r in bundled]
    sd = base.std(axis=0) * NOISE
    store, registry = DatasetStore(Path(state) / "trainer.sqlite"), Registry(Path(state) / "monitor.sqlite")
    t0, started = datetime(2026, 1, 1, tzinfo=UTC).timestamp(), time.perf_counter()
    for lo in range(start, stop, CHUNK):
        hi = min(stop, lo + CHUNK)
        rng = np.random.default_rng([seed, lo])
        pick = rng.integers(0, len(base), hi - lo)
        x = base[pick] + rng.normal(size=(hi - lo, len(names))) * sd
        y = [labels[i] for i in pick]
        conf: list[float | None] = [None] * (hi - lo)
        for k in range(1, hi - lo):
            u = rng.random()
            if u < DUPLICATES + CONFLICTS:  # a copy of an earlier input of this chunk
                j = int(rng.integers(0, k))
                x[k], y[k] = x[j], y[j]
                if u >= DUPLICATES:  # ... with another label
                    y[k] = str((int(y[j]) + 1) % 10) if spec.task == "classification" else float(y[j]) + 50.0
            elif u < DUPLICATES + CONFLICTS + LOW_CONFIDENCE:
                conf[k] = 0.3
        training, holdout = [], []
        for k, row in enumerate(x.tolist()):
            sid = str(uuid.UUID(bytes=rng.bytes(16)))
            event = SampleIngested(model=model, sample_id=sid, features=dict(zip(names, row, strict=True)),
                                   label=y[k], confidence=conf[k],
                                   occurred_at=datetime.fromtimestamp(t0 + (lo + k) / 1000, UTC))
            (holdout if is_holdout(sid, spec.training.holdout_fraction, model) else training).append(event)
        store.add_samples(training, holdout)
        registry.add_holdout(holdout)
    rows, _ = store.counts(model)
    return {"rows_in_store": rows, "seconds": time.perf_counter() - started}


def child_train(model: str, state: str, window: int | None, threads: int) -> dict[str, Any]:
    """One training of ``model`` on its store, as the trainer runs it; the candidate is left in ``state``."""
    _measurement_imports()
    from services.trainer.fit import fit_set
    from services.trainer.store import DatasetStore
    from services.trainer.training_set import prepare

    spec = _spec(model, window)
    rss_start = max_rss_mib()
    store = DatasetStore(Path(state) / "trainer.sqlite")
    started = time.perf_counter()
    rows_in_store, _ = store.counts(model)
    counted = time.perf_counter()
    threshold = spec.training.min_new_samples
    store.counts(model, at_most=max(spec.training.min_samples, threshold or 0))  # as Trainer.due asks
    due_s = time.perf_counter() - counted
    data, info = prepare(store, spec, datetime.now(UTC))
    rss_prepared = max_rss_mib()
    fitted = fit_set(spec, data, threads=threads)
    del data
    Path(state, "candidate.onnx").write_bytes(fitted.onnx_bytes)
    Path(state, "candidate.json").write_text(json.dumps({
        "classes": fitted.classes, "conversion": fitted.conversion.model_dump(mode="json"),
        "rows_seen": info.rows_seen, "rows_trained": fitted.rows_trained, "rows_held_back": fitted.rows_held_back,
        "duration_s": fitted.duration_s}))
    seconds = {"load": info.seconds["load"], "filter": info.seconds["filter"],
               "fit": info.seconds["split"] + fitted.seconds["fit"], "convert": fitted.seconds["convert"],
               "check": fitted.seconds["check"]}
    return {
        "model": model, "window": spec.training.window_max_rows, "rows_in_store": rows_in_store,
        "rows_read": info.rows_seen, "rows_trained": fitted.rows_trained, "rows_held_back": fitted.rows_held_back,
        "filters": info.filters.as_dict(), "seconds": seconds, "iterations": fitted.iterations,
        "detail_s": {"split": info.seconds["split"], "pipeline_fit": fitted.seconds["fit"],
                     "exact_count": counted - started, "due_check": due_s},
        "conversion_passed": fitted.conversion.passed,
        "rss_start_mib": rss_start, "rss_after_prepare_mib": rss_prepared, "rss_peak_mib": max_rss_mib(),
    }


def child_judge(model: str, state: str) -> dict[str, Any]:
    """The monitor's judgement of the candidate ``child_train`` left, against a champion, on its holdout."""
    _measurement_imports()
    from refit.events import ArtifactRef, CandidateTrained, ConversionCheck, InputSignature, TrainingStats
    from refit.onnx_model import OnnxModel
    from services.monitor.judge import assess
    from services.monitor.registry import Registry

    spec = _spec(model, None)
    onnx_bytes = Path(state, "candidate.onnx").read_bytes()
    made = json.loads(Path(state, "candidate.json").read_text())
    registry = Registry(Path(state) / "monitor.sqlite")
    stored = registry.holdout_size(spec.name)
    rss_start = max_rss_mib()
    started = time.perf_counter()
    holdout = registry.holdout(spec.name, spec.training.holdout_max_rows)
    holdout_s = time.perf_counter() - started
    candidate = CandidateTrained(
        model=spec.name, candidate_id="bench", task=spec.task,
        artifact=ArtifactRef(digest="0" * 64, size_bytes=len(onnx_bytes), uri="memory:"),
        signature=InputSignature(kind=spec.input.kind, features=list(spec.input.features)),
        classes=made["classes"], conversion=ConversionCheck(**made["conversion"]), trigger="bench",
        training=TrainingStats(rows_seen=made["rows_seen"], rows_trained=made["rows_trained"],
                               rows_held_back=made["rows_held_back"], duration_s=made["duration_s"],
                               estimator=spec.estimator.class_path, spec_hash=spec.spec_hash(), code_version="bench"))
    # The champion is the same model loaded a second time, so every step of a real decision runs
    # (champion scores and the paired bootstrap).
    outcome = assess(spec, candidate, OnnxModel(onnx_bytes), OnnxModel(onnx_bytes), holdout)
    return {"judge_s": time.perf_counter() - started, "holdout_read_s": holdout_s, "holdout_rows": len(holdout.ids),
            "holdout_stored": stored,
            "scores": outcome.candidate_scores, "promote": outcome.promote,
            "rss_start_mib": rss_start, "rss_peak_mib": max_rss_mib()}


def _spec(model: str, window: int | None) -> Any:
    from refit.specs import load_specs

    spec = load_specs(SPECS).get(model)
    if window is None:
        return spec
    return spec.model_copy(update={"training": spec.training.model_copy(update={"window_max_rows": window})})


def _child_main(args: list[str]) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "libs")]
    kind, kwargs = args[0], json.loads(args[1])
    children = {"baseline": child_baseline, "populate": child_populate, "train": child_train, "judge": child_judge}
    out = children[kind](**kwargs)
    print(json.dumps(out))


# --- parent ----------------------------------------------------------------------------------------

def run_child(kind: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(kwargs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {kwargs} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bare_interpreter_mib() -> float:
    code = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout)


def run(models: list[str], sizes: list[int], seed: int, timeout: float, workdir: str | None,
        threads: int) -> dict[str, Any]:
    from refit.specs import load_specs

    specs = load_specs(SPECS)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "fit_threads": threads,
               "load_before": os.getloadavg(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
    baseline = {"bare_interpreter_mib": bare_interpreter_mib(), "with_imports_mib": child_baseline_run(timeout)}
    runs: list[dict[str, Any]] = []
    for model in models:
        default_window = specs.get(model).training.window_max_rows
        with tempfile.TemporaryDirectory(prefix="refit-scaling-", dir=workdir) as state:
            populated = 0
            for size in sorted(sizes):
                filled = run_child("populate", timeout, model=model, state=state, start=populated, stop=size,
                                   seed=seed)
                populated = size
                print(f"{model}: {size:,} samples, {filled['rows_in_store']:,} rows in store "
                      f"({filled['seconds']:.1f} s to populate)", file=sys.stderr)
                windows: list[int | None] = [None]
                if filled["rows_in_store"] > default_window:
                    windows.append(filled["rows_in_store"])
                for window in windows:
                    result = run_child("train", timeout, model=model, state=state, window=window,
                                       threads=threads)
                    judged = run_child("judge", timeout, model=model, state=state)
                    result["seconds"]["judge"] = judged["judge_s"]
                    result.update(samples=size, window_kind="spec" if window is None else "all rows",
                                  populate_s=filled["seconds"], judge=judged,
                                  total_s=sum(result["seconds"].values()))
                    runs.append(result)
                    print(f"  window {result['window']:,}: total {result['total_s']:.2f} s, trainer peak "
                          f"{result['rss_peak_mib']:.0f} MiB, judge peak {judged['rss_peak_mib']:.0f} MiB",
                          file=sys.stderr)
    machine["load_after"] = os.getloadavg()
    return {"machine": machine, "baseline": baseline, "runs": runs, "seed": seed}


def child_baseline_run(timeout: float) -> float:
    return float(run_child("baseline", timeout)["rss_mib"])


def with_ratios(report: dict[str, Any]) -> None:
    """Per-row times of every run relative to the same model's 10k run (or its smallest run).

    The trainer's time (load to check) per row read, the fit's per row trained, and the total's
    (judge included: bounded by the holdout's size, so it shrinks per row).
    """
    for model in {r["model"] for r in report["runs"]}:
        mine = [r for r in report["runs"] if r["model"] == model]
        ref = next((r for r in mine if r["samples"] == 10_000), min(mine, key=lambda r: r["samples"]))
        for r in mine:
            r["trainer_s"] = sum(r["seconds"][s] for s in TRAINER_STAGES)
        for r in mine:
            r["ratio_ref_samples"] = ref["samples"]
            r["trainer_per_row_ratio"] = (r["trainer_s"] / r["rows_read"]) / (ref["trainer_s"] / ref["rows_read"])
            r["fit_per_row_ratio"] = ((r["seconds"]["fit"] / r["rows_trained"])
                                      / (ref["seconds"]["fit"] / ref["rows_trained"]))
            r["total_per_row_ratio"] = (r["total_s"] / r["rows_read"]) / (ref["total_s"] / ref["rows_read"])


def markdown(report: dict[str, Any]) -> str:
    base = report["baseline"]
    head = ("| model | samples | window | rows in store | rows read | rows trained | "
            + " | ".join(f"{s} s" for s in STAGES)
            + " | total s | trainer s/row vs 10k | fit s/row vs 10k | solver iterations | trainer peak RSS MiB"
            " (over baseline) | judge peak RSS MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["runs"]:
        window = f"{r['window']:,}" + (" (spec)" if r["window_kind"] == "spec" else " (all)")
        stages = " | ".join(f"{r['seconds'][s]:.2f}" for s in STAGES)
        lines.append(
            f"| {r['model']} | {r['samples']:,} | {window} | {r['rows_in_store']:,} | {r['rows_read']:,} | "
            f"{r['rows_trained']:,} | {stages} | {r['total_s']:.2f} | {r['trainer_per_row_ratio']:.2f} | "
            f"{r['fit_per_row_ratio']:.2f} | {r['iterations'] if r['iterations'] is not None else '–'} | "
            f"{r['rss_peak_mib']:.0f} (+{r['rss_peak_mib'] - base['with_imports_mib']:.0f}) | "
            f"{r['judge']['rss_peak_mib']:.0f} |")
    lines += ["", "| model | samples | window | rows in store | exact row count s | due check s (capped count) "
              "| holdout rows stored | holdout rows judged | holdout read s | judge s |", "|" + "---|" * 10]
    for r in report["runs"]:
        j = r["judge"]
        lines.append(f"| {r['model']} | {r['samples']:,} | {r['window']:,} | {r['rows_in_store']:,} | "
                     f"{r['detail_s']['exact_count']:.3f} | {r['detail_s']['due_check']:.4f} | "
                     f"{j['holdout_stored']:,} | {j['holdout_rows']:,} | {j['holdout_read_s']:.2f} | {j['judge_s']:.2f} |")
    m = report["machine"]
    lines += [
        "",
        f"Baseline: bare interpreter {base['bare_interpreter_mib']:.0f} MiB; with the measurement's imports "
        f"(numpy, scikit-learn, skl2onnx, onnxruntime, refit) {base['with_imports_mib']:.0f} MiB.",
        f"Fit threads (BLAS/OpenMP): {m['fit_threads']}. "
        f"Machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; load average "
        f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after; started {m['started']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="samples per step, comma-separated")
    parser.add_argument("--models", default="digits,diabetes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to each subprocess")
    parser.add_argument("--workdir", default=None, help="where the temporary SQLite files go (default: the system's)")
    parser.add_argument("--fit-threads", type=int, default=1,
                        help="BLAS/OpenMP threads of the fit (the trainer's default is 1)")
    parser.add_argument("--out", default=str(RESULTS / "training_scaling"), help="path without extension")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "libs")]
    started = time.perf_counter()
    report = run(args.models.split(","), [int(s) for s in args.sizes.split(",")], args.seed, args.timeout,
                 args.workdir, args.fit_threads)
    report["wall_s"] = time.perf_counter() - started
    report["command"] = " ".join([".venv/bin/python", "bench/training_scaling.py", *sys.argv[1:]])
    with_ratios(report)
    table = markdown(report)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(f"`{report['command']}` ({report['wall_s']:.0f} s)\n\n{table}")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
