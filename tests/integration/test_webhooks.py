"""Webhooks receive a signed JSON body on promotion and rejection; the body verifies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from refit import signing
from refit.datasets import sample_rows
from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.integration
SECRET = "hook-secret"


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((body, self.headers.get("x-refit-signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_promotion_and_rejection_reach_the_webhook_signed(stack_factory, specs_file, receiver) -> None:
    specs = specs_file(only=("digits", "diabetes"), diabetes={"safeguard": {"metrics": [{"name": "r2", "min": 0.99}]}})
    stack = stack_factory(specs, env={"REFIT_MONITOR_WEBHOOK_URLS": json.dumps([receiver]),
                                      "REFIT_MONITOR_WEBHOOK_SECRET": SECRET})
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
        post_rows(client, stack.url("ingest"), "diabetes", sample_rows("diabetes"))
        wait_for_decisions(client, stack.url("monitor"), "digits", 1)
        wait_for_decisions(client, stack.url("monitor"), "diabetes", 1)
    deadline = time.monotonic() + 20
    while len(Receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    notices = {}
    for body, signature in Receiver.received:
        signing.verify(SECRET.encode(), body, signature)  # raises if the body was not signed with our secret
        notice = json.loads(body)
        notices[(notice["kind"], notice["model"])] = notice
    assert ("promoted", "digits") in notices and ("rejected", "diabetes") in notices
    rejected = notices[("rejected", "diabetes")]["payload"]
    assert rejected["event_type"] == "CandidateRejected" and any("r2" in r for r in rejected["reasons"])
