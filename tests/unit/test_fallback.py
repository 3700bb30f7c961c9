"""The fallback core: the prior of a holdout, keyword rules, which kind answers, and the spec's rules."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from refit.core.fallback import KeywordRules, Prior, prior_from_json, without_champion
from refit.specs import ModelSpec, RulesSpec, ServingSpec

RULES = RulesSpec(keywords={"comfort": ["cheesy", "warm", "mac and cheese"], "healthy": ["salad", "light"]},
                  default="calm")


def test_the_prior_of_class_labels_is_their_frequencies_and_answers_the_likeliest() -> None:
    prior = Prior.of("classification", ["a", "b", "b", "c"])
    assert prior is not None and prior.classes == ("a", "b", "c") and prior.probabilities == (0.25, 0.5, 0.25)
    predicted = prior.predict(3)
    assert predicted.labels == ["b", "b", "b"] and predicted.values is None
    assert predicted.probabilities.shape == (3, 3) and np.allclose(predicted.probabilities.sum(axis=1), 1)


def test_the_prior_of_regression_labels_is_their_mean() -> None:
    prior = Prior.of("regression", ["100", "150", "200"])
    assert prior == Prior(mean=150.0, rows=3)
    assert prior.predict(2).values == [150.0, 150.0] and prior.predict(2).labels is None


def test_no_labels_no_prior() -> None:
    assert Prior.of("classification", []) is None and Prior.of("regression", []) is None


@pytest.mark.parametrize("prior", [Prior(("x", "y"), (0.3, 0.7), rows=10), Prior(mean=-2.5, rows=4)])
def test_the_prior_travels_as_the_monitor_answers_it(prior: Prior) -> None:
    body = {"model": "m", "rows": prior.rows, **({"mean": prior.mean} if prior.mean is not None else
                                                 {"classes": dict(zip(prior.classes, prior.probabilities))})}
    assert prior_from_json(body) == prior


@pytest.mark.parametrize(("text", "label"), [
    ("Something WARM please", "comfort"),       # a word, any case
    ("a light salad", "healthy"),
    ("mac and cheese tonight", "comfort"),      # a phrase
    ("warmth", "calm"),                         # a word, not a part of one: the default
    ("cheesy salad", "comfort"),                # the first label in the spec's order wins
    ("", "calm"),
])
def test_keyword_rules_pick_the_first_label_with_a_keyword_in_the_text(text: str, label: str) -> None:
    assert KeywordRules(RULES).label(text) == label


def test_keyword_rules_answer_in_the_models_label_columns() -> None:
    rules = KeywordRules(RULES, ["calm", "comfort", "energy", "healthy"])
    predicted = rules.predict(["warm soup", "salad"])
    assert predicted.labels == ["comfort", "healthy"]
    assert predicted.probabilities.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]
    assert KeywordRules(RULES).classes == ["calm", "comfort", "healthy"]


def test_the_first_kind_that_can_answer_answers() -> None:
    prior = Prior(("a",), (1.0,), rows=1)
    both = ServingSpec(fallback=("previous", "rules", "prior"), rules=RULES)
    assert without_champion(both, text=True, prior=prior) == "rules"
    assert without_champion(both, text=True, prior=None) == "rules"
    assert without_champion(ServingSpec(fallback=("prior", "rules"), rules=RULES), text=True, prior=prior) == "prior"
    assert without_champion(ServingSpec(fallback=("previous", "prior")), text=False, prior=None) is None
    assert without_champion(ServingSpec(), text=False, prior=prior) is None  # the default: previous only


def _spec(**serving: object) -> dict[str, object]:
    return {"name": "mood", "task": "classification", "input": {"kind": "text"}, "labels": ["calm", "comfort", "healthy"],
            "estimator": {"class": "sklearn.linear_model.LogisticRegression"}, "serving": serving}


def test_the_spec_refuses_rules_that_cannot_be_used() -> None:
    assert ModelSpec.model_validate(_spec(fallback=["rules"], rules=RULES.model_dump())).serving.rules == RULES
    with pytest.raises(ValidationError, match="exactly when fallback lists rules"):
        ModelSpec.model_validate(_spec(fallback=["previous"], rules=RULES.model_dump()))
    with pytest.raises(ValidationError, match="exactly when fallback lists rules"):
        ModelSpec.model_validate(_spec(fallback=["rules"]))
    with pytest.raises(ValidationError, match="at most once"):
        ModelSpec.model_validate(_spec(fallback=["prior", "prior"]))
    with pytest.raises(ValidationError, match="labels the model does not have: \\['joy'\\]"):
        ModelSpec.model_validate(_spec(fallback=["rules"], rules={"keywords": {"joy": ["yay"]}, "default": "calm"}))
    numeric = {**_spec(fallback=["rules"], rules=RULES.model_dump()), "input": {"features": ["x"]}}
    with pytest.raises(ValidationError, match="text classification"):
        ModelSpec.model_validate(numeric)
    with pytest.raises(ValidationError, match="non-empty keyword"):
        RulesSpec(keywords={"calm": [" "]}, default="calm")
