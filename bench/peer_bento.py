"""BentoML's service for the inference benchmark: the joblib pipeline's ``predict_proba``, one worker.

    BENCH_MODEL=model.joblib bentoml serve peer_bento:Digits --host 127.0.0.1 --port 9000

Runs in its own virtual environment (``bench/peer_envs.py``); the body is ``{"inputs": [[...], ...]}``.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Digits:
    def __init__(self) -> None:
        self.pipeline = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(inputs.astype(np.float32))
