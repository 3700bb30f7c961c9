"""The monitor's HTTP routes, one router per resource, and the dependencies they share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from refit.errors import UnknownModelError
from refit.web import answers
from services.monitor.parts import Monitor


def get_monitor(request: Request) -> Monitor:
    return request.state.monitor  # type: ignore[no-any-return]


MonitorDep = Annotated[Monitor, Depends(get_monitor)]


@answers(404)
def known_model(name: str, monitor: MonitorDep) -> str:
    try:
        monitor.specs.get(name)
    except UnknownModelError as exc:
        raise HTTPException(404, str(exc)) from None
    return name


ModelName = Annotated[str, Depends(known_model)]
