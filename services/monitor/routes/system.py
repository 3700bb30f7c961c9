"""The stack as a whole: the periodic report, the peers' health and the dashboard."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from refit.settings import MonitorSettings
from refit.web import JSONRoute
from services.monitor.reports import report
from services.monitor.routes import MonitorDep

DASHBOARD = Path(__file__).parent.parent / "static" / "index.html"


def router(settings: MonitorSettings) -> APIRouter:
    routes = APIRouter(route_class=JSONRoute)

    @routes.get("/v1/reports")
    async def reports(monitor: MonitorDep, days: Annotated[float, Query(gt=0, le=366)] = 7) -> dict[str, Any]:
        """Per model over the last ``days``: retrainings by trigger, decisions, failures, metric trend."""
        return report(monitor.specs.names(), days, datetime.now(UTC), monitor.registry, monitor.triggers.store)

    @routes.get("/v1/health")
    async def health(monitor: MonitorDep) -> dict[str, Any]:
        """Each configured peer service's /healthz, as the dashboard shows it; for an inference replica,
        also the models it answers from a fallback (``serving.fallback``) and which kind."""
        async def probe(name: str, url: str) -> dict[str, Any]:
            try:
                async with httpx.AsyncClient(base_url=url, timeout=2) as client:
                    response = await client.get("/healthz")
                    found = {"ok": response.status_code == 200, "detail": f"HTTP {response.status_code}"}
                    if name.startswith("inference") and found["ok"]:
                        models = (await client.get("/v1/models")).json()
                        found["fallback"] = {m["name"]: m["fallback"] for m in models if m.get("fallback")}
                return found
            except (httpx.HTTPError, ValueError, TypeError, KeyError) as exc:
                return {"ok": False, "detail": repr(exc)}
        names = list(settings.peer_urls)
        results = await asyncio.gather(*(probe(n, settings.peer_urls[n]) for n in names))
        answer: dict[str, Any] = {"services": {"monitor": {"ok": True, "detail": "this service"},
                                               **dict(zip(names, results))}}
        if monitor.mlflow is not None:  # what MLflow has not been told yet (services/monitor/mlflow_sync.py)
            answer["mlflow"] = monitor.mlflow.status()
        return answer

    @routes.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD, media_type="text/html")

    return routes
