"""Run the trainer: ``python -m services.trainer`` (configured by ``REFIT_TRAINER_*``)."""

from __future__ import annotations

from refit.logs import configure
from refit.settings import TrainerSettings
from refit.web import serve
from services.trainer.app import create_app


def main() -> None:
    settings = TrainerSettings()
    configure("trainer", settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
