"""What a policy with a quarter of every-250's trainings could reach at best, on bench/freshness.py's streams.

Offline, no stack: the same streams, estimators, first model and chunks as ``bench/freshness.py``,
served by an *oracle* that knows where each change is. On the abrupt streams it retrains twice per
change, ``--delays`` samples after it, on the rows since the change (what refit's located change,
its first post-change training and one catch-up do at best). On the gradual streams it retrains at
fixed points of the drift on the newest ``window`` rows (every schedule in ``GRADUAL``). Each line
gives the oracle's served quality beside every-250's: where the best schedule is still outside the
issue's target, no trigger policy with that many trainings meets it.

    .venv/bin/python bench/freshness_bounds.py                # about 5 s
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "libs"), str(REPO / "bench")]

import freshness as fresh  # noqa: E402
from refit.specs import ModelSpec  # noqa: E402
from services.trainer.fit import build_pipeline  # noqa: E402

# (retraining points, samples after the first model; window) for the gradual streams: 4 retrainings
GRADUAL = [((2800, 3200, 3600, 4000), 400), ((2900, 3400, 3900, 4400), 400), ((3000, 3500, 4000, 4500), 300),
           ((3000, 3500, 4000, 4500), 400), ((3000, 3500, 4000, 4500), 600), ((3100, 3700, 4300, 4900), 600)]


def served(stream: fresh.Stream, spec: ModelSpec, fits: list[tuple[int, int, int]], chunk: int) -> float:
    """Quality served when the model is replaced at each (at, lo, hi): fitted on rows [lo, hi)."""
    def fit(lo: int, hi: int):  # noqa: ANN202
        return build_pipeline(spec).fit(stream.xs[lo:hi], stream.ys[lo:hi])

    model, pending, out = fit(0, fresh.FIRST), sorted(fits), []
    for start in range(fresh.FIRST, len(stream.ys), chunk):
        while pending and pending[0][0] <= start:
            _, lo, hi = pending.pop(0)
            model = fit(lo, hi)
        out.extend(model.predict(stream.xs[start:start + chunk]).tolist())
    return fresh.quality(stream.task, out, stream.ys[fresh.FIRST:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", default="150,600", help="the two retrainings after each abrupt change")
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()
    delays = [int(d) for d in args.delays.split(",")]
    print("| stream | schedule | oracle | every-250 | oracle vs every-250 | trainings |\n|---|---|---|---|---|---|")
    for name, make in fresh.streams(5000).items():
        stream = make()
        spec = ModelSpec.model_validate(fresh.spec_of(stream))
        _, every = fresh.baselines(stream, args.chunk)
        q_every = fresh.quality(stream.task, every.served, stream.ys[fresh.FIRST:])
        if name.endswith("gradual"):
            schedules = [(f"at {', '.join(map(str, at))} on the newest {window}",
                          [(fresh.FIRST + t, fresh.FIRST + t - window, fresh.FIRST + t) for t in at])
                         for at, window in GRADUAL]
        else:
            schedules = [(f"{' and '.join(map(str, delays))} after each change, on the rows since it",
                          [(fresh.FIRST + c + d, fresh.FIRST + c, fresh.FIRST + c + d)
                           for c in stream.changes for d in delays])]
        for label, fits in schedules:
            q = served(stream, spec, fits, args.chunk)
            gap = (f"{(q - q_every) * 100:+.1f} points" if stream.task == "classification"
                   else f"{(q / q_every - 1) * 100:+.1f}%")
            print(f"| {stream.name} | {label} | {q:.4g} | {q_every:.4g} | {gap} | {1 + len(fits)} / {every.trainings} |")


if __name__ == "__main__":
    main()
