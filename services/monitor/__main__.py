"""Run the monitor: ``python -m services.monitor`` (configured by ``REFIT_MONITOR_*``)."""

from __future__ import annotations

from refit.logs import configure
from refit.settings import MonitorSettings
from refit.web import serve
from services.monitor.app import create_app


def main() -> None:
    settings = MonitorSettings()
    configure("monitor", settings.log_level, settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
