"""Fixtures that start real things (a broker, the services as processes) and stop them.

Every test that starts a broker runs on Apache Kafka (a fresh single node per stack, from the jars
``make kafka`` fetched). ``@pytest.mark.brokers("kafka", "embedded")`` runs a test once per
broker named; ``@pytest.mark.brokers("embedded")`` only on the embedded broker. The broker is the
``broker`` fixture, which ``stack_factory`` uses.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
import yaml

from refit.stack import Stack

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "config" / "models.yaml"
BrokerKind = Literal["kafka", "embedded"]


@pytest.fixture
def specs_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file with the repo's models, optionally overriding fields per model."""

    def make(only: tuple[str, ...] | None = None, **overrides: dict[str, object]) -> Path:
        data = yaml.safe_load(SPECS.read_text())
        models = [m for m in data["models"] if only is None or m["name"] in only]
        for model in models:
            for section, values in overrides.get(model["name"], {}).items():
                if isinstance(values, dict):
                    model.setdefault(section, {}).update(values)
                else:
                    model[section] = values
        path = tmp_path / "models.yaml"
        path.write_text(yaml.safe_dump({"models": models}))
        return path

    return make


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None and "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", marker.args, indirect=True)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> BrokerKind:
    """The broker this test runs on: Apache Kafka unless the test's ``brokers`` marker says otherwise."""
    return getattr(request, "param", "kafka")  # type: ignore[no-any-return]


@pytest.fixture
def stack_factory(tmp_path: Path, request: pytest.FixtureRequest,
                  broker: BrokerKind) -> Iterator[Callable[..., Stack]]:
    """Start a whole local stack (real processes); every one is stopped at teardown, logs kept on failure."""
    started: list[Stack] = []

    def make(specs_path: Path = SPECS, replicas: int = 1, env: dict[str, str] | None = None,
             kafka_nodes: int = 1, trainers: int = 1) -> Stack:
        stack = Stack(state_dir=tmp_path / f"stack{len(started)}", specs_path=specs_path,
                      inference_replicas=replicas, env=dict(env or {}), broker=broker, kafka_nodes=kafka_nodes,
                      trainers=trainers)
        started.append(stack)
        return stack.start()

    yield make
    for stack in started:
        stack.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            target = REPO / "test-artifacts" / request.node.name
            shutil.copytree(stack.state_dir / "logs", target, dirs_exist_ok=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
