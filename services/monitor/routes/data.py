"""Data the monitor hands out: the training dataset (from the trainer, which owns it), artifacts and
quarantined sample ids.

Outside local mode both need the read credential (or the control token)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from refit.artifacts import check_digest
from refit.errors import ArtifactError
from refit.openapi import ARTIFACT_RESPONSES, DATASET_RESPONSES
from refit.settings import MonitorSettings
from refit.web import JSONRoute, reads
from services.monitor.routes import ModelName, MonitorDep


def router(settings: MonitorSettings) -> APIRouter:
    # Data needs the read credential outside local mode; the control token, the stronger one, reads too.
    routes = APIRouter(route_class=JSONRoute, dependencies=reads(settings, settings.api_token.get_secret_value()))
    to_trainer = {"authorization": f"Bearer {token}"} if (token := settings.read_token.get_secret_value()) else {}

    async def owner(client: httpx.AsyncClient, model: str) -> str:
        """The trainer that holds the model's dataset: ``trainer``, or of several (``trainer-0`` …) the
        one whose stats list the model among those it owns."""
        trainers = {n: u for n, u in settings.peer_urls.items() if n == "trainer" or n.startswith("trainer-")}
        if not trainers:
            await client.aclose()
            raise HTTPException(503, "no trainer URL configured (REFIT_MONITOR_PEER_URLS)")
        if len(trainers) == 1:
            return next(iter(trainers.values()))
        for url in trainers.values():
            try:
                if model in (await client.get(f"{url.rstrip('/')}/v1/stats")).json().get("models", []):
                    return url
            except (httpx.HTTPError, ValueError):
                continue  # a trainer down or starting: its models are another's soon
        await client.aclose()
        raise HTTPException(503, f"no trainer owns {model!r} right now (the group may be rebalancing); retry")

    @routes.get("/v1/models/{name}/dataset", response_class=Response, responses=DATASET_RESPONSES)
    async def dataset(name: ModelName, format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl"
                      ) -> StreamingResponse:
        """The model's training dataset, streamed from the trainer (which owns it)."""
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=300))
        try:
            trainer = await owner(client, name)
            upstream = await client.send(client.build_request(
                "GET", f"{trainer.rstrip('/')}/v1/models/{name}/dataset", params={"format": format},
                headers=to_trainer), stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            raise HTTPException(502, f"trainer unreachable: {exc!r}") from None
        if upstream.status_code != 200:
            await upstream.aclose()
            await client.aclose()
            raise HTTPException(502, f"trainer answered {upstream.status_code}")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(body(), media_type=upstream.headers.get("content-type"),
                                 headers={"content-disposition": upstream.headers.get("content-disposition", "")})

    @routes.get("/v1/models/{name}/quarantine")
    async def quarantined(name: ModelName, monitor: MonitorDep) -> list[dict[str, str]]:
        """The model's quarantined samples, with the reason and when."""
        return await asyncio.to_thread(monitor.registry.quarantined, name)

    @routes.get("/v1/artifacts/{digest}", response_class=Response, responses=ARTIFACT_RESPONSES)
    async def artifact(digest: str, monitor: MonitorDep) -> Response:
        """The ONNX bytes of an artifact, by SHA-256 digest."""
        try:
            check_digest(digest)
        except ArtifactError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            data = await asyncio.to_thread(monitor.artifacts.get, digest)
        except ArtifactError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(data, media_type="application/onnx", headers={"ETag": f'"{digest}"'})

    return routes
