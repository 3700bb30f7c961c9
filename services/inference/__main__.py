"""Run an inference replica: ``python -m services.inference`` (configured by ``REFIT_INFERENCE_*``)."""

from __future__ import annotations

from refit.logs import configure
from refit.settings import InferenceSettings
from refit.web import serve
from services.inference.app import create_app


def main() -> None:
    settings = InferenceSettings()
    configure("inference", settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
