"""Run an inference replica: ``python -m services.inference`` (configured by ``REFIT_INFERENCE_*``).

With more than one worker this process only supervises ``workers`` copies of itself
(``refit.workers``); each copy serves the port on its own SO_REUSEPORT socket.
"""

from __future__ import annotations

import os

from refit import tracing
from refit.logs import configure
from refit.settings import InferenceSettings
from refit.workers import serve_worker, supervise, worker_index


def main() -> None:
    settings = InferenceSettings()
    configure("inference", settings.log_level, settings.log_json)
    tracing.configure("inference", settings.trace_file)
    workers = settings.workers or os.cpu_count() or 1
    index = worker_index()
    if index is None and workers > 1:
        raise SystemExit(supervise("services.inference", workers))
    from refit.web import serve
    from services.inference.app import create_app

    if index is None:
        serve(create_app(settings), settings)
    else:
        worker = settings.model_copy(update={"replica_id": f"{settings.replica_id}-w{index}"})
        serve_worker(create_app(worker), settings.host, settings.port)


if __name__ == "__main__":
    main()
