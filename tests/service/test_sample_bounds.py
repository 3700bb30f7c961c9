"""The bounds of a model spec, enforced where samples enter: ingest answers 422 naming the field, the
trainer hands the sample back as a dead letter with the reason (issue 17, defects 10 and 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from refit import topics
from refit.artifacts import LocalArtifactStore
from refit.events import SampleIngested
from refit.kafka import Incoming, Publisher
from refit.metrics import Metrics
from refit.settings import TrainerSettings
from refit.specs import load_specs
from services.trainer.app import Trainer
from services.trainer.fitter import Fitter
from services.trainer.store import DatasetStore
from tests.conftest import SPECS
from tests.support.training import sample_ids

DIABETES = load_specs(SPECS).get("diabetes")
NAMES = DIABETES.input.features
GOOD = dict.fromkeys(NAMES, 0.01)


@pytest.fixture
def trainer(tmp_path: Path):
    settings = TrainerSettings(specs_path=SPECS, state_dir=tmp_path, artifact_dir=tmp_path / "artifacts")
    store = DatasetStore(tmp_path / "dataset.sqlite")
    fitter = Fitter()
    yield Trainer(settings, load_specs(SPECS), store, LocalArtifactStore(settings.artifact_dir),
                  Publisher(settings, client_id="test"), Metrics("trainer"), fitter)
    fitter.close()
    store.close()


def sample(i: int, features: dict[str, float] | None = None, label: float = 150.0, text: str | None = None):
    record = ConsumerRecord(topics.SAMPLES, 0, i, 0, 0, b"diabetes", b"", None, 8, 0, ())
    return Incoming(record=record, event=SampleIngested(
        model="diabetes", sample_id=f"s{i}", features=GOOD if features is None else features, label=label, text=text))


async def test_the_trainer_dead_letters_a_sample_beyond_the_bounds(trainer) -> None:
    """3e38 is finite as a float32 and was stored; a label of 1e38 too."""
    items = [sample(0), sample(1, dict.fromkeys(NAMES, 3e38)), sample(2, label=1e38), sample(3, text="a text")]
    rejected = await trainer.handle(items)
    assert rejected == {1: "features.age: 3e+38 is outside the model's bounds [-1, 1]",
                        2: "label: 1e+38 is outside the model's bounds [0, 1000]",
                        3: "text: this model takes numeric features"}
    assert sample_ids(trainer.store, "diabetes") == {"s0"}
