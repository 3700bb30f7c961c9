"""The docs stay true: every setting is documented, and the README opens with the two commands."""

from __future__ import annotations

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
