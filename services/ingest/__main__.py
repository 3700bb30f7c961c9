"""Run ingest: ``python -m services.ingest`` (configured by ``REFIT_INGEST_*``)."""

from __future__ import annotations

from refit.logs import configure
from refit.settings import IngestSettings
from refit.web import serve
from services.ingest.app import create_app


def main() -> None:
    settings = IngestSettings()
    configure("ingest", settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
