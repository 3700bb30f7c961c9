"""NVIDIA Triton for the inference benchmark, through PyTriton (its wheel ships the server binary).

    <pytriton venv>/bin/python bench/peer_pytriton.py --model model.joblib --port 9000

Runs in its own virtual environment (``bench/peer_envs.py``), one worker, the joblib pipeline's
``predict_proba`` called the way the server's own documentation shows, configured for speed (no
per-request logging). Open Inference Protocol: ``POST /v2/models/digits/infer``, one FP32 tensor ``[N, 64]`` named ``input``.
Triton's Python backend stub links the system's ``libpython3.11``, so this environment is built on
the system's Python (``/usr/bin/python3.11``): on another 3.11 the stub fails at start-up.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def serve(port: int, path: str) -> None:
    pipeline: Any = joblib.load(path)

    @batch  # type: ignore[misc]
    def infer(input: np.ndarray) -> dict[str, np.ndarray]:  # noqa: A002 (the tensor's name)
        return {"probabilities": pipeline.predict_proba(input).astype(np.float32)}

    config = TritonConfig(http_address="127.0.0.1", http_port=port, allow_grpc=False, allow_metrics=False,
                          log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name="digits", infer_func=infer,
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(64,))],
                    outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=64))
        triton.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="a joblib-saved scikit-learn pipeline")
    args = parser.parse_args()
    serve(args.port, args.model)


if __name__ == "__main__":
    main()
