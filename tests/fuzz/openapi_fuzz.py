"""Property-based fuzzing of a live service through its own OpenAPI document (schemathesis 4).

Every operation of the document gets a Hypothesis run of its own, drawing from:

- the document as published, in positive mode (schema-valid cases) and negative mode
  (schema-violating ones);
- a copy *narrowed* to each configured model (its name in the path or body, rows of its
  width, its labels, the stored artifact digests), again positive and negative. Names and
  digests are free strings in the document, so cases from it alone nearly all stop at a 404;
  the narrowed copies reach the code behind those checks, and their negative cases put
  hostile values exactly where a real row or name would be.

Each case is sent with no credential, the monitor's local token or a wrong one, and now and
then with extras the document does not describe: unknown query parameters, odd
``X-Request-ID``/``Accept`` values, a wrong ``Content-Type`` for the body. Each response is
checked: not a server error, a status code the document declares (``refit.web.declare_errors``),
the declared schema for it, no traceback in the body. Failures are collected rather than raised
at the first, so one run reports every distinct problem of every operation. A service whose
document does not declare its errors yet is fuzzed with ``strict_statuses=False``: its
undeclared status codes are counted, not failed.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from refit.specs import ModelSpec, ModelSpecs

TOKEN = "refit-local-token"
KEPT_EXAMPLES = 3  # reproducers kept per distinct failure

# Header values a client library will put on the wire: latin-1, no CR/LF, no leading space.
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
                       min_size=1, max_size=260).filter(lambda v: not v[0].isspace())
_CONTENT_TYPES = ("text/plain", "multipart/form-data; boundary=refit", "multipart/form-data",
                  "application/x-www-form-urlencoded", "application/json; charset=utf-16", "application/xml",
                  "application/octet-stream", "application/json", "application/merge-patch+json", "*/*", "json",
                  ";;")
_NUMBER = {"type": "number", "minimum": -1e3, "maximum": 1e3}


@st.composite
def extras(draw: st.DrawFn) -> dict[str, Any]:
    """What a case is sent with beyond the schema: a credential, and for a quarter of cases hostile extras."""
    headers: dict[str, str] = {}
    token = draw(st.sampled_from([None, TOKEN, "not-the-token"]))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    params: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            headers["x-request-id"] = draw(_HEADER_TEXT)
        if draw(st.booleans()):
            headers["accept"] = draw(st.sampled_from(["text/html", "application/xml", "*/*", "nonsense"]))
        if draw(st.booleans()):
            headers["content-type"] = draw(st.sampled_from(_CONTENT_TYPES))
        params = draw(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=40), max_size=3))
    return {"headers": headers, "params": params}


def narrow(document: dict[str, Any], spec: ModelSpec, digests: Iterable[str] = ()) -> dict[str, Any]:
    """The service's document narrowed to one configured model (see the module's docstring).

    Only request parts change; every response stays exactly as the service declares it.
    """
    doc = copy.deepcopy(document)
    known_digests = sorted(set(digests))
    features, text = spec.input.features, spec.input.kind == "text"
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"enum": [spec.name]}
                elif parameter.get("in") == "path" and parameter["name"] == "digest" and known_digests:
                    parameter["schema"] = {"enum": known_digests}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None and "instances" in body.get("properties", {}):  # a prediction request
                rows = {"minItems": 1, "maxItems": 4}
                body["properties"] = {"text": {"type": "string"},
                                      "texts": {"type": "array", "items": {"type": "string"}, **rows}} if text \
                    else {"features": {"anyOf": [_row(features), _row_list(features)]},
                          "instances": {"type": "array", "items": _row(features), **rows},
                          "inputs": {"type": "array", "items": _row_list(features), **rows}}
                body.update(minProperties=1, maxProperties=1, additionalProperties=False)
    for schema in doc.get("components", {}).get("schemas", {}).values():
        properties = schema.get("properties", {})
        if "model" in properties:
            properties["model"] = {"enum": [spec.name]}
        if "features" in properties and "label" in properties:  # a sample row
            if text:
                properties["features"] = {"type": "null"}
                properties["text"] = {"type": "string", "minLength": 1, "maxLength": 200}
            else:
                properties["features"] = {"anyOf": [_row(features), _row_list(features)]}
                properties["text"] = {"type": "null"}
            properties["label"] = {"enum": list(spec.labels)} if spec.labels else _NUMBER
            schema["required"] = sorted({*schema.get("required", []), "text" if text else "features", "label"})
    return doc


def _row(features: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": dict.fromkeys(features, _NUMBER), "required": list(features),
            "additionalProperties": False}


def _row_list(features: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "array", "items": _NUMBER, "minItems": len(features), "maxItems": len(features)}


@dataclass
class Finding:
    check: str
    status: int
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class OperationRun:
    service: str
    label: str
    cases: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    undocumented: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, int], Finding] = field(default_factory=dict)

    def record(self, check: str, status: int, example: str) -> None:
        finding = self.failures.setdefault((check, status), Finding(check, status))
        finding.count += 1
        if len(finding.examples) < KEPT_EXAMPLES:
            finding.examples.append(example)


def fuzz_service(service: str, base_url: str, max_examples: int, specs: ModelSpecs, digests: Iterable[str] = (),
                 session: requests.Session | None = None, strict_statuses: bool = True) -> list[OperationRun]:
    """Fuzz every operation of the service's live OpenAPI document; one :class:`OperationRun` each.

    ``strict_statuses``: an answer with a status code the document does not declare is a failure
    (else it is only counted)."""
    session = session or requests.Session()
    published = session.get(f"{base_url}/openapi.json", timeout=30)
    published.raise_for_status()
    document = published.json()
    schema = schemathesis.openapi.from_dict(document)
    narrowed = {spec.name: schemathesis.openapi.from_dict(narrow(document, spec, digests)) for spec in specs.models}
    runs = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
        if _has_inputs(operation):
            strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
            # A path declared for one model (inference's predict) is narrowed to that model only.
            names = [n for n in narrowed if f"/models/{n}/" in operation.path] or list(narrowed)
            strategies += [narrowed[n][operation.path][operation.method.upper()].as_strategy(generation_mode=mode)
                           for n in names for mode in GenerationMode]
        run = OperationRun(service, operation.label)
        _run(run, st.one_of(strategies), base_url, session, max_examples, strict_statuses)
        runs.append(run)
    return runs


def _has_inputs(operation: Any) -> bool:
    return any(len(p) for p in (operation.path_parameters, operation.query, operation.headers,
                                operation.cookies)) or bool(operation.body)


def _run(run: OperationRun, strategy: st.SearchStrategy[Any], base_url: str, session: requests.Session,
         max_examples: int, strict_statuses: bool) -> None:
    # Deterministic (derandomize: the same cases on every run), no example database, no shrinking
    # (failures are recorded, never raised), no deadline: the service's latency is not under test.
    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy, extra=extras())
    def one(case: Any, extra: dict[str, Any]) -> None:
        headers, params = extra["headers"], extra["params"]
        response = case.call(base_url=base_url, session=session, headers=headers, params=params, timeout=60)
        run.cases += 1
        run.statuses[response.status_code] += 1
        if b"Traceback (most recent call last)" in response.content:
            run.record("no_traceback_in_body", response.status_code, _reproducer(case, extra, response))
        for check in (not_a_server_error, response_schema_conformance, status_code_conformance):
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (Failure, FailureGroup):
                if check is status_code_conformance and not strict_statuses:
                    run.undocumented[response.status_code] += 1
                else:
                    run.record(check.__name__, response.status_code, _reproducer(case, extra, response))

    started = time.monotonic()
    try:
        one()
    except Unsatisfiable:  # the strategy ran out of distinct cases before max_examples
        pass
    run.seconds = time.monotonic() - started


def _reproducer(case: Any, extra: dict[str, Any], response: Any) -> str:
    try:
        curl = case.as_curl_command(headers=extra["headers"])
    except Exception:  # schemathesis cannot render every drawn case as curl; its repr will do
        curl = repr(case)
    query = f" (plus query {extra['params']!r})" if extra["params"] else ""
    return f"{curl}{query} -> {response.status_code} {response.content[:300]!r}"


def table(runs: list[OperationRun]) -> str:
    """Cases, time and answers per operation; undocumented status codes in parentheses."""
    lines = [f"{'service':11} {'operation':42} {'cases':>6} {'seconds':>7}  answers (undocumented codes)"]
    for run in runs:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items()))
        undocumented = ", ".join(str(s) for s in sorted(run.undocumented))
        lines.append(f"{run.service:11} {run.label:42} {run.cases:>6} {run.seconds:>7.1f}  {statuses}"
                     + (f"  ({undocumented})" if undocumented else ""))
    lines.append(f"{'all':11} {f'{len(runs)} operations':42} {sum(r.cases for r in runs):>6} "
                 f"{sum(r.seconds for r in runs):>7.1f}")
    return "\n".join(lines)


def findings(runs: list[OperationRun]) -> str:
    """Every distinct failure, with up to KEPT_EXAMPLES reproducers each."""
    out = []
    for run in runs:
        for finding in run.failures.values():
            out.append(f"{run.service} {run.label}: {finding.check} failed {finding.count}x with HTTP {finding.status}")
            out.extend(f"    {example}" for example in finding.examples)
    return "\n".join(out)
