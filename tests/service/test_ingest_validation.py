"""ingest's HTTP contract without a broker: every bad input is a 4xx naming the field; nothing is a 500."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from refit.settings import IngestSettings
from refit.stack import free_port
from services.ingest.app import create_app, get_publisher
from tests.conftest import SPECS
from tests.support.fakes import RecordingPublisher


@pytest.fixture
def client():
    # Nothing listens on this port: any request that passes validation must get a 503, never a 2xx.
    settings = IngestSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=SPECS,
                              publish_timeout_s=2, max_body_bytes=64 * 1024, max_batch_rows=10)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def digits(**extra: object) -> dict[str, object]:
    return {"model": "digits", "features": {f"p{i}": 0.0 for i in range(64)}, "label": "3", **extra}


@pytest.mark.parametrize(("body", "loc"), [
    ({**digits(), "model": "nope"}, ["body", "model"]),
    ({**digits(), "features": {"p0": 1.0}}, ["body", "features"]),
    ({**digits(), "features": [1.0, 2.0]}, ["body", "features"]),
    ({**digits(), "features": {**digits()["features"], "p3": "x"}}, ["body", "features", "p3"]),
    ({**digits(), "features": {**digits()["features"], "zz": 1.0}}, ["body", "features"]),
    ({**digits(), "label": "11"}, ["body", "label"]),
    ({**digits(), "label": ""}, ["body", "label"]),
    ({**digits(), "label": True}, ["body", "label"]),
    (digits(confidence=1.5), ["body", "confidence"]),
    (digits(unexpected=1), ["body", "unexpected"]),
    ({**digits(), "text": "hello"}, ["body", "text"]),
    ({"model": "diabetes", "features": [0.0] * 10, "label": "high"}, ["body", "label"]),
    # issue 17: finite as float32, beyond the spec's bounds (every feature at 3e38 crashed judging)
    ({"model": "diabetes", "features": [3e38] * 10, "label": 150}, ["body", "features", "age"]),
    ({"model": "diabetes", "features": [0.0] * 9 + [1.5], "label": 150}, ["body", "features", "s6"]),
    ({"model": "diabetes", "features": [0.0] * 10, "label": 1e38}, ["body", "label"]),
    ({"model": "food-mood", "text": "soup " * 201, "label": "comfort"}, ["body", "text"]),
])
def test_bad_samples_are_422_naming_the_field(client, body, loc) -> None:
    response = client.post("/v1/samples", json=body)
    assert response.status_code == 422, response.text
    assert any(err["loc"][: len(loc)] == loc for err in response.json()["detail"]), response.json()


def test_non_finite_numbers_are_refused(client) -> None:
    raw = '{"model": "digits", "features": [NaN' + ", 0" * 63 + '], "label": "1"}'
    response = client.post("/v1/samples", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "features", "p0"]


def test_batch_is_all_or_nothing_with_every_row_error(client) -> None:
    rows = [{"features": [0.0] * 64, "label": "1"}, {"features": [0.0] * 3, "label": "1"},
            {"features": [0.0] * 64, "label": "x"}]
    response = client.post("/v1/samples:batch", json={"model": "digits", "samples": rows})
    assert response.status_code == 422
    assert [e["loc"][:3] for e in response.json()["detail"]] == [["body", "samples", 1], ["body", "samples", 2]]


def test_a_batch_row_beyond_the_bounds_is_named(client) -> None:
    rows = [{"features": [0.0] * 10, "label": 150}, {"features": [3e38] * 10, "label": 150},
            {"features": [0.0] * 10, "label": 1e38}]
    response = client.post("/v1/samples:batch", json={"model": "diabetes", "samples": rows})
    assert response.status_code == 422
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [
        (["body", "samples", 1, "features", "age"], "3e+38 is outside the model's bounds [-1, 1]"),
        (["body", "samples", 2, "label"], "1e+38 is outside the model's bounds [0, 1000]")]


def test_batch_length_and_body_size_are_bounded(client) -> None:
    rows = [{"features": [0.0] * 64, "label": "1"}] * 11
    too_many = client.post("/v1/samples:batch", json={"model": "digits", "samples": rows})
    assert too_many.status_code == 422
    assert "at most 10" in too_many.json()["detail"][0]["msg"]
    huge = client.post("/v1/samples", content=b"{" + b" " * (70 * 1024) + b"}",
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_valid_sample_without_a_broker_is_503_never_accepted(client) -> None:
    response = client.post("/v1/samples", json=digits())
    assert response.status_code == 503
    assert response.json()["detail"].startswith("broker unavailable, nothing was accepted")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_api_keys_when_configured_are_required() -> None:
    settings = IngestSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=SPECS, publish_timeout_s=1,
                              api_keys=["k1", "k2"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.post("/v1/samples", json=digits()).status_code == 401
        assert c.post("/v1/samples", json=digits(), headers={"authorization": "Bearer nope"}).status_code == 401
        # A known key passes authentication; without a broker the answer is then 503, never 2xx.
        assert c.post("/v1/samples", json=digits(), headers={"authorization": "Bearer k2"}).status_code == 503
        assert c.get("/healthz").status_code == 200


# -- lone surrogates ----------------------------------------------------------------------------------------------
# The standard library's JSON decodes "\ud800" (and the raw bytes ED A0 80) into a str no encoder takes:
# the event's bytes failed (500). Every string a body carries is a place for one.



@pytest.fixture
def accepting():
    """ingest with a publisher that acknowledges, so a valid body gets its 202."""
    settings = IngestSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", specs_path=SPECS, publish_timeout_s=2)
    app = create_app(settings)
    publisher = RecordingPublisher()
    app.dependency_overrides[get_publisher] = lambda: publisher
    with TestClient(app, raise_server_exceptions=False) as c:
        c.publisher = publisher
        yield c


FEATURES = ", ".join(f'"p{i}": 0' for i in range(64))
# (a sample as raw JSON with {s} where a string goes; the location its 422 names below the sample, {s} escaped)
SURROGATE_PLACES = [
    ('{"model": "digits", "features": {<p0..p63>}, "label": "3", "source": "{s}"}', ["source"]),
    ('{"model": "digits", "features": {<p0..p63>}, "label": "3", "idempotency_key": "{s}"}', ["idempotency_key"]),
    ('{"model": "digits", "features": {<p0..p63>}, "label": "3", "request_id": "r-{s}"}', ["request_id"]),
    ('{"model": "digits", "features": {<p0..p63>}, "label": "{s}"}', ["label"]),
    ('{"model": "digits", "features": {<p0..p63>}, "label": "3", "event_time": "{s}"}', ["event_time"]),
    ('{"model": "digits", "features": {<p0..p63>, "p{s}": 0}, "label": "3"}', ["features", "p{s}"]),
    ('{"model": "digits", "features": {<p0..p63>}, "label": "3", "{s}": 1}', ["{s}"]),
    ('{"model": "food-mood", "text": "warm {s} soup", "label": "comfort"}', ["text"]),
]
# (what the JSON text holds, how the 422 writes it): two escapes, and a raw surrogate (bytes ED BF BF),
# which the standard library decodes as well.
LONE_SURROGATES = [("\\ud800", "\\ud800"), ("\\udfff", "\\udfff"), ("\udfff", "\\udfff")]


def sample_bodies(template: str, text: str) -> dict[str, tuple[list[str | int], bytes]]:
    """The sample alone and as row 0 of a batch, as raw bytes, with the location prefix of each."""
    single = template.replace("<p0..p63>", FEATURES).replace("{s}", text)
    model = "food-mood" if "food-mood" in single else "digits"
    row = single.replace(f'"model": "{model}", ', "", 1)
    return {"/v1/samples": (["body"], single.encode("utf-8", "surrogatepass")),
            "/v1/samples:batch": (["body", "samples", 0], f'{{"model": "{model}", "samples": [{row}]}}'.encode(
                "utf-8", "surrogatepass"))}


@pytest.mark.parametrize(("text", "shown"), LONE_SURROGATES, ids=["ud800", "udfff", "raw-bytes"])
@pytest.mark.parametrize(("template", "loc"), SURROGATE_PLACES, ids=[p[1][0] for p in SURROGATE_PLACES])
def test_a_lone_surrogate_anywhere_is_a_422_naming_the_field(accepting, template, loc, text, shown) -> None:
    for path, (prefix, body) in sample_bodies(template, text).items():
        response = accepting.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        error = response.json()["detail"][0]
        assert error["loc"] == [*prefix, *(part.replace("{s}", shown) for part in loc)], (path, error)
        assert f"lone surrogate ({shown})" in error["msg"]
    assert accepting.publisher.records == []


def test_a_valid_surrogate_pair_is_accepted_and_published_as_utf8(accepting) -> None:
    single = ('{"model": "food-mood", "text": "warm \\ud83d\\ude00 soup", "label": "comfort", '
              '"source": "\\ud83d\\ude00", "idempotency_key": "k-\\ud83d\\ude00"}')
    one = accepting.post("/v1/samples", content=single, headers={"content-type": "application/json"})
    assert one.status_code == 202, one.text
    batch = ('{"model": "digits", "samples": [{"features": {%s}, "label": "3", "source": "\\ud83d\\ude00"}]}'
             % FEATURES)
    many = accepting.post("/v1/samples:batch", content=batch, headers={"content-type": "application/json"})
    assert many.status_code == 202, many.text
    events = [json.loads(value) for _, _, value, _ in accepting.publisher.records]
    assert [e["source"] for e in events] == ["\U0001f600", "\U0001f600"]
    assert events[0]["text"] == "warm \U0001f600 soup"


# Issue 17, defect 9 ("source": "\ud800" gave a 500): also where a string is not expected at all, the
# surrogate is echoed in the 422 (FastAPI's "input"), on both routes. Already a 4xx at 0c8cf5f; kept as proof.
NOT_A_STRING_PLACES = [
    '"features": [%s], "label": "3", "confidence": "{s}"' % ", ".join(["0"] * 64),
    '"features": ["{s}"%s], "label": "3"' % (", 0" * 63),
    '"features": "{s}", "label": "3"',
    '"features": [%s], "label": ["{s}"]' % ", ".join(["0"] * 64),
    '"features": [%s], "label": "3", "event_time": ["{s}"]' % ", ".join(["0"] * 64),
]


@pytest.mark.parametrize("text", ["\\ud800", "\ud800"], ids=["escape", "raw-bytes"])
@pytest.mark.parametrize("row", NOT_A_STRING_PLACES, ids=["confidence", "feature", "features", "label", "event_time"])
def test_a_lone_surrogate_where_no_string_belongs_is_a_4xx_on_both_routes(accepting, row, text) -> None:
    row = row.replace("{s}", text)
    for path, body in (("/v1/samples", f'{{"model": "digits", {row}}}'),
                       ("/v1/samples:batch", f'{{"model": "digits", "samples": [{{{row}}}]}}')):
        response = accepting.post(path, content=body.encode("utf-8", "surrogatepass"),
                                  headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
    assert accepting.publisher.records == []
