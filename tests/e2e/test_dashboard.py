"""The dashboard in headless Chromium over a real stack: a promotion and a rejection show up by themselves.

The page is loaded before any decision exists; it must refresh on its own until it shows two
models, digits promoted, diabetes rejected by its gate (twice: once more on an operator's retrain
trigger), a chart, the filter statistics, the schedule's next run and every service up. The full-page screenshot is kept as
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from refit.datasets import sample_rows
from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = {"authorization": "Bearer refit-local-token"}
SCHEDULE = {"name": "weekly", "cron": {"day_of_week": "sun", "hour": 3, "minute": 0},
            "timezone": "Europe/Berlin"}
WAIT_S = 90
RETRAIN_REASON = "operator: retry with the same data"

# Collects uncaught errors and rejected promises in case the driver cannot read the console log.
COLLECT_ERRORS = """
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push("unhandled: " + String(e.reason)));
"""


def require_browser() -> None:
    """No skip: `make test` installs Chromium (`make browser`), so a missing one is a broken setup."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the dashboard test needs Debian's chromium and chromium-driver; missing {missing}: "
                    "run `make browser` (apt-get install chromium chromium-driver)", pytrace=False)


def browser(tmp_path: Path) -> webdriver.Chrome:
    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,2200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def dashboard_state(driver: webdriver.Chrome) -> dict[str, object]:
    """Everything the test asserts, read from the DOM in one script (no stale elements between reads)."""
    return driver.execute_script("""
        const q = (root, sel) => Array.from(root.querySelectorAll(sel));
        const models = {};
        for (const s of q(document, "section.model[data-model]")) {
          models[s.dataset.model] = {
            decisions: q(s, "tr.decision[data-type]").map((r) => r.dataset.type),
            champion: (s.querySelector(".champion") || {}).textContent || "",
            charts: q(s, "svg.chart circle").length,
            filters: (s.querySelector(".filters") || {}).textContent || "",
            schedules: q(s, "li.schedule").map((li) => li.textContent),
            fired: q(s, "tr.fired").map((tr) => tr.textContent),
            failed_checks: q(s, "tr.checks td.fail").length,
            passed_checks: q(s, "tr.checks td.pass").length,
          };
        }
        return {
          models: models,
          health: Object.fromEntries(q(document, "#health .badge[data-service]").map(
            (b) => [b.dataset.service, b.classList.contains("up")])),
          refreshed: document.body.dataset.refreshed || null,
          errors: window.__errors || [],
        };
    """)


def ready(state: dict[str, object]) -> bool:
    models = state["models"]
    digits, diabetes = models.get("digits"), models.get("diabetes")  # type: ignore[union-attr]
    return bool(
        digits and diabetes
        and "ModelPromoted" in digits["decisions"] and "CandidateRejected" in diabetes["decisions"]
        and diabetes["decisions"].count("CandidateRejected") >= 2 and diabetes["fired"]
        and digits["schedules"] and digits["charts"] and diabetes["charts"]
        and state["health"] and all(state["health"].values()))  # type: ignore[union-attr]


def refreshed_again(since: object, times: int) -> Callable[[webdriver.Chrome], bool]:
    """True once the page finished ``times`` more refresh rounds after the one marked ``since``."""
    seen = {since}

    def check(driver: webdriver.Chrome) -> bool:
        seen.add(driver.execute_script("return document.body.dataset.refreshed || null;"))
        return len(seen) > times

    return check


def full_page_png(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page, beyond the window, through the DevTools protocol."""
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.body.scrollHeight];")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def test_dashboard_shows_models_promotion_rejection_schedule_and_health(stack_factory, specs_file,
                                                                         tmp_path: Path) -> None:
    require_browser()
    # diabetes' gate asks for an R² no ridge regression reaches: its first candidate is rejected.
    stack = stack_factory(specs_file(only=("digits", "diabetes"),
                                     diabetes={"safeguard": {"metrics": [{"name": "r2", "min": 0.99}]}}))
    monitor = stack.url("monitor")
    driver = browser(tmp_path)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECT_ERRORS})
        with httpx.Client(timeout=30) as client:
            config = client.get(f"{monitor}/v1/models/digits/config")
            assert config.status_code == 200, config.text
            triggers = {**config.json()["triggers"], "schedules": [SCHEDULE]}
            put = client.put(f"{monitor}/v1/models/digits/config", json=triggers, headers=TOKEN)
            assert put.status_code == 200, put.text

            driver.get(f"{monitor}/")  # before any decision: the page has to catch up by itself
            started = time.monotonic()
            WebDriverWait(driver, 30, poll_frequency=0.2).until(
                lambda d: {"digits", "diabetes"} <= set(dashboard_state(d)["models"]))
            first = dashboard_state(driver)
            assert all(m["decisions"] == [] for m in first["models"].values()), first
            driver.execute_script("window.__sameDocument = true;")  # a reload or navigation would drop it

            post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
            post_rows(client, stack.url("ingest"), "diabetes", sample_rows("diabetes"))
            # A trigger that fires, with its reason: an operator asks diabetes to retrain once it was judged
            # (the same data against the same gate: rejected again).
            wait_for_decisions(client, monitor, "diabetes", 1, timeout_s=WAIT_S)
            retrain = client.post(f"{monitor}/v1/models/diabetes/retrain", headers=TOKEN,
                                  json={"reason": RETRAIN_REASON})
            assert retrain.status_code == 202, retrain.text

            state: dict[str, object] = {}

            def caught_up(d: webdriver.Chrome) -> bool:
                state.update(dashboard_state(d))
                return ready(state)

            try:
                WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(caught_up)
            except TimeoutException:
                full_page_png(driver, ARTIFACTS / "dashboard.png")
                raise AssertionError(
                    f"the dashboard did not catch up within {WAIT_S}s; last state: {state}") from None
            caught_up_after = time.monotonic() - started
            # Two more refreshes: the second one started after everything was there, so the screenshot
            # shows one consistent round.
            WebDriverWait(driver, 15, poll_frequency=0.2).until(refreshed_again(state["refreshed"], times=2))
            state = dashboard_state(driver)
            assert driver.execute_script("return window.__sameDocument === true;"), "the page was reloaded"
            full_page_png(driver, ARTIFACTS / "dashboard.png")

            decisions = {m: client.get(f"{monitor}/v1/models/{m}/decisions").json()
                         for m in ("digits", "diabetes")}
        console = driver.get_log("browser")
    finally:
        driver.quit()
    print(f"dashboard caught up {caught_up_after:.1f}s after the page was opened")

    models = state["models"]
    assert len(models) >= 2, models
    digits, diabetes = models["digits"], models["diabetes"]
    assert digits["decisions"] == [d["event_type"] for d in decisions["digits"]][:len(digits["decisions"])]
    assert "ModelPromoted" in digits["decisions"]
    assert "CandidateRejected" in diabetes["decisions"]
    assert "ModelPromoted" not in diabetes["decisions"]
    assert any("manual" in row and RETRAIN_REASON in row for row in diabetes["fired"]), diabetes["fired"]
    champion = next(d["version"] for d in decisions["digits"] if d["event_type"] == "ModelPromoted")
    assert f"champion v{champion}" in " ".join(digits["champion"].split()), digits["champion"]
    assert "no champion" in diabetes["champion"], diabetes["champion"]
    assert diabetes["failed_checks"] >= 1, "the failing r2 gate is shown as FAIL"
    assert digits["passed_checks"] >= 2 and digits["failed_checks"] == 0, digits
    assert digits["charts"] >= 1 and diabetes["charts"] >= 1
    for model in (digits, diabetes):
        assert "kept after filters" in model["filters"], model["filters"]
        assert "dropped by filters" in model["filters"], model["filters"]
    assert len(digits["schedules"]) == 1 and "weekly" in digits["schedules"][0], digits["schedules"]
    assert "next" in digits["schedules"][0] and "—" not in digits["schedules"][0], digits["schedules"]
    assert state["health"] == {"monitor": True, "ingest": True, "trainer": True, "inference-0": True}, state
    assert int(state["refreshed"]) > int(first["refreshed"]), "the page refreshed by itself"

    assert state["errors"] == [], state["errors"]
    severe = [entry for entry in console if entry["level"] == "SEVERE"]
    assert severe == [], severe
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
