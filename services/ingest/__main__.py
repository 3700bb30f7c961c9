"""Run ingest: ``python -m services.ingest`` (configured by ``REFIT_INGEST_*``)."""

from __future__ import annotations

from refit.settings import IngestSettings
from refit.web import run
from services.ingest.app import create_app


def main() -> None:
    run("ingest", IngestSettings(), create_app)


if __name__ == "__main__":
    main()
