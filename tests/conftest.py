"""Fixtures that start real things (the embedded broker, the services as processes) and stop them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from refit.stack import Stack

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "config" / "models.yaml"


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


@pytest.fixture
def stack_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    """Start a whole local stack (real processes); every one is stopped at teardown, logs kept on failure."""
    started: list[Stack] = []

    def make(specs_path: Path = SPECS, replicas: int = 1, env: dict[str, str] | None = None) -> Stack:
        stack = Stack(state_dir=tmp_path / f"stack{len(started)}", specs_path=specs_path,
                      inference_replicas=replicas, env=dict(env or {}))
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
