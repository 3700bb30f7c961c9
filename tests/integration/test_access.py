"""Outside local mode, reads of data need the read credential (issue 17, defect 8).

One real stack in production mode on Apache Kafka: every service refuses the development secrets,
ingest takes only a producer key, and inference can serve the champion only because it sends the
read credential for the artifact bytes. Local mode (every other stack test) keeps reads open:
``test_training_and_holdout.py`` exports without a credential.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions
from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.integration

PRODUCER, OPERATOR, READER = "producer-key", "operator-token", "reader-token"
PRODUCTION = {
    **{f"REFIT_{service}_ENVIRONMENT": "production" for service in ("INGEST", "TRAINER", "MONITOR", "INFERENCE")},
    **{f"REFIT_{service}_READ_TOKEN": READER for service in ("TRAINER", "MONITOR", "INFERENCE")},
    "REFIT_INGEST_API_KEYS": f'["{PRODUCER}"]', "REFIT_MONITOR_API_TOKEN": OPERATOR,
}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_data_reads_need_the_read_credential_outside_local_mode(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)), env=PRODUCTION)
    monitor, trainer = stack.url("monitor"), stack.url("trainer")
    with httpx.Client(timeout=30, headers=bearer(PRODUCER)) as producer:
        post_rows(producer, stack.url("ingest"), "digits", digits_waves(3)[0])
    with httpx.Client(timeout=30) as client:
        champion = wait_for_decisions(client, monitor, "digits", 1)[0]
        assert champion["event_type"] == "ModelPromoted", champion["reasons"]
        # Inference fetched the artifact with the read credential: it serves the champion.
        wait_until("inference serves digits", lambda: client.get(
            f"{stack.url('inference-0')}/v1/models/digits/ready").status_code == 200)

        data = {"trainer dataset": f"{trainer}/v1/models/digits/dataset",
                "monitor dataset": f"{monitor}/v1/models/digits/dataset",
                "artifact": f"{monitor}/v1/artifacts/{champion['digest']}"}
        for what, url in data.items():
            for headers in ({}, bearer(PRODUCER), {"authorization": READER}):
                refused = client.get(url, headers=headers)
                assert refused.status_code == 401, (what, headers, refused.status_code)
                assert "read credential" in refused.json()["detail"]
                assert refused.headers["www-authenticate"] == "Bearer"
            read = client.get(url, headers=bearer(READER))
            assert read.status_code == 200, (what, read.text[:200])
        assert hashlib.sha256(client.get(data["artifact"], headers=bearer(READER)).content).hexdigest() \
            == champion["digest"]
        rows = client.get(data["monitor dataset"], headers=bearer(READER)).text.splitlines()
        assert rows and rows == client.get(data["trainer dataset"], headers=bearer(READER)).text.splitlines()

        # The control token is the stronger credential: the monitor takes it for reads; the
        # trainer is never given it. A reader cannot change state.
        assert client.get(data["artifact"], headers=bearer(OPERATOR)).status_code == 200
        assert client.get(data["monitor dataset"], headers=bearer(OPERATOR)).status_code == 200
        assert client.get(data["trainer dataset"], headers=bearer(OPERATOR)).status_code == 401
        retrain = client.post(f"{monitor}/v1/models/digits/retrain", json={}, headers=bearer(READER))
        assert retrain.status_code == 401 and "control token" in retrain.json()["detail"]
        # Status stays open.
        assert client.get(f"{monitor}/v1/models/digits/decisions").status_code == 200
