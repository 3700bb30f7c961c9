"""Run ingest: ``python -m services.ingest`` (configured by ``REFIT_INGEST_*``).

With more than one worker (``REFIT_INGEST_WORKERS``) this process only supervises that many copies
of itself (``refit.workers``); each copy serves the port on its own SO_REUSEPORT socket with its own
producer: ingest keeps no state, so they share nothing.
"""

from __future__ import annotations

import os

from refit.settings import IngestSettings
from refit.web import run
from services.ingest.app import create_app


def main() -> None:
    settings = IngestSettings()
    run("ingest", settings, create_app, workers=settings.workers or os.cpu_count() or 1)


if __name__ == "__main__":
    main()
