"""The docs stay true: every setting is documented, and the README opens with the two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refit.settings import IngestSettings, InferenceSettings, MonitorSettings, TrainerSettings

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cls", [IngestSettings, TrainerSettings, MonitorSettings, InferenceSettings])
def test_every_setting_is_in_the_configuration_table(cls) -> None:
    table = (REPO / "docs" / "architecture.md").read_text().split("## Configuration", 1)[1]
    missing = [name for name in cls.model_fields if f"`{name.upper()}`" not in table and
               not re.search(rf"`[^`]*\b{name.upper()}\b[^`]*`", table)]
    assert missing == []


def test_readme_opens_with_the_two_commands_and_ci_calls_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make run", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()
