"""SIGKILL of the monitor while a decision is pending: every candidate gets exactly one decision,
sequences stay 1..n, and every decision reaches the decisions topic (the outbox republishes).

The moment between scoring and publishing cannot be hit from outside by timing alone, so the
monitor is killed at several delays after each candidate is published, and each kill is
classified afterwards from the monitor's SQLite (not registered / registered / decided but
unpublished / published). The outbox path itself is forced once: the broker is frozen (SIGSTOP)
while a rollback is being published, the monitor is killed with the decision written but not
acknowledged, the broker resumes (SIGCONT), and the restarted monitor publishes it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from refit import topics
from refit.demo import digits_waves, post_rows
from tests.chaos.helpers import (QUIET_TRIGGERS, TOKEN, assert_contiguous, decisions, log_events, monitor_rows,
                                 retrain, served_version, stored_count, topic_values, trainer_stats, wait_until)

pytestmark = pytest.mark.integration

DELAYS_S = (0.0, 0.25, 0.5, 0.75)  # after the trainer published the candidate
JUDGED = ("ModelPromoted", "CandidateRejected")


def phase_of(stack, candidate_id: str) -> str:
    """Where the monitor was with this candidate when it died, from its SQLite."""
    version = monitor_rows(stack, "SELECT version FROM versions WHERE candidate_id = ?", (candidate_id,))
    if not version:
        return "not registered"
    decided = monitor_rows(stack, "SELECT published FROM decisions WHERE version = ? AND event_type IN (?, ?)",
                           (version[0][0], *JUDGED))
    if not decided:
        return "registered, undecided"
    return "decided, published" if decided[0][0] else "decided, unpublished"


def test_sigkill_while_deciding_gives_each_candidate_exactly_one_published_decision(stack_factory,
                                                                                    specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": None},
                                                               "triggers": QUIET_TRIGGERS}))
    rows = [row for wave in digits_waves(3) for row in wave]
    phases: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows)
        wait_until("the trainer stored every row", lambda: stored_count(trainer_stats(client, stack)) == len(rows))

        for n, delay in enumerate(DELAYS_S):
            # The restarted monitor consumes again once it decided what was pending.
            wait_until("the monitor caught up", lambda: len(
                [d for d in decisions(client, stack) if d["event_type"] in JUDGED]) == n, timeout_s=60)
            trained = trainer_stats(client, stack)["trainings"]
            retrain(client, stack, f"chaos: kill the monitor {delay}s after the candidate")
            wait_until("the candidate is published", lambda: trainer_stats(client, stack)["trainings"] > trained,
                       interval_s=0.01)
            time.sleep(delay)
            stack.stop_process("monitor", signal.SIGKILL)
            candidate = log_events(stack, "trainer", "candidate published")[-1]["candidate_id"]
            phases[phase_of(stack, candidate)] += 1
            stack.restart("monitor")
        # Kill it again while it starts up, with the last decision possibly still pending.
        stack.stop_process("monitor", signal.SIGKILL)
        stack.restart("monitor")
        wait_until("every candidate decided", lambda: len(
            [d for d in decisions(client, stack) if d["event_type"] in JUDGED]) == len(DELAYS_S), timeout_s=90)

        # The outbox, forced: a rollback written but not acknowledged when the monitor dies.
        outbox = _rollback_into_a_dead_monitor(client, stack)
        phases["rollback: decided, unpublished (forced)"] += 1
        stack.restart("monitor")
        history = wait_until("the outbox republished", lambda: h if len(h := decisions(client, stack)) == outbox
                             and all(d["published"] for d in h) else None, timeout_s=60)
        versions = client.get(f"{stack.url('monitor')}/v1/models/digits/versions").json()
        champion = client.get(f"{stack.url('monitor')}/v1/models/digits").json()["champion"]["version"]
        wait_until("inference follows", lambda: served_version(client, stack.url("inference-0"),
                                                               rows[0]["features"]) == champion)

    expected_ids = {d["event_id"] for d in history}
    on_topic = Counter(json.loads(v)["event_id"] for v in topic_values(
        stack.bootstrap, topics.DECISIONS, lambda vs: expected_ids <= {json.loads(v)["event_id"] for v in vs}))
    judged = Counter(d["candidate_id"] for d in history if d["event_type"] in JUDGED)
    print(f"monitor kills: {len(DELAYS_S) + 2} ({dict(phases)}, 1 during start-up); candidates "
          f"{len(versions)}, decisions {len(history)} (sequences {history[0]['sequence']}..{history[-1]['sequence']}); "
          f"on the topic {sum(on_topic.values())} records for {len(on_topic)} decisions, "
          f"{sum(n - 1 for n in on_topic.values())} republished twice")
    assert_contiguous(history)
    assert sorted(judged) == sorted(v["candidate_id"] for v in versions)  # every candidate, judged once
    assert set(judged.values()) == {1}
    assert all(v["status"] != "pending" for v in versions)
    assert [d["event_type"] for d in history].count("ModelRolledBack") == 1
    assert all(d["published"] for d in history)
    assert expected_ids <= set(on_topic)  # each decision's event on the topic at least once


def _rollback_into_a_dead_monitor(client: httpx.Client, stack) -> int:
    """Freeze the broker, ask for a rollback, kill the monitor once the decision is written but not
    published, resume the broker. Returns the number of decisions there should now be."""
    before = len(decisions(client, stack))
    broker = stack.procs["broker"]
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(httpx.post(f"{stack.url('monitor')}/v1/models/digits/rollback", headers=TOKEN,
                                      json={"reason": "chaos: outbox"}, timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    broker.send_signal(signal.SIGSTOP)
    try:
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        written = wait_until("the rollback is written", lambda: monitor_rows(
            stack, "SELECT sequence, published FROM decisions WHERE event_type = 'ModelRolledBack'"), interval_s=0.02)
        assert written == [(before + 1, 0)]  # written, not published: the broker cannot acknowledge
        stack.stop_process("monitor", signal.SIGKILL)
    finally:
        broker.send_signal(signal.SIGCONT)
    asking.join(30)
    assert outcome and isinstance(outcome[0], httpx.HTTPError), outcome  # the caller never got an answer
    return before + 1
