"""The demo workload: scikit-learn's bundled digits, streamed through ingest in waves.

A newcomer watches v1 promoted, v2 judged against it on the same holdout, and
inference answering with whichever version is champion. Then every other configured model of the
shipped specs (breast-cancer, diabetes regression, food-mood text) gets its first champion from its
bundled dataset, and answers a prediction. Then the story of what refit is for: a wave of noisy
labels whose candidate the safeguard rejects (with the failing check), and a change of concept that
a trigger detects, followed by a promotion.

On a state dir that already has digits decisions (a second ``make run``), the story continues from
the champion there: the demo asks it which labelling convention it learned, skips the waves (whose
labels would contradict it), and streams new scans (new keys): noisy labels of that convention, then
the next convention as a new change of concept. The other models show their existing champions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from refit.datasets import sample_rows
from refit.errors import StackError, StackTimeoutError

OTHER_MODELS = ("breast-cancer", "diabetes", "food-mood")


def digits_waves(waves: int = 3, seed: int = 7) -> list[list[dict[str, object]]]:
    """The 1,797 digits as sample rows, shuffled with a fixed seed and cut into ``waves`` parts."""
    rows = [{**row, "source": "demo"} for row in sample_rows("digits", seed)]
    return [list(part) for part in np.array_split(np.array(rows, dtype=object), waves)]


def post_rows(client: httpx.Client, ingest_url: str, model: str, rows: list[dict[str, object]],
              batch: int = 250) -> int:
    for start in range(0, len(rows), batch):
        response = client.post(f"{ingest_url}/v1/samples:batch", json={"model": model,
                                                                        "samples": rows[start:start + batch]})
        response.raise_for_status()
    return len(rows)


def wait_for_decisions(client: httpx.Client, monitor_url: str, model: str, count: int,
                       timeout_s: float = 180.0) -> list[dict[str, object]]:
    """Poll the monitor until the model has at least ``count`` decisions; newest first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        decisions = client.get(f"{monitor_url}/v1/models/{model}/decisions").json()
        if len(decisions) >= count:
            return decisions  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise StackTimeoutError(f"no decision #{count} for {model} within {timeout_s:g} s: see the trainer's and the "
                            f"monitor's logs")


def newest_sequence(client: httpx.Client, monitor_url: str, model: str) -> int:
    """The sequence of the model's newest decision, 0 before the first."""
    newest = client.get(f"{monitor_url}/v1/models/{model}/decisions", params={"limit": 1}).raise_for_status().json()
    return int(newest[0]["sequence"]) if newest else 0


def decisions_after(client: httpx.Client, monitor_url: str, model: str, sequence: int) -> list[dict[str, Any]]:
    """The model's decisions after ``sequence``, oldest first (by sequence: counts stop at the page size)."""
    page = client.get(f"{monitor_url}/v1/models/{model}/decisions", params={"limit": 1000}).json()
    return [d for d in reversed(page) if d["sequence"] > sequence]


def wait_for_decision_after(client: httpx.Client, monitor_url: str, model: str, sequence: int,
                            timeout_s: float) -> dict[str, Any]:
    """The newest decision once there is one after ``sequence``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if new := decisions_after(client, monitor_url, model, sequence):
            return new[-1]
        time.sleep(0.5)
    raise StackTimeoutError(f"no decision for {model} after #{sequence} within {timeout_s:g} s: see the trainer's "
                            f"and the monitor's logs")


def describe(decision: dict[str, object]) -> str:
    scores = decision.get("candidate_scores") or {}
    champion = decision.get("champion_scores") or {}
    parts = [f"{decision['event_type']}: v{decision['version']} "
             f"(holdout {decision['holdout']['size'] if decision.get('holdout') else '-'} rows)"]  # type: ignore[index]
    for metric, value in scores.items():  # type: ignore[union-attr]
        versus = f" vs champion {champion[metric]:.4f}" if metric in champion else ""  # type: ignore[operator]
        parts.append(f"  {metric} {value:.4f}{versus}")
    parts.append(f"  reasons: {'; '.join(decision.get('reasons') or [])}")  # type: ignore[arg-type]
    return "\n".join(parts)


def run(ingest_url: str, monitor_url: str, inference_url: str, model: str = "digits", waves: int = 3,
        say: Callable[[str], None] = print, timeout_s: float = 180.0, story: bool = True) -> None:
    """Stream the waves, the other models' datasets (then, with ``story``, the noisy labels and the change of
    concept) and say what each led to; :class:`StackError` says what went wrong."""
    try:
        with httpx.Client(timeout=30) as client:
            earlier, shift = newest_sequence(client, monitor_url, model), 0
            run = f"run{earlier}-" if earlier else ""
            if earlier:
                champion, shift = current_convention(client, monitor_url, inference_url, model)
                say(f"{model} already has {earlier} decisions in this state dir (an earlier run); its champion "
                    f"v{champion} labels {convention(shift)}. The story continues from there with new scans (keys "
                    f"{run}…), without the waves, whose labels would contradict it")
            else:
                for number, rows in enumerate(digits_waves(waves), start=1):
                    show_wave(client, ingest_url, monitor_url, inference_url, model, number, rows, say, timeout_s)
            show_other_models(client, ingest_url, monitor_url, inference_url, say, timeout_s)
            if story:
                show_noisy_labels(client, ingest_url, monitor_url, model, run, say, timeout_s, shift)
                if earlier:  # live evidence may have moved the champion meanwhile
                    shift = current_convention(client, monitor_url, inference_url, model)[1]
                show_concept_change(client, ingest_url, monitor_url, inference_url, model, run, say, timeout_s,
                                    (shift + 1) % 10)
    except httpx.HTTPError as exc:
        raise StackError(f"the demo could not talk to the stack: {exc!r}") from None


def convention(shift: int) -> str:
    """How a labelling convention that adds ``shift`` to each digit reads."""
    if shift == 0:
        return "every digit as itself"
    return ("every digit as the next one (9 as 0)" if shift == 1 else
            f"every digit as the one {shift} on (9 as {shift - 1})")


def current_convention(client: httpx.Client, monitor_url: str, inference_url: str, model: str,
                       rows: int = 200) -> tuple[int | None, int]:
    """The champion's version and the shift it applies to the digits (0 when none answers): the most common
    difference between its labels and the true ones."""
    champion = (client.get(f"{monitor_url}/v1/models/{model}").raise_for_status().json()["champion"] or {}).get(
        "version")
    probes = sample_rows(model)[:rows]
    response = predict_with(client, inference_url, model, {"instances": [row["features"] for row in probes]},
                            champion)
    if response.status_code != 200:
        return champion, 0
    shifts = [(int(p["label"]) - int(row["label"])) % 10
              for p, row in zip(response.json()["predictions"], probes, strict=True)]
    return champion, int(np.bincount(shifts, minlength=10).argmax())


def show_other_models(client: httpx.Client, ingest_url: str, monitor_url: str, inference_url: str,
                      say: Callable[[str], None], timeout_s: float) -> None:
    """Give each other configured model without a champion its bundled dataset; say the first decision each
    led to (or the champion an earlier run left) and what inference answers for one of its rows."""
    configured = {m["name"]: m for m in client.get(f"{monitor_url}/v1/models").raise_for_status().json()}
    models = [configured[name] for name in OTHER_MODELS if name in configured]
    seen = {}
    for summary in models:
        name, rows = summary["name"], [{**row, "source": "demo"} for row in sample_rows(summary["name"])]
        if summary["champion"] is None:
            seen[name] = newest_sequence(client, monitor_url, name)
            post_rows(client, ingest_url, name, rows, batch=len(rows))  # one batch: one training
            say(f"{name} ({summary['task']}, {summary['input']} input): posted the {len(rows)} labeled rows of "
                f"its bundled dataset")
    for summary in models:
        name = summary["name"]
        if name in seen:
            decision = wait_for_decision_after(client, monitor_url, name, seen[name], timeout_s)
            say(f"{name} {describe(decision)}")
        else:
            decision = {"event_type": "ModelPromoted", "version": summary["champion"]["version"]}
            say(f"{name}: champion v{decision['version']} from an earlier run")
        show_inference(client, inference_url, name, decision, sample_rows(name)[0], say)


def show_wave(client: httpx.Client, ingest_url: str, monitor_url: str, inference_url: str, model: str, number: int,
              rows: list[dict[str, object]], say: Callable[[str], None], timeout_s: float) -> None:
    """Post one wave, say the decision it led to and what inference answers after it."""
    seen = newest_sequence(client, monitor_url, model)
    post_rows(client, ingest_url, model, rows)
    say(f"wave {number}: posted {len(rows)} labeled digits to {ingest_url}/v1/samples:batch")
    decision = wait_for_decision_after(client, monitor_url, model, seen, timeout_s)
    say(describe(decision))
    show_inference(client, inference_url, model, decision, rows[0], say)


def predict_with(client: httpx.Client, inference_url: str, model: str, body: dict[str, Any], version: int | None,
                 timeout_s: float = 30.0) -> httpx.Response:
    """Inference's answer to ``body`` once it answers (with ``version``, unless None), or its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.post(f"{inference_url}/v1/models/{model}/predict", json=body)
        if response.status_code == 200 and version in (None, response.json()["version"]) \
                or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def show_inference(client: httpx.Client, inference_url: str, model: str, decision: dict[str, Any],
                   probe: dict[str, Any], say: Callable[[str], None], label_is: str = "true label") -> None:
    """Say what inference answers for ``probe`` once it serves the decision's version (if a promotion)."""
    body = {"text": probe["text"]} if "text" in probe else {"features": probe["features"]}
    response = predict_with(client, inference_url, model, body,
                            decision["version"] if decision["event_type"] == "ModelPromoted" else None)
    answer = response.json()
    if response.status_code == 200:
        predicted = answer["predictions"][0]
        said = f"label {predicted['label']}" if "label" in predicted else f"value {predicted['value']:.1f}"
        asked = f" for {probe['text']!r}" if "text" in probe else ""
        say(f"  inference answers with v{answer['version']}{asked}: {said} ({label_is} {probe['label']})")
    else:
        say(f"  inference: {response.status_code} {answer}")


def new_scans(run: str, tag: str, rows: int, seed: int) -> list[dict[str, object]]:
    """Digits as if scanned again: three lit pixels of each one step lighter or darker, so each is a new input."""
    rng = np.random.default_rng(seed)
    scans = []
    for i, row in enumerate(sample_rows("digits", seed)[:rows]):
        features = dict(row["features"])
        lit = sorted(k for k, v in features.items() if 0 < v < 16)
        for name in rng.choice(lit, size=min(3, len(lit)), replace=False):
            features[name] += float(rng.choice([-1.0, 1.0]))
        scans.append({"features": features, "label": row["label"], "source": f"demo-{tag}",
                      "idempotency_key": f"{run}{tag}-{i}"})
    return scans


def noisy_labels(run: str = "", rows: int = 500, wrong: float = 0.6, seed: int = 11,
                 shift: int = 0) -> list[dict[str, object]]:
    """New scans from a careless labeller of the convention ``shift``: ``wrong`` of the labels are another
    digit (seeded)."""
    rng = np.random.default_rng(seed)
    scans = new_convention(run, rows, seed, shift, "noisy")
    for scan in scans:
        if rng.random() < wrong:
            scan["label"] = str((int(str(scan["label"])) + int(rng.integers(1, 10))) % 10)
    return scans


def new_convention(run: str = "", rows: int = 1797, seed: int = 13, shift: int = 1,
                   tag: str = "shifted") -> list[dict[str, object]]:
    """New scans labelled by the convention ``shift`` (by default a change of concept: every digit as the next
    one, 9 as 0)."""
    return [{**scan, "label": str((int(str(scan["label"])) + shift) % 10)} for scan in new_scans(run, tag, rows, seed)]


def failing_checks(decision: dict[str, Any]) -> list[str]:
    return [f"{c['kind']} {c['metric']}: {c['detail']}" for c in decision.get("checks") or [] if not c["passed"]]


def show_noisy_labels(client: httpx.Client, ingest_url: str, monitor_url: str, model: str, run: str,
                      say: Callable[[str], None], timeout_s: float, shift: int = 0) -> None:
    """Post a wave with 60% wrong labels: the candidate trained on it is judged, and rejected."""
    rows = noisy_labels(run, shift=shift)
    seen = newest_sequence(client, monitor_url, model)
    post_rows(client, ingest_url, model, rows, batch=len(rows))
    say(f"noisy labels: posted {len(rows)} new scans of digits, 60% of them labelled as another digit")
    decision = wait_for_decision_after(client, monitor_url, model, seen, timeout_s)
    say(describe(decision))
    if decision["event_type"] == "CandidateRejected":
        say("  the safeguard kept the champion; failing checks:")
        for check in failing_checks(decision):
            say(f"    {check}")


def show_concept_change(client: httpx.Client, ingest_url: str, monitor_url: str, inference_url: str, model: str,
                        run: str, say: Callable[[str], None], timeout_s: float, shift: int = 1) -> None:
    """Post digits labelled by a new convention; say the change a trigger detects and the promotion after it."""
    history = client.get(f"{monitor_url}/v1/models/{model}/decisions", params={"limit": 1000}).json()
    champion = next((d["version"] for d in history if d["event_type"] in ("ModelPromoted", "ModelRolledBack")), 0)
    known = client.get(f"{monitor_url}/v1/models/{model}/triggers").json()["changes"]  # newest first
    last_known = known[0]["detected_at"] if known else ""
    rows, sent = new_convention(run, shift=shift), 0
    say(f"concept change: streaming new scans labelled by a new convention ({convention(shift)}), "
        "100 every 0.3 s")
    seen, deadline = newest_sequence(client, monitor_url, model), time.monotonic() + timeout_s
    detected: str | None = None  # when the change was detected
    fired = False
    while time.monotonic() < deadline:
        if sent < len(rows):
            sent += post_rows(client, ingest_url, model, rows[sent:sent + 100])
        triggers = client.get(f"{monitor_url}/v1/models/{model}/triggers").json()
        new = [c for c in triggers["changes"] if c["detected_at"] > last_known]
        if detected is None and new:
            change = new[-1]  # the first detected since the stream began
            detected = change["detected_at"]
            say(f"change detected by {change['detector']} at {detected[11:19]}")
        if detected is not None and not fired:
            # It waits until the safeguard can judge the new concept (min_holdout holdout rows of it).
            after = [f for f in triggers["fired"] if f["kind"] in ("performance", "drift")
                     and f["occurred_at"] >= detected[:19]]
            if after:
                say(f"  trigger {after[0]['kind']} fired: {after[0]['reason']}")
                fired = True
        for decision in decisions_after(client, monitor_url, model, seen):
            seen = decision["sequence"]
            say(describe(decision))
            if decision["event_type"] == "CandidateRejected":
                say("  failing checks: " + "; ".join(failing_checks(decision)))
            if detected is not None and decision["event_type"] == "ModelPromoted" and decision["version"] > champion \
                    and decision["holdout"]:  # judged on the new concept (a challenger may win live before)
                if not fired:  # it fired and its candidate was promoted between two looks: say which one
                    say_trigger_of(client, monitor_url, model, decision["version"], say)
                show_inference(client, inference_url, model, decision, rows[0], say, "the new convention's label")
                return
        time.sleep(0.3)
    raise StackTimeoutError(f"no promotion after a detected change of {model} within {timeout_s:g} s")


def say_trigger_of(client: httpx.Client, monitor_url: str, model: str, version: int,
                   say: Callable[[str], None]) -> None:
    """Say what asked for ``version``: the trigger whose request it answered, or the trainer's own count of
    new samples (``training.min_new_samples``), which trains without the monitor asking and may come first."""
    versions = client.get(f"{monitor_url}/v1/models/{model}/versions").json()
    made = next((v for v in versions if v["version"] == version), None)
    fired = client.get(f"{monitor_url}/v1/models/{model}/triggers").json()["fired"]
    found = next((f for f in fired if made is not None and f["request_id"] == made["retrain_request_id"]), None)
    if found is not None:
        say(f"  trigger {found['kind']} fired: {found['reason']}")
    elif made is not None and made["retrain_request_id"] is None:
        say("  trained by the trainer's own count of new samples (training.min_new_samples), before any "
            "trigger asked")


def two_champions(client: httpx.Client, ingest_url: str, monitor_url: str, replica_urls: list[str], token: str,
                  timeout_s: float = 90.0) -> tuple[int, int, dict[str, object]]:
    """Two promoted digits versions, the second serving on every replica: (first, second, a probe row)."""
    versions, row = champions(client, ingest_url, monitor_url, replica_urls, token, 2, timeout_s)
    return versions[0], versions[1], row


def champions(client: httpx.Client, ingest_url: str, monitor_url: str, replica_urls: list[str], token: str,
              count: int, timeout_s: float = 90.0) -> tuple[list[int], dict[str, object]]:
    """``count`` (up to 3) promoted digits versions, the last serving on every replica; and a probe row.

    The first wave is always promoted; a later wave's candidate may be rejected, in which case
    retraining on the same data gives a candidate that matches the champion and passes.
    """
    waves = digits_waves(3)
    post_rows(client, ingest_url, "digits", waves[0])
    first = wait_for_decisions(client, monitor_url, "digits", 1, timeout_s)[0]
    if first["event_type"] != "ModelPromoted":
        raise RuntimeError(f"the first digits model was not promoted: {first['reasons']}")
    versions = [int(first["version"])]  # type: ignore[call-overload]
    for wave in waves[1:count]:
        seen = len(client.get(f"{monitor_url}/v1/models/digits/decisions").json())
        post_rows(client, ingest_url, "digits", wave)
        history = wait_for_decisions(client, monitor_url, "digits", seen + 1, timeout_s)
        while history[0]["event_type"] != "ModelPromoted":
            response = client.post(f"{monitor_url}/v1/models/digits/retrain", json={"reason": "another champion"},
                                   headers={"authorization": f"Bearer {token}"})
            response.raise_for_status()
            history = wait_for_decisions(client, monitor_url, "digits", len(history) + 1, timeout_s)
        versions.append(int(history[0]["version"]))  # type: ignore[call-overload]
    row = waves[0][0]["features"]
    deadline = time.monotonic() + timeout_s
    for url in replica_urls:
        while client.post(f"{url}/v1/models/digits/predict", json={"features": row}).json().get("version") \
                != versions[-1]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not serve v{versions[-1]} within {timeout_s}s")
            time.sleep(0.05)
    return versions, row  # type: ignore[return-value]
