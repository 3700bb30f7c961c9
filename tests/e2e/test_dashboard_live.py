"""The dashboard in headless Chromium shows live evidence: the decision a live test made (with its pairs and
evidence), the concept changes detected, and the champion's challengers with their confidence."""

from __future__ import annotations

import time

import httpx
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from refit.demo import post_rows, wait_for_decisions
from tests.e2e.test_dashboard import ARTIFACTS, COLLECT_ERRORS, browser
from tests.e2e.test_live_evidence import ROWS, TOKEN, concept, spec_file

pytestmark = pytest.mark.e2e

READ = """
const card = document.querySelector('section.model[data-model="flip"]');
if (!card) return null;
return {decisions: [...card.querySelectorAll("table.decisions details summary")].map((s) => s.textContent),
        challengers: [...card.querySelectorAll("li.challenger")].map((li) => li.textContent.replace(/\\s+/g, " ")),
        changes: [...card.querySelectorAll("li.change")].map((li) => li.textContent.replace(/\\s+/g, " ")),
        errors: window.__errors || []};
"""


def test_the_dashboard_shows_the_live_decision_the_changes_and_the_challengers(stack_factory, tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path, current_concept=False, holdout_rows=1000, window_rows=120))
    ingest, monitor = stack.url("ingest"), stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        post_rows(client, ingest, "flip", concept("a", flip=False))
        client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v1"}, headers=TOKEN)
        wait_for_decisions(client, monitor, "flip", 1)
        post_rows(client, ingest, "flip", concept("b1", flip=True, rows=ROWS[:150]))
        client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v2"}, headers=TOKEN)
        wait_for_decisions(client, monitor, "flip", 2)
        live, sent = concept("b2", flip=True), 0
        deadline = time.monotonic() + 60
        while len(client.get(f"{monitor}/v1/models/flip/decisions").json()) < 3 and time.monotonic() < deadline:
            post_rows(client, ingest, "flip", live[sent:sent + 20])
            sent += 20
            time.sleep(0.2)
        # A third version: whether it is promoted or not, the champion has a challenger again.
        client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v3"}, headers=TOKEN)
        wait_for_decisions(client, monitor, "flip", 4)
        post_rows(client, ingest, "flip", live[sent:sent + 60])
        deadline = time.monotonic() + 30
        while not client.get(f"{monitor}/v1/models/flip/triggers").json()["challengers"] \
                and time.monotonic() < deadline:
            time.sleep(0.2)

    driver = browser(tmp_path)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECT_ERRORS})
        driver.get(monitor + "/")
        state = WebDriverWait(driver, 30).until(lambda d: (s := d.execute_script(READ)) and s["challengers"] and s)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-live.png"))
    finally:
        driver.quit()

    assert any("live: v2 better on" in d and "paired labels" in d for d in state["decisions"]), state["decisions"]
    assert state["changes"] and "detected" in state["changes"][0], state["changes"]
    assert "paired labels" in state["challengers"][0] and "confidence better" in state["challengers"][0], state
    assert state["errors"] == []
