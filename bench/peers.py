"""The servers refit's inference is measured against, each one process on loopback.

    python bench/peers.py ceiling --port 9000
    python bench/peers.py sklearn --model model.joblib --port 9001

``ceiling`` is FastAPI on refit's own server stack (``refit.server.config``: uvloop, httptools,
responses written in one piece, no access log, one worker) that reads and parses the same JSON body refit
does (orjson) and answers a constant: nothing refit does per request can be cheaper on this
stack than parsing and answering. ``sklearn`` is the hand-written alternative a user would
write: the same stack, the scikit-learn pipeline's ``predict_proba``, and refit's answer shape.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from refit.server import config

CONSTANT = orjson.dumps({"model": "digits", "version": 1, "predictions": [{"label": "0"}]})


def ceiling_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not isinstance(body, dict):
            raise HTTPException(422, "expected a JSON object")
        return Response(CONSTANT, media_type="application/json")

    return app


def sklearn_app(model_path: str) -> FastAPI:
    pipeline: Any = joblib.load(model_path)
    classes = [str(c) for c in pipeline.classes_]
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32)
        probabilities = pipeline.predict_proba(x)
        rows = [{"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist(), strict=True))}
                for p in probabilities]
        return Response(orjson.dumps({"model": "digits", "predictions": rows}), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["ceiling", "sklearn"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", help="a joblib-saved scikit-learn pipeline (sklearn only)")
    args = parser.parse_args()
    app = ceiling_app() if args.kind == "ceiling" else sklearn_app(args.model)
    # Exactly refit's server settings, so the ceiling is refit's own stack.
    uvicorn.Server(config(app, "127.0.0.1", args.port)).run()


if __name__ == "__main__":
    main()
