"""What each route requires, as ``docs/operations.md`` says: checked against every service's real routes.

The apps are built (not started) outside local mode, where every credential is enforced, and in
local mode, where reads of data are open (issue 17, defect 8).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.routing import Route

from refit.settings import InferenceSettings, IngestSettings, MonitorSettings, TrainerSettings
from refit.web import _api_routes, credentials
from services.inference.app import create_app as inference_app
from services.ingest.app import create_app as ingest_app
from services.monitor.app import create_app as monitor_app
from services.trainer.app import create_app as trainer_app

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
WORDS = {"control": "control token", "read": "read credential", "ingest": "ingest key"}
SECRETS = {"decision_signing_key": "signing", "read_token": "reader"}


def apps(environment: str) -> dict[str, FastAPI]:
    production = environment != "local"
    return {
        "ingest": ingest_app(IngestSettings(environment=environment, api_keys=["producer"] if production else [])),
        "trainer": trainer_app(TrainerSettings(environment=environment, read_token="reader")),
        "monitor": monitor_app(MonitorSettings(environment=environment, api_token="operator", **SECRETS)),
        "inference": inference_app(InferenceSettings(environment=environment, **SECRETS)),
    }


def required(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) → what it requires, for every route of ``app`` (FastAPI's own docs routes too)."""
    found = {(method, route.path): ", ".join(WORDS[c] for c in sorted(credentials(route))) or "open"
             for route in _api_routes(app.routes) for method in route.methods}
    found |= {(method, route.path): "open" for route in app.routes
              if type(route) is Route for method in route.methods if method != "HEAD"}
    return found


def documented() -> dict[str, dict[tuple[str, str], str]]:
    text = OPERATIONS.read_text()
    table = text.split("### What each route requires", 1)[1].split("| service | route |", 1)[1]
    rows: dict[str, dict[tuple[str, str], str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        service, route, needs = (cell.strip() for cell in line.strip("|").split("|"))
        method, paths = re.fullmatch(r"`(\w+) (.+)`", route).groups()  # type: ignore[union-attr]
        for path in paths.split(", "):
            rows.setdefault(service, {})[(method, path)] = needs
    return rows


def test_the_operations_table_lists_every_route_of_every_service_with_what_it_requires() -> None:
    table = documented()
    for service, app in apps("production").items():
        assert table.get(service) == required(app), service


def test_data_routes_need_the_read_credential_outside_local_mode_and_are_open_in_it() -> None:
    data = {("trainer", "/v1/models/{name}/dataset"), ("monitor", "/v1/models/{name}/dataset"),
            ("monitor", "/v1/artifacts/{digest}"), ("monitor", "/v1/models/{name}/quarantine")}
    for environment, expected in (("production", "read credential"), ("local", "open")):
        for service, app in apps(environment).items():
            needs = required(app)
            assert {path for (_, path), what in needs.items() if what == "read credential"} == \
                {path for s, path in data if s == service and expected != "open"}, (environment, service)
            assert all(needs[("GET", path)] == expected for s, path in data if s == service)


def test_the_read_credential_is_required_outside_local_mode_and_differs_from_the_control_token() -> None:
    for settings in (TrainerSettings, InferenceSettings):
        with pytest.raises(ValidationError, match="read_token must be set"):
            settings(environment="production", decision_signing_key="signing")
    with pytest.raises(ValidationError, match="read_token must differ from api_token"):
        MonitorSettings(environment="production", api_token="same", read_token="same",
                        decision_signing_key="signing")
    assert TrainerSettings().reads_open
