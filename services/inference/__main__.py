"""Run an inference replica: ``python -m services.inference`` (configured by ``REFIT_INFERENCE_*``).

With more than one worker this process only supervises ``workers`` copies of itself
(``refit.workers``); each copy serves the port on its own SO_REUSEPORT socket.
"""

from __future__ import annotations

import os
from typing import Any

from refit.settings import InferenceSettings
from refit.web import run
from refit.workers import worker_index


def build(settings: InferenceSettings) -> Any:
    from services.inference.app import create_app

    index = worker_index()  # a worker names itself in logs, stats and its Kafka client id
    return create_app(settings if index is None else
                      settings.model_copy(update={"replica_id": f"{settings.replica_id}-w{index}"}))


def main() -> None:
    settings = InferenceSettings()
    run("inference", settings, build, workers=settings.workers or os.cpu_count() or 1)


if __name__ == "__main__":
    main()
