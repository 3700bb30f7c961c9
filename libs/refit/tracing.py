"""OpenTelemetry traces along the path of a sample: ingest → trainer → monitor → every replica's swap.

Off unless configured, and then free: every call site checks :data:`enabled` (one boolean) before it
touches the SDK. On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set, exported over OTLP/HTTP as the standard ``OTEL_*`` variables say, and/or when the service's
``TRACE_FILE`` setting names a file, where the SDK's own console exporter writes one JSON span per line
(what the tests read).

The W3C ``traceparent`` travels in Kafka headers, beside the CloudEvents ones (``traceparent`` is also
the CloudEvents distributed-tracing extension attribute):

- ingest continues the caller's ``traceparent`` (or starts a trace) and puts its span's on every record;
- the trainer's training span is a child of the sample that made the model due, and links (by sample
  context, deduplicated, at most :data:`MAX_LINKS`) the other samples it trained on; the candidate carries it;
- the monitor's judging span is a child of the candidate's; the decision carries it;
- each replica's swap span is a child of the decision's.

So one trace id runs from an ingest request to every swap it caused.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HEADER = "traceparent"
MAX_LINKS = 128  # samples linked from one training span (the newest)

enabled = False  # set once by configure(); every call site checks it first
_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()


def configure(service: str, trace_file: Path | None) -> bool:
    """Turn tracing on for this process when an OTLP endpoint or ``trace_file`` is configured."""
    global enabled, _tracer
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not otlp and trace_file is None:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"refit-{service}"}))
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if trace_file is not None:
        trace_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(trace_file, "a", buffering=1)  # noqa: SIM115 - the exporter's stream for the process's life
        # batched in the SDK's worker thread, as OTLP: a span costs its caller no write
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n"), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("refit")
    enabled = True
    return True


def context_of(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` value carries (None when absent or malformed)."""
    if not traceparent:
        return None
    context = _propagator.extract({HEADER: traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def traceparent(span: Span) -> str | None:
    """The ``traceparent`` of ``span``, for a header."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(span))
    return carrier.get(HEADER)


def headers(span: Span | None) -> list[tuple[str, bytes]]:
    """The Kafka header carrying ``span``'s context (none without a span)."""
    value = traceparent(span) if span is not None else None
    return [(HEADER, value.encode())] if value else []


@contextmanager
def span(name: str, parent: str | None = None, links: Sequence[str] = (), kind: str = "internal",
         **attributes: Any) -> Iterator[Span | None]:
    """A span named ``name``, linking ``links``: the child of the current span if there is one (FastAPI's
    request span, which continued the caller's ``traceparent``), else of ``parent`` (a ``traceparent``
    from a Kafka header). None, and no work at all, when tracing is off."""
    if not enabled:
        yield None
        return
    contexts = [trace.get_current_span(c).get_span_context() for c in map(context_of, links) if c is not None]
    inside = trace.get_current_span().get_span_context().is_valid
    with _tracer.start_as_current_span(name, context=None if inside else context_of(parent),
                                       kind=SpanKind[kind.upper()], links=[Link(c) for c in contexts],
                                       attributes=attributes) as current:
        yield current


def record(name: str, parent: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """A finished span after the fact (a sampled prediction, recorded off the response path)."""
    context = context_of(parent)
    if context is None or not trace.get_current_span(context).get_span_context().trace_flags.sampled:
        return
    done = _tracer.start_span(name, context=context, kind=SpanKind.SERVER, start_time=start_ns, attributes=attributes)
    done.end(end_time=end_ns)


class Recent:
    """The newest distinct ``traceparent``s seen per key (a model), at most ``limit`` each: the samples a
    training span links."""

    def __init__(self, limit: int = MAX_LINKS) -> None:
        self.limit = limit
        self._seen: dict[str, OrderedDict[str, None]] = {}

    def add(self, key: str, value: str | None) -> None:
        if value:
            seen = self._seen.setdefault(key, OrderedDict())
            seen.pop(value, None)
            seen[value] = None
            while len(seen) > self.limit:
                seen.popitem(last=False)

    def take(self, key: str) -> list[str]:
        """Newest last; forgotten once taken."""
        return list(self._seen.pop(key, {}))
