"""The Open Inference Protocol (V2) on a running stack, driven by a third-party client
(``tritonclient[http]``), every answer checked against the protocol's published schema
(tests/contracts/rest_predict_v2.yaml)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from refit.datasets import sample_rows
from refit.demo import post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e

PUBLISHED = yaml.safe_load((Path(__file__).parents[1] / "contracts" / "rest_predict_v2.yaml").read_text())


def conforms(body: object, schema: str) -> None:
    """``body`` is a valid ``schema`` of the published document (its ``$ref``s resolved within it)."""
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{schema}", "components": PUBLISHED["components"]})


MODELS = ("digits", "diabetes", "food-mood")




def test_tritonclient_infers_on_every_model_type_and_every_answer_is_the_protocol(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=MODELS))
    inference = stack.url("inference-0")
    data = {m: sample_rows(m) for m in MODELS}
    with httpx.Client(timeout=30) as http:
        for model in MODELS:
            post_rows(http, stack.url("ingest"), model, data[model][:400])
        versions = {m: wait_for_decisions(http, stack.url("monitor"), m, 1)[0]["version"] for m in MODELS}
        deadline = time.monotonic() + 60
        while not all(http.get(f"{inference}/v1/models/{m}/ready").status_code == 200 for m in MODELS):
            assert time.monotonic() < deadline, "not every model served within 60 s"
            time.sleep(0.2)

        client = triton.InferenceServerClient(url=inference.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        conforms(http.get(f"{inference}/v2").json(), "metadata_server_response")

        # digits: one [N, 64] FP32 tensor, both outputs
        rows = np.array([[r["features"][f"p{i}"] for i in range(64)] for r in data["digits"][:5]], dtype=np.float32)
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
        result = client.infer("digits", [tensor], outputs=outputs, request_id="r-digits")
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        v1 = http.post(f"{inference}/v1/models/digits/predict", json={"inputs": rows.tolist()}).json()
        assert labels == [p["label"] for p in v1["predictions"]]  # one model, two protocols, the same answer
        assert result.as_numpy("probabilities").shape == (5, 10)
        answer = result.get_response()
        conforms(answer, "inference_response")
        assert answer["id"] == "r-digits" and answer["model_version"] == str(versions["digits"])
        assert answer["parameters"]["request_id"]  # the id a feedback label joins on

        # diabetes: FP64 in, FP64 value out, and a named version
        x = np.array([[r["features"][f] for f in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")]
                      for r in data["diabetes"][:3]])
        tensor = triton.InferInput("input", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x, binary_data=False)
        result = client.infer("diabetes", [tensor], model_version=str(versions["diabetes"]))
        assert result.as_numpy("value").shape == (3,) and np.isfinite(result.as_numpy("value")).all()
        conforms(result.get_response(), "inference_response")

        # food-mood: BYTES
        texts = np.array([r["text"].encode() for r in data["food-mood"][:4]], dtype=np.object_)
        tensor = triton.InferInput("text", [4], "BYTES")
        tensor.set_data_from_numpy(texts, binary_data=False)
        result = client.infer("food-mood", [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=False)])
        assert len(result.as_numpy("label")) == 4 and result.as_numpy("probabilities") is None
        conforms(result.get_response(), "inference_response")

        for model in MODELS:
            metadata = client.get_model_metadata(model)
            conforms(metadata, "metadata_model_response")
            assert metadata["versions"] == [str(versions[model])] and client.is_model_ready(model)
            assert client.is_model_ready(model, str(versions[model]))
        assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

        # errors: {"error": ...} with the protocol's statuses, each conforming to its schema
        wrong = triton.InferInput("input", [1, 3], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
        with pytest.raises(InferenceServerException, match=r"expected shape \[N, 64\]") as caught:
            client.infer("digits", [wrong])
        assert caught.value.status() == "400"
        with pytest.raises(InferenceServerException, match="not served here"):
            client.infer("digits", [tensor], model_version="999")
        assert not client.is_model_ready("digits", "999")
        for path, body, status in [
            ("/v2/models/digits/infer", {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                                     "data": [1.0] * 63}]}, 400),
            ("/v2/models/digits/infer", {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "BOOL",
                                                     "data": [True] * 64}]}, 400),
            ("/v2/models/digits/infer", {"inputs": []}, 400),
            ("/v2/models/nope/infer", {"inputs": []}, 404),
            ("/v2/models/digits/versions/999/infer", {"inputs": []}, 404),
        ]:
            response = http.post(f"{inference}{path}", json=body)
            assert response.status_code == status, (path, response.text)
            conforms(response.json(), "inference_error_response")
            assert response.json()["error"]
        conforms(http.get(f"{inference}/v2/models/nope").json(), "metadata_model_error_response")
