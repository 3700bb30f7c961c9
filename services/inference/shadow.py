"""Shadow scoring: the champion's challengers score the served rows off the response path.

A request only appends its join keys, input matrix and the champion's answer to the columns of
what waits (bounded), and only when the model has challengers loaded for the champion that
answered; it waits for nothing more. A background task takes what waits, runs each challenger
over it in a worker thread (one onnxruntime thread per challenger session), and publishes
``ShadowScored`` events to ``refit.predictions``: the rows' join keys, the champion's outputs and
each challenger's. The monitor pairs them with the labels that arrive by request id
(``services/monitor/challengers.py``).

Which versions challenge is ``refit.core.shadow.ShadowPlan``'s, fed every authenticated decision;
:meth:`Shadow.keep_loaded` loads them beside the champion (the previous champion is already loaded
for instant rollbacks), with the same memory headroom and spec checks as a swap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
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
RETRY_S = 60.0  # a challenger that could not load (no memory, a failed fetch) is tried again after this


@dataclass(eq=False)
class Waiting:
    """The served rows of one champion and set of challengers, waiting to be scored: one column each.

    A request appends to lists it does not own; it creates no object the garbage collector tracks.
    (A queue of one tuple per request did: under load they outlived the young generations, and the
    full collections they caused took 68 ms each, the p99 of every request beside them.)
    """

    served: Served
    ready: Ready
    keys: list[str] = field(default_factory=list)  # per row (``refit.core.live.row_keys``)
    matrices: list[np.ndarray] = field(default_factory=list)  # per request
    outputs: list[Any] = field(default_factory=list)  # per row: the champion's label or value

    def add(self, request_id: str, batch: np.ndarray, predicted: Prediction) -> None:
        if len(batch) == 1:
            self.keys.append(request_id)
        else:
            self.keys.extend(row_keys(request_id, len(batch)))
        self.matrices.append(batch)
        self.outputs.extend(predicted.labels if predicted.labels is not None else predicted.values or ())


class Shadow(Batches[Waiting]):
    """The challengers each model's champion has, loaded; the served rows waiting for them.

    What waits is taken 0.1 s after its first request, or at once when a batch's worth waits:
    under load, the per-batch costs (the worker thread's hand-off, one onnxruntime call per
    challenger and ``batch_size`` rows, one event, one publish) are paid about ten times a second.

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
        self.waiting: dict[tuple[str, int], Waiting] = {}  # by model and challengers loaded (id of the Ready)
        self.requests = 0  # requests waiting
        self.arrived = asyncio.Event()

    def follow(self, event: Decision) -> None:
        """An authenticated decision (``Champions.apply`` calls this before it swaps)."""
        self.plans[event.model].follow(event.event_type, event.sequence, event.version, event.digest)
        self.changed.set()

    def offer(self, served: Served, request_id: str, batch: np.ndarray, predicted: Prediction) -> None:
        ready = self.ready.get(served.name)
        if ready is None or ready[0] != served.version:
            return
        if self.requests >= self.capacity:
            self.counts["dropped_queue_full"] += 1
            return
        waiting = self.waiting.get((served.name, id(ready)))
        if waiting is None:
            waiting = self.waiting[served.name, id(ready)] = Waiting(served, ready)
        waiting.add(request_id, batch, predicted)
        self.requests += 1
        self.counts["enqueued"] += 1
        self.arrived.set()

    def queued(self) -> int:
        return self.requests

    def requests_in(self, batch: list[Waiting]) -> int:
        return sum(len(waiting.matrices) for waiting in batch)

    async def _take(self, stop: asyncio.Event) -> list[Waiting]:
        """What waits, once a first request waits; 0.1 s later unless a batch's worth already does."""
        while not self.requests:
            self.arrived.clear()
            if await pause(stop, 0.5, self.arrived) and not self.requests:
                return []
        if stop.is_set() and not self.broker_ok:
            return []
        if not stop.is_set() and self.requests < self.batch_size:
            await asyncio.sleep(self.linger_s)
        taken, self.waiting, self.requests = list(self.waiting.values()), {}, 0
        return taken

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

    def encode(self, batch: list[Waiting]) -> list[Record]:
        """Score what waited with the challengers; one event per ``batch_size`` rows."""
        started = time.thread_time()
        try:
            records: list[Record] = []
            for waiting in batch:
                records += self._encode(waiting)
            return records
        finally:  # the worker thread's CPU time: what scoring and encoding cost, without the noise of the rest
            self.counts["scoring_cpu_us"] += round((time.thread_time() - started) * 1e6)

    def _encode(self, waiting: Waiting) -> list[Record]:
        matrix = waiting.matrices[0] if len(waiting.matrices) == 1 else np.concatenate(waiting.matrices)
        records: list[Record] = []
        for start in range(0, len(matrix), self.batch_size):
            end = min(start + self.batch_size, len(matrix))
            try:
                event = self._scored(waiting, matrix[start:end], start, end)
            except (ValidationError, ModelLoadError, ValueError) as exc:
                self.counts["dropped_invalid"] += end - start
                log.warning("shadow scoring failed", model=waiting.served.name, error=repr(exc))
                continue
            value = event.to_bytes()
            if self.fits(value):
                records.append((event.topic, event.key(), value, event.headers(self.source)))
        return records

    def _scored(self, waiting: Waiting, matrix: np.ndarray, start: int, end: int) -> ShadowScored:
        served = waiting.served
        classification = served.model.task == "classification"
        champion = waiting.outputs[start:end]
        challengers = []
        for contender, model in waiting.ready[1]:
            theirs = model.run(matrix)
            challengers.append(ShadowOutputs(
                version=contender.version, digest=contender.digest, role=contender.role, labels=theirs.labels,
                values=finite_or_none(theirs.values)))
        return ShadowScored(model=served.name, replica_id=self.replica_id, version=served.version,
                            digest=served.digest, keys=waiting.keys[start:end],
                            labels=champion if classification else None,
                            values=None if classification else finite_or_none(champion),
                            challengers=challengers)
