"""The Open Inference Protocol (KServe V2, REST) on the same request path as ``/v1``.

A V2 body is turned into the ``/v1`` body it means (``inputs`` rows of numbers, or ``texts``), so
one parser checks both with the same rules (``services.inference.predict.to_batch``), and one model
call answers both (coalesced with ``/v1`` requests). Only the wire format differs: tensors in, and
tensors out, errors as ``{"error": "..."}``.

Inputs: one tensor of shape ``[N, F]`` (any numeric datatype, the features in the spec's order),
or one tensor per feature, named as the feature, of shape ``[N]`` or ``[N, 1]``; a text model takes
one ``BYTES`` tensor of shape ``[N]`` or ``[N, 1]``. Outputs: ``label`` (``BYTES``, ``[N]``) and
``probabilities`` (``FP32``, ``[N, C]``, the classes in its ``parameters``) for a classifier,
``value`` (``FP64``, ``[N]``) for a regressor; ``outputs`` in the request picks among them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from refit import __version__
from refit.onnx_model import Prediction
from refit.specs import ModelSpec, ModelSpecs

PREFIX, SUFFIX = "/v2/models/", "/infer"
PLATFORM = "onnxruntime_onnx"
NUMERIC = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                     "UINT64"})


def route(path: str) -> tuple[str, str | None] | None:
    """``(model, version or None)`` for ``/v2/models/{m}/infer`` and ``/v2/models/{m}/versions/{v}/infer``."""
    if not path.startswith(PREFIX) or not path.endswith(SUFFIX):
        return None
    parts = path[len(PREFIX):-len(SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


def _bad(msg: str) -> HTTPException:
    return HTTPException(400, msg)


def _flat(data: Any) -> list[Any]:
    """Tensor data as the spec allows it, flat or nested in row-major order, flattened."""
    if not isinstance(data, list):
        raise _bad("'data' must be a list")
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for item in data:
            out.extend(_flat(item) if isinstance(item, list) else [item])
        return out
    return data


def _tensor(tensor: Any, i: int) -> tuple[str, str, list[int], list[Any]]:
    if not isinstance(tensor, dict):
        raise _bad(f"inputs[{i}] must be an object")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise _bad(f"inputs[{i}] needs a 'name' and a 'datatype'")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"input {name!r}: 'shape' must be a non-empty list of non-negative integers")
    data = _flat(tensor.get("data"))
    if len(data) != math.prod(shape):
        raise _bad(f"input {name!r}: shape {shape} holds {math.prod(shape)} values, 'data' has {len(data)}")
    return name, datatype, shape, data


def to_v1(spec: ModelSpec, body: Any) -> dict[str, Any]:
    """The ``/v1`` body a V2 inference request means; a 400 naming what does not fit the model."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise _bad("expected an inference request: an object with a non-empty 'inputs' list")
    if "id" in body and not isinstance(body["id"], str):
        raise _bad("'id' must be a string")
    tensors = [_tensor(t, i) for i, t in enumerate(body["inputs"])]
    if spec.input.kind == "text":
        if len(tensors) != 1:
            raise _bad(f"model {spec.name!r} takes one BYTES input of shape [N]")
        name, datatype, shape, data = tensors[0]
        if datatype != "BYTES" or len(shape) > 2 or len(shape) == 2 and shape[1] != 1:
            raise _bad(f"input {name!r}: model {spec.name!r} takes BYTES of shape [N] or [N, 1], "
                       f"got {datatype} {shape}")
        return {"texts": data}
    features = spec.input.features
    for name, datatype, _, _ in tensors:
        if datatype not in NUMERIC:
            raise _bad(f"input {name!r}: datatype {datatype} is not numeric "
                       f"(one of {', '.join(sorted(NUMERIC))})")
    if len(tensors) == 1:
        name, _, shape, data = tensors[0]
        if len(shape) != 2 or shape[1] != len(features):
            raise _bad(f"input {name!r}: expected shape [N, {len(features)}] (the features in the spec's order), "
                       f"got {shape}")
        width = shape[1]
        return {"inputs": [data[r * width:(r + 1) * width] for r in range(shape[0])]}
    by_name = {name: (shape, data) for name, _, shape, data in tensors}
    if sorted(by_name) != sorted(features) or len(by_name) != len(tensors):
        raise _bad(f"expected one input of shape [N, {len(features)}], or one input per feature named "
                   f"as the feature ({', '.join(features[:4])}, …)")
    rows = {len(data) for _, data in by_name.values()}
    if len(rows) != 1 or any(len(s) > 2 or len(s) == 2 and s[1] != 1 for s, _ in by_name.values()):
        raise _bad("every per-feature input must have the same shape, [N] or [N, 1]")
    return {"inputs": [list(row) for row in zip(*(by_name[f][1] for f in features), strict=True)]}


def requested(body: dict[str, Any], task: str) -> tuple[str, ...]:
    """The output names the request asks for (all when it names none)."""
    known = ("label", "probabilities") if task == "classification" else ("value",)
    asked = body.get("outputs")
    if asked is None:
        return known
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise _bad("'outputs' must be a list of objects with a 'name'")
    names = tuple(o["name"] for o in asked)
    if unknown := [n for n in names if n not in known]:
        raise _bad(f"unknown outputs {unknown}: this model has {list(known)}")
    return names


def encode(name: str, version: int | None, classes: list[str], predicted: Prediction, request_id: str,
           body_id: str | None, outputs: tuple[str, ...], parameters: dict[str, Any]) -> bytes:
    """The inference response: the outputs asked for, each a tensor, and refit's own fields in ``parameters``."""
    tensors = []
    if predicted.labels is not None:
        n = len(predicted.labels)
        if "label" in outputs:
            tensors.append({"name": "label", "datatype": "BYTES", "shape": [n], "data": predicted.labels})
        if "probabilities" in outputs:
            probabilities = predicted.probabilities
            data = probabilities.ravel().tolist() if probabilities is not None else []
            tensors.append({"name": "probabilities", "datatype": "FP32", "shape": [n, len(classes)],
                            "data": [p if math.isfinite(p) else None for p in data],
                            "parameters": {"classes": classes}})
    else:
        values = predicted.values or []
        tensors.append({"name": "value", "datatype": "FP64", "shape": [len(values)],
                        "data": [v if math.isfinite(v) else None for v in values]})
    answer: dict[str, Any] = {"model_name": name, "id": body_id if body_id is not None else request_id,
                              "parameters": {"request_id": request_id, **parameters}, "outputs": tensors}
    if version is not None:
        answer["model_version"] = str(version)
    return orjson.dumps(answer)


def error(exc: HTTPException) -> tuple[int, bytes]:
    """An error as the protocol answers it: ``{"error": "..."}``; a body that does not fit the model is a 400."""
    detail = exc.detail
    if isinstance(detail, list):  # the /v1 parser's 422: [{"loc": ..., "msg": ...}]
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return (400 if exc.status_code == 422 else exc.status_code), orjson.dumps({"error": str(detail)})


def metadata(spec: ModelSpec, version: int | None) -> dict[str, Any]:
    """The model metadata response: its input and output tensors, and the version served (if any)."""
    if spec.input.kind == "text":
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    else:
        inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, len(spec.input.features)]}]
    if spec.task == "classification":
        outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                   {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(spec.labels) if spec.labels else -1]}]
    else:
        outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    return {"name": spec.name, "versions": [str(version)] if version is not None else [], "platform": PLATFORM,
            "inputs": inputs, "outputs": outputs,
            "parameters": {"features": list(spec.input.features), "task": spec.task}}


# --- the protocol's other endpoints: health, server and model metadata, readiness -------------------------------

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": "An error, as the protocol answers it",
                "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses}


def _tensor_schema() -> dict[str, Any]:
    data = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"},
                                                  {"type": "array"}]}}
    return {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"}, "parameters": {"type": "object"}, "data": data}}


INFER_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "description": "An inference request (Open Inference Protocol)",
    "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                   "inputs": {"type": "array", "items": _tensor_schema()},
                   "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                           "properties": {"name": {"type": "string"}}}}}}}}}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An inference response (Open Inference Protocol)", "content": {"application/json": {
        "schema": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object"}, "outputs": {"type": "array", "items": _tensor_schema()}}}}}},
    **_errors(400, 404, 413, 415, 503)}


def router(specs: ModelSpecs, predictions: Any, ready: Callable[[Request], Awaitable[str | None]]) -> APIRouter:
    """The protocol's endpoints besides ``infer``'s fast path (answered in front of FastAPI)."""
    routes = APIRouter(tags=["Open Inference Protocol (V2)"])

    def fail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status)

    def served(request: Request, name: str, version: str | None) -> tuple[ModelSpec | None, Any, str | None]:
        if name not in specs.names():
            return None, None, f"no model named {name!r}"
        current = request.state.champions.served.get(name)
        if version is not None and (current is None or version != str(current.version)):
            return specs.get(name), None, f"version {version} of {name!r} is not served here"
        return specs.get(name), current, None

    @routes.get("/v2", responses=_errors(400))
    async def server_metadata() -> dict[str, Any]:
        """Server metadata: name, version, extensions."""
        return {"name": "refit", "version": __version__, "extensions": []}

    @routes.get("/v2/health/live", responses=_errors(503))
    async def live(request: Request) -> Any:
        """200 while the replica's background work runs (as ``/healthz``)."""
        work = getattr(request.state, "background", None)
        if work is not None and not work.alive:
            return fail(503, "background work died: " + ", ".join(work.dead))
        return {"live": True}

    @routes.get("/v2/health/ready", responses=_errors(503))
    async def server_ready(request: Request) -> Any:
        """200 when the replica is ready (as ``/readyz``)."""
        work = getattr(request.state, "background", None)
        reason = "background work died" if work is not None and not work.alive else await ready(request)
        return fail(503, reason) if reason is not None else {"ready": True}

    async def model_metadata(request: Request, name: str, version: str | None) -> Any:
        spec, current, problem = served(request, name, version)
        if spec is None or problem is not None:
            return fail(404, problem or "")
        return metadata(spec, current.version if current is not None else None)

    async def model_ready(request: Request, name: str, version: str | None) -> Any:
        spec, current, problem = served(request, name, version)
        if spec is None or problem is not None:
            return fail(404, problem or "")
        if current is None:
            return fail(503, f"no champion of {name!r} is served here yet")
        return {"name": name, "ready": True, "version": str(current.version),
                **({"fallback": current.fallback} if current.fallback else {})}

    async def infer(request: Request, name: str, version: str | None) -> Response:
        status, body, headers = await predictions.answer(name, request.scope, request.receive, True, version)
        return Response(body, status, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})

    @routes.get("/v2/models/{name}", responses=_errors(404))
    async def get_model(request: Request, name: str) -> Any:
        """Model metadata: its input and output tensors, and the version served."""
        return await model_metadata(request, name, None)

    @routes.get("/v2/models/{name}/versions/{version}", responses=_errors(404))
    async def get_model_version(request: Request, name: str, version: str) -> Any:
        """Model metadata, if ``version`` is the one served."""
        return await model_metadata(request, name, version)

    @routes.get("/v2/models/{name}/ready", responses=_errors(404, 503))
    async def get_model_ready(request: Request, name: str) -> Any:
        """200 when this replica serves a champion of the model."""
        return await model_ready(request, name, None)

    @routes.get("/v2/models/{name}/versions/{version}/ready", responses=_errors(404, 503))
    async def get_model_version_ready(request: Request, name: str, version: str) -> Any:
        """200 when this replica serves ``version`` of the model."""
        return await model_ready(request, name, version)

    # Answered in front of FastAPI (services/inference/predict.py); declared here for the document.
    @routes.post("/v2/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY}, responses=INFER_RESPONSES)
    async def post_infer(request: Request, name: str) -> Response:
        """Inference with the champion (Open Inference Protocol)."""
        return await infer(request, name, None)

    @routes.post("/v2/models/{name}/versions/{version}/infer", openapi_extra={"requestBody": INFER_BODY},
                 responses=INFER_RESPONSES)
    async def post_infer_version(request: Request, name: str, version: str) -> Response:
        """Inference with ``version``, when it is the one served."""
        return await infer(request, name, version)

    return routes
