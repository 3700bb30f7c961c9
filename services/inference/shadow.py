"""Shadow scoring: the champion's challengers score the served rows off the response path.

A request only offers its input matrix and the champion's answer to a bounded queue, and only
when the model has challengers loaded for the champion that answered; it waits for nothing more.
A background task takes what is queued, runs each challenger once over all of it in a worker
thread (one onnxruntime thread per challenger session), and publishes ``ShadowScored`` events to
``refit.predictions``: the rows' join keys, the champion's outputs and each challenger's. The
monitor pairs them with the labels that arrive by request id (``services/monitor/challengers.py``).

Which versions challenge is ``refit.core.shadow.ShadowPlan``'s, fed every authenticated decision;
:meth:`Shadow.keep_loaded` loads them beside the champion (the previous champion is already loaded
for instant rollbacks), with the same memory headroom and spec checks as a swap.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from refit.core.live import row_keys
from refit.core.shadow import Contender, ShadowPlan
from refit.errors import ArtifactError, ModelLoadError
from refit.events import Decision, ShadowOutputs, ShadowScored
from refit.lifecycle import pause
from refit.onnx_model import OnnxModel, Prediction
from services.inference.querylog import Batches, Record, RecordPublisher, finite_or_none
from services.inference.serving import Champions, Served

log = structlog.get_logger("inference.shadow")

Loaded = tuple[Contender, OnnxModel]
# The champion version the challengers were loaded for, and the challengers.
Ready = tuple[int, tuple[Loaded, ...]]
Shadowed = tuple[Served, str, np.ndarray, Prediction, Ready]
RETRY_S = 60.0  # a challenger that could not load (no memory, a failed fetch) is tried again after this


class Shadow(Batches[Shadowed]):
    """The challengers each model's champion has, loaded; the queue of served rows they score.

    A batch lingers 0.1 s after its first request: under load, the per-batch costs (the worker
    thread's hand-off, one onnxruntime call per challenger, one event, one publish) are paid about
    ten times a second, not once per few requests.

    Over 80 lines: it is two halves of one state, the challengers loaded per model (followed from
    the decisions, loaded with the same checks as a swap, retried after a failed load) and the
    encoding of what they scored; split, each half would reach into the other's dictionary.
    """

    linger_s = 0.1

    def __init__(self, champions: Champions, publisher: RecordPublisher, replica_id: str, capacity: int,
                 batch_size: int) -> None:
        super().__init__(publisher, replica_id, capacity, batch_size)
        self.champions = champions
        self.plans = {name: ShadowPlan() for name in champions.specs.names()}
        self.ready: dict[str, Ready] = {}
        self.changed = asyncio.Event()
        self._failed: dict[str, float] = {}  # digests that could not load, and when: tried again after a minute

    def follow(self, event: Decision) -> None:
        """An authenticated decision (``Champions.apply`` calls this before it swaps)."""
        self.plans[event.model].follow(event.event_type, event.sequence, event.version, event.digest)
        self.changed.set()

    def offer(self, served: Served, request_id: str, batch: np.ndarray, predicted: Prediction) -> None:
        ready = self.ready.get(served.name)
        if ready is not None and ready[0] == served.version:
            self.put((served, request_id, batch, predicted, ready))

    # loading -------------------------------------------------------------------------------
    async def keep_loaded(self, stop: asyncio.Event) -> None:
        """Keep each model's challengers loaded for the champion served: at every decision, and every
        second (a swap happens after the decision that asked for it)."""
        while not stop.is_set():
            self.changed.clear()
            for name, plan in self.plans.items():
                served = self.champions.served.get(name)
                wanted = plan.challengers(served.version) if served is not None else ()
                ready = self.ready.get(name)
                if served is None or not wanted:
                    self.ready.pop(name, None)
                elif ready is None or ready[0] != served.version or tuple(c for c, _ in ready[1]) != wanted:
                    loaded = await asyncio.to_thread(self._load_all, name, wanted, ready)
                    self.ready[name] = (served.version, loaded)
                    if ready is None or ready[0] != served.version or ready[1] != loaded:  # a change, once
                        log.info("shadow scoring", model=name, champion=served.version,
                                 challengers=[c.version for c, _ in loaded])
            await pause(stop, 1.0, self.changed)

    def _load_all(self, name: str, wanted: tuple[Contender, ...], ready: Ready | None) -> tuple[Loaded, ...]:
        have = {c.digest: model for c, model in ready[1]} if ready else {}
        previous = self.champions.previous.get(name)
        if previous is not None:
            have.setdefault(previous.digest, previous.model)
        loaded: list[Loaded] = []
        for contender in wanted:
            model = have.get(contender.digest)
            if model is None and time.monotonic() - self._failed.get(contender.digest, -RETRY_S) >= RETRY_S:
                try:
                    model = self.champions.load(self.champions.specs.get(name), contender.digest, threads=1)
                except (ArtifactError, ModelLoadError) as exc:
                    self._failed[contender.digest] = time.monotonic()
                    log.warning("challenger not loaded: it is not shadow-scored", model=name,
                                version=contender.version, reason=str(exc))
            if model is not None:
                loaded.append((contender, model))
        return tuple(loaded)

    # scoring -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "scoring_cpu_us": self.counts["scoring_cpu_us"], "models": {name: {"champion": champion, "challengers": [
            {"version": c.version, "role": c.role} for c, _ in loaded]} for name, (champion, loaded) in
            self.ready.items()}}

    def encode(self, batch: list[Shadowed]) -> list[Record]:
        """Score the batch with the challengers, one call each per model and champion; one event per group."""
        started = time.thread_time()
        try:
            return self._encode(batch)
        finally:  # the worker thread's CPU time: what scoring and encoding cost, without the noise of the rest
            self.counts["scoring_cpu_us"] += round((time.thread_time() - started) * 1e6)

    def _encode(self, batch: list[Shadowed]) -> list[Record]:
        groups: dict[tuple[str, int], list[list[Shadowed]]] = {}
        rows: dict[tuple[str, int], int] = {}  # rows in each group's last chunk
        for item in batch:  # per model and champion; a new event every batch_size rows
            group = (item[0].name, id(item[4]))
            chunks = groups.setdefault(group, [[]])
            if chunks[-1] and rows[group] + len(item[2]) > self.batch_size:
                chunks.append([])
                rows[group] = 0
            chunks[-1].append(item)
            rows[group] = rows.get(group, 0) + len(item[2])
        records: list[Record] = []
        for items in (chunk for chunks in groups.values() for chunk in chunks):
            try:
                event = self._scored(items)
            except (ValidationError, ModelLoadError, ValueError) as exc:
                self.counts["dropped_invalid"] += len(items)
                log.warning("shadow scoring failed", model=items[0][0].name, error=repr(exc))
                continue
            value = event.to_bytes()
            if self.fits(value):
                records.append((event.topic, event.key(), value, event.headers(self.source)))
        return records

    def _scored(self, items: list[Shadowed]) -> ShadowScored:
        served, ready = items[0][0], items[0][4]
        matrix = items[0][2] if len(items) == 1 else np.concatenate([item[2] for item in items])
        keys = [key for _, request_id, rows, _, _ in items for key in row_keys(request_id, len(rows))]
        classification = served.model.task == "classification"
        champion = [v for item in items for v in (item[3].labels if classification else item[3].values) or []]
        challengers = []
        for contender, model in ready[1]:
            theirs = model.run(matrix)
            challengers.append(ShadowOutputs(
                version=contender.version, digest=contender.digest, role=contender.role, labels=theirs.labels,
                values=finite_or_none(theirs.values)))
        return ShadowScored(model=served.name, replica_id=self.replica_id, version=served.version,
                            digest=served.digest, keys=keys, labels=champion if classification else None,
                            values=None if classification else finite_or_none(champion),  # type: ignore[arg-type]
                            challengers=challengers)
