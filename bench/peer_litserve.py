"""LitServe for the inference benchmark: a ``LitAPI`` on a ``LitServer``.

    <litserve venv>/bin/python bench/peer_litserve.py --model model.joblib --port 9000

Runs in its own virtual environment (``bench/peer_envs.py``), one worker, the joblib pipeline's
``predict_proba`` called the way the server's own documentation shows, configured for speed (no
per-request logging). Body: ``POST /predict`` with ``{"inputs": [[...], ...]}``, refit's own. The model runs in LitServe's
inference worker process, behind its API server.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import numpy as np
import litserve as ls


class Digits(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def setup(self, device: str) -> None:
        self.pipeline: Any = joblib.load(self.path)

    def decode_request(self, request):  # type: ignore[no-untyped-def] (LitServe reads a typed body as a query)
        return np.asarray(request["inputs"], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(x)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"probabilities": output.tolist()}


def serve(port: int, path: str) -> None:
    server = ls.LitServer(Digits(path), accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False, num_api_servers=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="a joblib-saved scikit-learn pipeline")
    args = parser.parse_args()
    serve(args.port, args.model)


if __name__ == "__main__":
    main()
