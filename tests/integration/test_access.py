"""Outside local mode, reads of data need the read credential (issue 17, defect 8); quarantined
samples leave the holdout and the training dataset for good (defect 12).

One real stack in production mode on Apache Kafka: every service refuses the development secrets,
ingest takes only a producer key, and inference can serve the champion only because it sends the
read credential for the artifact bytes. Local mode (every other stack test) keeps reads open:
``test_training_and_holdout.py`` exports without a credential. The same stack then quarantines a
holdout and a training sample (one stack for both: the suite's time budget).
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from refit.core.split import is_holdout
from refit.demo import digits_waves, wait_for_decisions
from refit.specs import load_specs
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


def post(producer: httpx.Client, url: str, rows: list[dict[str, object]]) -> list[str]:
    """Post rows as samples of digits; their sample ids."""
    response = producer.post(f"{url}/v1/samples:batch", json={"model": "digits", "samples": rows})
    assert response.status_code == 202, response.text
    return response.json()["sample_ids"]  # type: ignore[no-any-return]


def test_data_reads_need_the_read_credential_and_quarantined_samples_leave_for_good(stack_factory,
                                                                                   specs_file) -> None:
    specs = specs_file(only=("digits",))
    fraction = load_specs(specs).get("digits").training.holdout_fraction
    stack = stack_factory(specs, env=PRODUCTION)
    monitor, trainer, ingest = stack.url("monitor"), stack.url("trainer"), stack.url("ingest")
    rows = digits_waves(3)[0]
    producer = httpx.Client(timeout=30, headers=bearer(PRODUCER))
    ids = post(producer, ingest, rows)
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
        lines = client.get(data["monitor dataset"], headers=bearer(READER)).text.splitlines()
        assert lines and lines == client.get(data["trainer dataset"], headers=bearer(READER)).text.splitlines()

        # The control token is the stronger credential: the monitor takes it for reads; the
        # trainer is never given it. A reader cannot change state.
        assert client.get(data["artifact"], headers=bearer(OPERATOR)).status_code == 200
        assert client.get(data["monitor dataset"], headers=bearer(OPERATOR)).status_code == 200
        assert client.get(data["trainer dataset"], headers=bearer(OPERATOR)).status_code == 401
        retrain = client.post(f"{monitor}/v1/models/digits/retrain", json={}, headers=bearer(READER))
        assert retrain.status_code == 401 and "control token" in retrain.json()["detail"]
        # Status stays open.
        assert client.get(f"{monitor}/v1/models/digits/decisions").status_code == 200

        # Quarantine: one holdout and one training sample, each (its row) sent again afterwards.
        held = next(i for i, sid in enumerate(ids) if is_holdout(sid, fraction, "digits"))
        trained = next(i for i, sid in enumerate(ids) if not is_holdout(sid, fraction, "digits"))
        bad = sorted([ids[held], ids[trained]])

        def exported() -> set[str]:
            lines = client.get(data["trainer dataset"], headers=bearer(READER)).text.splitlines()
            return {json.loads(line)["sample_id"] for line in lines}

        assert ids[trained] in exported()
        holdout_size = client.get(f"{monitor}/v1/models/digits").json()["holdout_size"]
        body = {"sample_ids": bad, "reason": "labels from a broken scanner"}
        url = f"{monitor}/v1/models/digits/quarantine"
        assert client.post(url, json=body, headers=bearer(READER)).status_code == 401
        done = client.post(url, json=body, headers=bearer(OPERATOR))
        assert done.status_code == 200, done.text
        assert (done.json()["quarantined"], done.json()["removed_from_holdout"]) == (2, 1)
        assert client.get(f"{monitor}/v1/models/digits").json()["holdout_size"] == holdout_size - 1
        listed = client.get(url, headers=bearer(READER)).json()
        assert [(q["sample_id"], q["reason"]) for q in listed] == [(i, body["reason"]) for i in bad]
        wait_until("the trainer quarantined them", lambda: client.get(f"{trainer}/v1/stats").json()[
            "quarantined"].get("digits") == 2)
        assert ids[trained] not in exported()

        # Sent again, then fresh rows of both sides behind them (one partition: in order): once the
        # fresh ones are stored, the quarantined copies before them were refused.
        assert post(producer, ingest, [rows[held], rows[trained]]) == [ids[held], ids[trained]]
        fresh = [{**row, "idempotency_key": f"fresh-{row['idempotency_key']}"} for row in rows[:20]]
        fresh_ids = post(producer, ingest, fresh)
        fresh_held = sum(is_holdout(sid, fraction, "digits") for sid in fresh_ids)
        assert 0 < fresh_held < len(fresh_ids)
        wait_until("the fresh training rows stored", lambda: {
            sid for sid in fresh_ids if not is_holdout(sid, fraction, "digits")} <= exported())
        assert not set(bad) & exported()
        wait_until("the fresh holdout rows stored", lambda: client.get(f"{monitor}/v1/models/digits").json()[
            "holdout_size"] >= holdout_size - 1 + fresh_held)
        assert client.get(f"{monitor}/v1/models/digits").json()["holdout_size"] == holdout_size - 1 + fresh_held

        # The next candidate is judged on the holdout without it.
        retrain = client.post(f"{monitor}/v1/models/digits/retrain", json={}, headers=bearer(OPERATOR))
        assert retrain.status_code == 202, retrain.text
        second = wait_for_decisions(client, monitor, "digits", 2, timeout_s=60)[0]
        assert second["holdout"]["size"] == holdout_size - 1 + fresh_held, second["holdout"]
    producer.close()
