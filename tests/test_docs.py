"""The docs stay true: every setting is documented, and the README opens with the two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refit.configdoc import END, START, render
from refit.settings import SERVICES

REPO = Path(__file__).resolve().parent.parent


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    block = doc[doc.index(START):doc.index(END) + len(END)]
    assert block == render(), "regenerate with: .venv/bin/python -m refit.configdoc"


@pytest.mark.parametrize("cls", list(SERVICES.values()))
def test_every_setting_has_a_description(cls) -> None:
    assert [n for n, f in cls.model_fields.items() if not f.description] == []


def test_readme_opens_with_the_two_commands_and_ci_calls_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make run", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_module_map_lists_every_module_and_only_those() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    section = doc.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([\w/]+\.py)`:", section, flags=re.MULTILINE))
    # A package's __init__ is listed when it holds code; each service's __main__ only runs it.
    modules = {str(p.relative_to(REPO)) for root in ("libs/refit", "services") for p in (REPO / root).rglob("*.py")
               if p.name != "__main__.py" and (p.name != "__init__.py" or "\ndef " in p.read_text())}
    assert sorted(modules - listed) == [], "modules missing from the module map in docs/architecture.md"
    assert sorted(listed - modules) == [], "the module map lists modules that do not exist"
