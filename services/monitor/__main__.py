"""Run the monitor: ``python -m services.monitor`` (configured by ``REFIT_MONITOR_*``)."""

from __future__ import annotations

from refit.settings import MonitorSettings
from refit.web import run
from services.monitor.app import create_app


def main() -> None:
    run("monitor", MonitorSettings(), create_app)


if __name__ == "__main__":
    main()
