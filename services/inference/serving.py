"""The served champions and the hot swap: load, check, warm up, then swap; on failure keep the old one."""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog

from refit import signing, tracing
from refit.artifacts import ArtifactReader
from refit.core.fallback import Prior
from refit.core.serving import SERVING_EVENT_TYPES, headroom_for, sequence_refusal, should_swap
from refit.errors import ArtifactError, EventDecodeError, ModelLoadError, SignatureError
from refit.events import CandidateRejected, Decision, ModelPromoted, ModelRolledBack, parse_event
from refit.memory import available_bytes
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec, ModelSpecs

log = structlog.get_logger("inference")


@dataclass(frozen=True)
class Served:
    """One champion, immutable: a request takes a reference once and keeps it to the end."""

    name: str
    version: int
    digest: str
    sequence: int
    model: OnnxModel
    answered: Any = None   # this version's Prometheus children, bound once at swap time
    latency: Any = None
    # "previous": serving an earlier champion because the newer one's artifact did not load
    fallback: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Champions.apply` did with a decision: swapped, or not; ``refused`` says why the
    decision itself is unusable (a forgery, a model not configured here, a sequence far ahead of
    the monitor's), so that the topic's reader dead-letters it with that reason. A swap that failed
    to load is not the decision's fault (the periodic check retries it) and is not ``refused``.

    True when it swapped, as the boolean ``apply`` used to return.
    """

    swapped: bool = False
    refused: str | None = None

    def __bool__(self) -> bool:
        return self.swapped


MONITOR = "monitor"  # the source of the monitor's signed answers, which win over the topic


class NoHeadroom(ModelLoadError):
    """Loading the new session beside the serving one would leave less than the reserve free."""


class Champions:
    """The current champion per model. Swapping is one dict assignment, atomic on the event loop.

    Over 80 lines: :meth:`apply` is the single funnel every decision goes through (authenticate,
    compare sequences, fetch, check, warm, swap), and its steps are its short private methods.
    """

    def __init__(self, specs: ModelSpecs, store: ArtifactReader, key: bytes, threads: int = 1,
                 metrics: Metrics | None = None, reserve_bytes: int = 0,
                 available: Callable[[], int | None] = available_bytes) -> None:
        self.metrics = metrics or Metrics("inference")
        self.specs = specs
        self.store = store
        self.key = key
        self.threads = threads
        self.served: dict[str, Served] = {}
        # The champion each swap replaced, kept loaded: rolling back to it is instant.
        self.previous: dict[str, Served] = {}
        self.swaps = 0
        self.swaps_by_source: Counter[str] = Counter()  # "topic", or "monitor" (start-up and catching up)
        self.reserve_bytes = reserve_bytes
        self.available = available
        self.refused: dict[str, int] = {"signature": 0, "load": 0, "decode": 0, "memory": 0, "unconfigured": 0,
                                        "sequence": 0}
        # The sequence of the monitor's last signed answer about each model's champion.
        self.monitor_sequence: dict[str, int] = {}
        self._locks = {name: asyncio.Lock() for name in specs.names()}
        # Called with every authenticated decision of a served model, before any swap (the shadow's plan).
        self.followers: list[Callable[[Decision], None]] = []
        # The newest serving decision each model got, loaded or not: serving an older one is a fallback.
        self.decided: dict[str, int] = {}
        # Each model's holdout prior from the monitor, for ``serving.fallback: [prior]`` (refit.core.fallback).
        self.priors: dict[str, Prior] = {}

    async def apply(self, payload: bytes, signature: str | None, source: str, trace: str | None = None) -> Outcome:
        """Follow one decision from ``source`` (``topic``, or ``monitor``: its answer wins); a swap it
        makes is a span, the child of ``trace`` (the decision's traceparent), when tracing."""
        event = self._authentic(payload, signature, source)
        if isinstance(event, Outcome):
            return event
        lock = self._locks.get(event.model)
        if lock is None:
            return self._refuse("unconfigured", f"no model named {event.model!r} is configured here", source,
                                model=event.model, sequence=event.sequence)
        authoritative = source == MONITOR
        if authoritative:
            self.monitor_sequence[event.model] = event.sequence
        elif event.event_type in SERVING_EVENT_TYPES and \
                (why := sequence_refusal(event.sequence, self.monitor_sequence.get(event.model))) is not None:
            return self._refuse("sequence", why, source, model=event.model, sequence=event.sequence)
        for follower in self.followers:
            follower(event)
        if event.event_type in SERVING_EVENT_TYPES and (authoritative or
                                                        event.sequence > self.decided.get(event.model, 0)):
            self.decided[event.model] = event.sequence
        async with lock:
            with tracing.span("swap", trace, model=event.model, version=event.version, source=source) \
                    if trace is not None else nullcontext():
                return await self._swap(event, source, authoritative)

    def learn(self, payload: bytes, signature: str | None) -> bool:
        """Tell the followers an earlier decision the monitor signed (those beside its champion answer);
        nothing is swapped. False when it cannot be used (refused and counted, as :meth:`apply` does)."""
        event = self._authentic(payload, signature, MONITOR)
        if isinstance(event, Outcome) or event.model not in self._locks:
            return False
        for follower in self.followers:
            follower(event)
        return True

    def _authentic(self, payload: bytes, signature: str | None, source: str) -> Decision | Outcome:
        """The decision, if its signature holds and it reads as one; else the refusal."""
        try:
            signing.verify(self.key, payload, signature)
            event = parse_event(payload, (ModelPromoted, CandidateRejected, ModelRolledBack))
        except SignatureError as exc:
            return self._refuse("signature", str(exc), source)
        except EventDecodeError as exc:
            return self._refuse("decode", str(exc), source)
        assert isinstance(event, (ModelPromoted, CandidateRejected, ModelRolledBack))
        return event

    async def _swap(self, event: Decision, source: str, authoritative: bool) -> Outcome:
        """Under the model's lock: load, check and warm the decision's model if it is newer, then swap."""
        current = self.served.get(event.model)
        if not should_swap(current.sequence if current else None, event.event_type, event.sequence,
                           authoritative):
            return Outcome()
        if current is not None and authoritative and current.sequence > event.sequence:
            log.warning("the monitor's champion replaces a decision it did not make", model=event.model,
                        served_sequence=current.sequence, monitor_sequence=event.sequence)
        bound = log.bind(model=event.model, version=event.version, digest=event.digest, source=source)
        started = time.perf_counter()
        stages: dict[str, float] = {}
        kept = self.previous.get(event.model)
        try:
            if current is not None and current.digest == event.digest:
                model = current.model  # the same bytes under another decision: nothing to load
            elif kept is not None and kept.digest == event.digest:
                model = kept.model  # a rollback to the version just replaced: already loaded and warm
            else:
                model = await asyncio.to_thread(self.load, self.specs.get(event.model), event.digest,
                                                None, stages)
        except (ArtifactError, ModelLoadError) as exc:
            reason = "memory" if isinstance(exc, NoHeadroom) else "load"
            self.refused[reason] += 1
            self.metrics.decisions_refused.labels(reason).inc()
            bound.error("swap refused, still serving the previous model", reason=str(exc),
                        serving=current.version if current else None)
            if current is not None and current.fallback is None and current.sequence < event.sequence:
                self._serve(replace(current, fallback="previous"))
            return Outcome()
        version = str(event.version)
        self._serve(Served(
            event.model, event.version, event.digest, event.sequence, model,
            self.metrics.requests.labels(event.model, version, "200"),
            self.metrics.latency.labels(event.model, version),
            "previous" if self.decided.get(event.model, 0) > event.sequence else None))
        if current is not None:
            self.previous[event.model] = current
        self.swaps += 1
        self.swaps_by_source[source] += 1
        self.metrics.swaps.labels(event.model).inc()
        self.metrics.swap_duration.labels(event.model).observe(time.perf_counter() - started)
        bound.info("serving", previous=current.version if current else None,
                   seconds=round(time.perf_counter() - started, 4),
                   stages={k: round(v, 4) for k, v in stages.items()})
        return Outcome(swapped=True)

    def _serve(self, served: Served) -> None:
        self.served[served.name] = served
        self.metrics.in_fallback.labels(served.name, "previous").set(served.fallback == "previous")
        if served.fallback is not None:
            log.warning("serving an earlier champion: the newest one did not load", model=served.name,
                        version=served.version, newest_sequence=self.decided.get(served.name))

    def _refuse(self, reason: str, detail: str, source: str, **fields: Any) -> Outcome:
        """Count, log and return a decision that cannot be used (the topic's reader dead-letters it)."""
        self.refused[reason] += 1
        self.metrics.decisions_refused.labels(reason).inc()
        log.warning("decision refused", source=source, reason=detail, **fields)
        return Outcome(refused=detail)

    def load(self, spec: ModelSpec, digest: str, threads: int | None = None,
             stages: dict[str, float] | None = None) -> OnnxModel:
        """Fetch, verify, load beside what is loaded (if memory allows), check against the spec, warm up
        (the seconds of each go into ``stages``, when given)."""
        clock = time.perf_counter()
        data = self.store.get(digest)
        fetched = time.perf_counter()
        available = self.available()
        if not headroom_for(len(data), available, self.reserve_bytes):
            raise NoHeadroom(f"not enough memory to load a {len(data) / 2**20:.1f} MiB model beside the serving "
                             f"one: {(available or 0) / 2**20:.0f} MiB available, "
                             f"{self.reserve_bytes / 2**20:.0f} MiB must stay free")
        model = OnnxModel(data, threads=threads or self.threads)
        if model.task != spec.task or model.input_kind != spec.input.kind or \
                tuple(model.features) != spec.input.features:
            raise ModelLoadError(f"artifact signature ({model.task}, {model.input_kind}, "
                                 f"{len(model.features)} features) does not match the spec of {spec.name}")
        loaded = time.perf_counter()
        model.warm_up()
        if stages is not None:
            stages.update(fetch=fetched - clock, load=loaded - fetched, warm=time.perf_counter() - loaded)
        return model
