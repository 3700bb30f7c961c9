"""KServe's Python model server for the inference benchmark: ``kserve.ModelServer`` with a ``kserve.Model``.

    <kserve venv>/bin/python bench/peer_kserve.py --model model.joblib --port 9000

Runs in its own virtual environment (``bench/peer_envs.py``), one worker, the joblib pipeline's
``predict_proba`` called the way the server's own documentation shows, configured for speed (no
per-request logging). Open Inference Protocol: ``POST /v2/models/digits/infer``, one FP32 tensor ``[N, 64]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import numpy as np
import uuid

import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Digits(Model):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        super().__init__("digits")
        self.pipeline: Any = joblib.load(path)
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        probabilities = self.pipeline.predict_proba(payload.inputs[0].as_numpy()).astype(np.float32)
        output = InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32")
        output.set_data_from_numpy(probabilities, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


class _Loopback(uvicorn.Config):  # type: ignore[misc]
    """KServe 0.21 hard-codes ``host="0.0.0.0"`` (``kserve/protocol/rest/server.py``); servers here bind loopback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})


def serve(port: int, path: str) -> None:
    uvicorn.Config = _Loopback
    ModelServer(http_port=port, grpc_port=0, workers=1, enable_grpc=False, enable_latency_logging=False,
                event_loop="uvloop").start([Digits(path)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="a joblib-saved scikit-learn pipeline")
    args = parser.parse_args()
    serve(args.port, args.model)


if __name__ == "__main__":
    main()
