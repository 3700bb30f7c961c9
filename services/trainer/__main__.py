"""Run the trainer: ``python -m services.trainer`` (configured by ``REFIT_TRAINER_*``)."""

from __future__ import annotations

from refit.settings import TrainerSettings
from refit.web import run
from services.trainer.app import create_app


def main() -> None:
    run("trainer", TrainerSettings(), create_app)


if __name__ == "__main__":
    main()
