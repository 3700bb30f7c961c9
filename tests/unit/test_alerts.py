"""The alert rules of the compose monitoring profile: valid, unit-tested with promtool, and reading only
metrics refit exports (issue 17)."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from tests.unit.test_compose import PROMETHEUS_CONFIG, REPO, exported_names

RULES = REPO / "deploy" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "alerts.test.yml"
WANTED = {"RefitServiceDown", "RefitChampionLiveAccuracyFalling", "RefitChampionLiveRmseRising",
          "RefitTrainingFailing", "RefitConsumerLagging"}
# Words of PromQL that look like metric names: functions, aggregations, keywords.
PROMQL_WORDS = {"sum", "max_over_time", "min_over_time", "increase", "rate", "and", "or"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_the_issue_asks_for_is_there_and_unit_tested() -> None:
    assert {rule["alert"] for rule in rules()} == WANTED
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == WANTED


def test_the_rules_read_only_metrics_refit_exports() -> None:
    exported = set(exported_names()) | {"up"}  # `up`: Prometheus records it for every target
    for rule in rules():
        # without label matchers, strings, ranges and grouping labels, what is left are metric names
        expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)', "", rule["expr"])
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} are not exported"


def test_prometheus_loads_the_rules_and_compose_mounts_them() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["services"]["prometheus"]["volumes"]
