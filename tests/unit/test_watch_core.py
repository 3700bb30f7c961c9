"""The file source: the pure core (records, rows, keys, changes) and the watcher against a fake ingest."""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from refit.core.filerows import (
    CHUNK_BYTES,
    FileFormatError,
    FileState,
    change,
    file_format,
    parse,
    read_header,
    reconcile,
    refused_rows,
    row_key,
    split_records,
)
from refit.specs import ModelSpec
from refit.watch import IngestRefused, IngestSink, IngestUnavailable, StateError, Watcher, WatchError, WatchOptions, load_state

HEADER = b"a,b,c,label\n"


@pytest.fixture
def spec(make_spec) -> ModelSpec:
    return make_spec(labels=["x", "y"])


def rows_of(parsed) -> list[dict[str, Any]]:
    return [r.row for r in parsed.records if r.row is not None]


# --- records -----------------------------------------------------------------------------------


def test_only_complete_lines_are_records():
    assert split_records(b"a\nbb\nccc", quoted=False) == [(0, 2), (2, 5)]
    assert split_records(b"", quoted=False) == []
    assert split_records(b"no newline yet", quoted=False) == []


def test_a_newline_inside_quotes_does_not_end_a_csv_record():
    data = b'1,"two\nlines",3\n4,"a ""quoted"" word",5\n6,"open\n'
    assert split_records(data, quoted=True) == [(0, 16), (16, 40)]
    assert split_records(data, quoted=False) == [(0, 7), (7, 16), (16, 40), (40, 48)]


@pytest.mark.parametrize("text", [
    'a,5" screen,c\nd,e,f\n',                       # a quote inside a plain field is text
    '"x ""y"" z",2\n"multi\nline\n",3\n',             # escaped quotes; newlines in a quoted field
    '"",""""\n"a,b",c\r\n"closed"x,y\n',             # empty quoted fields; text after a closing quote
    '"never closed\nmore\n',                         # waits: the record is not complete yet
])
def test_records_end_where_pythons_csv_reader_ends_them(text):
    data = text.encode()
    expected, ends = [], 0
    for start, end in split_records(data, quoted=True):
        expected.append(next(csv.reader(io.StringIO(data[start:end].decode(), newline=""))))
        ends = end
    assert expected == list(csv.reader(io.StringIO(text[:ends], newline="")))
    if "never closed" in text:
        assert ends == 0


# --- CSV ---------------------------------------------------------------------------------------


def test_the_header_is_read_once_and_remembered(spec):
    parsed = parse(HEADER + b"1,2,3,x\n4,5,6,y\n", FileState("f.csv", 1), "csv", spec)
    assert parsed.state.header == ("a", "b", "c", "label")
    assert parsed.state.offset == len(HEADER) and parsed.state.line == 2
    assert rows_of(parsed) == [
        {"features": {"a": 1.0, "b": 2.0, "c": 3.0}, "label": "x", "idempotency_key": f"f.csv@12#{parsed.records[0].key[-12:]}"},
        {"features": {"a": 4.0, "b": 5.0, "c": 6.0}, "label": "y", "idempotency_key": parsed.records[1].key},
    ]
    assert [(r.offset, r.end, r.line, r.end_line) for r in parsed.records] == [(12, 20, 2, 3), (20, 28, 3, 4)]


def test_a_half_written_line_waits_and_reading_on_gives_the_same_records_as_reading_at_once(spec):
    data = HEADER + b"1,2,3,x\n4,5,6,y\n7,8,9,x\n"
    whole = parse(data, FileState("f.csv", 1), "csv", spec).records
    for cut in range(len(data) + 1):  # the writer stopped anywhere: no record is lost, split or doubled
        first = parse(data[:cut], FileState("f.csv", 1), "csv", spec)
        done = first.records
        state = first.state
        if done:
            state = FileState("f.csv", 1, offset=done[-1].end, line=done[-1].end_line, header=state.header)
        rest = parse(data[state.offset:], state, "csv", spec)
        assert done + rest.records == whole, cut


def test_bom_crlf_and_blank_lines(spec):
    data = b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n") + b"\r\n1,2,3,x\r\n\n"
    parsed = parse(data, FileState("f.csv", 1), "csv", spec)
    assert parsed.state.header == ("a", "b", "c", "label")
    assert [r.row["label"] if r.row else None for r in parsed.records] == [None, "x", None]
    assert [r.error for r in parsed.records] == [None, None, None]
    assert parsed.state.offset == 16 and parsed.records[1].offset == 18 and parsed.records[-1].end == len(data)


@pytest.mark.parametrize(("header", "problem"), [
    (b"a,b,label\n", "missing columns ['c']"),
    (b"a,b,c,label,d\n", "unknown columns ['d']"),
    (b"a,b,c,label,a\n", "duplicated columns ['a']"),
    (b"a,b,c\n", "missing columns ['label']"),
])
def test_a_wrong_header_is_a_file_error_naming_the_columns(spec, header, problem):
    with pytest.raises(FileFormatError, match=r"header: " + problem.replace("[", r"\[").replace("]", r"\]")):
        parse(header + b"1,2,3,x\n", FileState("f.csv", 1), "csv", spec)


def test_optional_columns_and_text_models(make_spec):
    spec = make_spec(input={"kind": "text"})
    header = read_header(spec, b"text,label,confidence,source,event_time,request_id,idempotency_key\n")
    state = FileState("t.csv", 1, offset=10, header=header)
    parsed = parse(b'"warm, cheesy\nand late",comfort,0.5,web,2024-01-01T00:00:00Z,r1,mine\nhi,x,,,,,\n',
                   state, "csv", spec)
    assert rows_of(parsed) == [
        {"text": "warm, cheesy\nand late", "label": "comfort", "confidence": 0.5, "source": "web",
         "event_time": "2024-01-01T00:00:00Z", "request_id": "r1", "idempotency_key": "mine"},
        {"text": "hi", "label": "x", "idempotency_key": parsed.records[1].key},
    ]


@pytest.mark.parametrize(("line", "error"), [
    (b"1,zwei,3,x\n", "features.b: expected a number, got 'zwei'"),
    (b"1,nan,3,x\n", "features.b: must be finite"),
    (b"1,2,3\n", "line: 3 fields where the header has 4"),
    (b"1,2,3,x,9\n", "line: 5 fields where the header has 4"),
    (b"1,2,\xff,x\n", "line: not UTF-8"),
])
def test_a_bad_row_is_refused_here_with_the_field_at_fault(spec, line, error):
    state = FileState("f.csv", 1, offset=len(HEADER), line=2, header=("a", "b", "c", "label"))
    (record,) = parse(line, state, "csv", spec).records
    assert (record.row, record.error, record.line) == (None, error, 2)


def test_regression_labels_are_numbers(make_spec):
    spec = make_spec(task="regression")
    state = FileState("r.csv", 1, offset=1, header=("a", "b", "c", "label"))
    good, bad = parse(b"1,2,3,151.5\n1,2,3,lots\n", state, "csv", spec).records
    assert good.row is not None and good.row["label"] == 151.5
    assert bad.error == "label: expected a number, got 'lots'"


def test_a_record_longer_than_a_chunk_is_a_file_error(spec):
    state = FileState("f.csv", 1, offset=1, header=("a", "b", "c", "label"))
    with pytest.raises(FileFormatError, match="no end of line"):
        parse(b"1" * CHUNK_BYTES, state, "csv", spec)


# --- JSON lines --------------------------------------------------------------------------------


def test_json_lines_pass_through_in_ingest_shape(spec):
    data = (b'{"features": {"a": 1, "b": 2, "c": 3}, "label": "x"}\n'
            b'{"model": "iris", "features": [1, 2, 3], "label": "y", "idempotency_key": "k7"}\n'
            b'not json\n[1, 2]\n{"model": "other", "label": "x"}\n{"label": "x", "partial": ')
    parsed = parse(data, FileState("f.jsonl", 1), "jsonl", spec)
    assert rows_of(parsed) == [
        {"features": {"a": 1, "b": 2, "c": 3}, "label": "x", "idempotency_key": parsed.records[0].key},
        {"features": [1, 2, 3], "label": "y", "idempotency_key": "k7"},
    ]
    errors = [r.error for r in parsed.records[2:]]
    assert errors[0].startswith("line: not JSON")
    assert errors[1:] == ["line: expected a JSON object, got list",
                          "model: this file feeds 'iris', the row names 'other'"]
    assert parsed.state.offset == 0  # records advance the offset only when delivered
    assert parsed.records[-1].end == data.rindex(b"\n") + 1


# --- keys, changes, renames, ingest's answer ---------------------------------------------------


def test_keys_are_stable_for_the_same_bytes_at_the_same_place_and_new_otherwise():
    key = row_key("a.csv", 12, b"1,2,3,x\n", "a,b,c,label")
    assert key == row_key("a.csv", 12, b"1,2,3,x\n", "a,b,c,label")
    assert key.startswith("a.csv@12#")
    others = {row_key("b.csv", 12, b"1,2,3,x\n", "a,b,c,label"), row_key("a.csv", 13, b"1,2,3,x\n", "a,b,c,label"),
              row_key("a.csv", 12, b"1,2,3,y\n", "a,b,c,label"), row_key("a.csv", 12, b"1,2,3,x\n", "b,a,c,label")}
    assert key not in others and len(others) == 4
    assert len(row_key("n" * 255, 10**12, b"x")) <= 200


def test_what_a_poll_does_with_a_known_file():
    prev = FileState("f.csv", inode=5, offset=100, size=120, mtime_ns=7)
    assert change(prev, 5, 120, 7) == "unchanged"
    assert change(prev, 5, 150, 8) == "read"
    assert change(prev, 5, 120, 9) == "read"         # touched or rewritten: the head fingerprint decides
    assert change(prev, 5, 99, 9) == "restart"       # truncated
    assert change(prev, 6, 500, 9) == "restart"      # replaced (rotation)


def test_a_renamed_file_keeps_its_state_and_gone_files_are_forgotten():
    a, b = FileState("a.csv", inode=1, offset=10), FileState("b.csv", inode=2, offset=20)
    assert reconcile({"a.csv": a, "b.csv": b}, {"a2.csv": 1, "c.csv": 3}) == {"a2.csv": a}
    assert reconcile({"a.csv": a}, {"a.csv": 1}) == {"a.csv": a}


def test_ingests_422_maps_to_rows():
    detail = [{"loc": ["body", "samples", 2, "features", "p3"], "msg": "expected a number, got str"},
              {"loc": ["body", "samples", 0, "label"], "msg": "'11' is not one of"},
              {"loc": ["body", "samples", 2, "confidence"], "msg": "Input should be less than or equal to 1"}]
    assert refused_rows(detail, 3) == {2: "features.p3: expected a number, got str; confidence: Input should be "
                                          "less than or equal to 1", 0: "label: '11' is not one of"}
    assert refused_rows([{"loc": ["body", "model"], "msg": "no model"}], 3) is None
    assert refused_rows([{"loc": ["body", "samples", 3, "label"], "msg": "x"}], 3) is None
    assert refused_rows("nope", 3) is None


def test_file_formats():
    assert [file_format(n) for n in ("a.csv", "B.CSV", "c.jsonl", "d.ndjson", "e.json", ".refit-rejected.jsonl",
                                     "f.csv.tmp")] == ["csv", "csv", "jsonl", "jsonl", None, None, None]


# --- the ingest client ------------------------------------------------------------------------


def sink_answering(status: int, body: Any, seen: list[httpx.Request]) -> IngestSink:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return IngestSink("http://ingest", "iris", api_key="k", transport=httpx.MockTransport(handler))


def test_the_ingest_client_maps_answers():
    seen: list[httpx.Request] = []
    assert sink_answering(202, {"accepted": 1}, seen).send([{"features": [float("nan")], "label": "x"}]) == {}
    assert orjson.loads(seen[0].content) == {"model": "iris", "samples": [{"features": [None], "label": "x"}]}
    assert seen[0].headers["authorization"] == "Bearer k"
    assert seen[0].url.path == "/v1/samples:batch"
    assert sink_answering(422, {"detail": [{"loc": ["body", "samples", 0, "label"], "msg": "bad"}]}, seen).send(
        [{}]) == {0: "label: bad"}
    with pytest.raises(IngestRefused, match="422"):
        sink_answering(422, {"detail": [{"loc": ["body", "model"], "msg": "no model"}]}, seen).send([{}])
    with pytest.raises(IngestRefused, match="401"):
        sink_answering(401, {"detail": "token"}, seen).send([{}])
    with pytest.raises(IngestUnavailable, match="503"):
        sink_answering(503, {"detail": "broker unavailable"}, seen).send([{}])

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(IngestUnavailable, match="cannot reach"):
        IngestSink("http://ingest", "iris", transport=httpx.MockTransport(refuse)).send([{}])


# --- the watcher against a fake ingest ---------------------------------------------------------


class FakeIngest:
    """Takes rows like ingest: all or nothing, refusing label 'bad'; can be down for some calls."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.stored: dict[str, Mapping[str, Any]] = {}  # by idempotency key, like a consumer by sample id
        self.posts = 0

    def send(self, rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
        self.posts += 1
        if self.down:
            self.down -= 1
            raise IngestUnavailable("ingest answered 503")
        refused = {i: "label: 'bad' is not one of ['x', 'y']" for i, r in enumerate(rows) if r["label"] == "bad"}
        if not refused:
            self.stored.update({r["idempotency_key"]: r for r in rows})
        return refused


def watcher(spec: ModelSpec, ingest: FakeIngest, directory: Path, **options: Any) -> Watcher:
    return Watcher(spec, ingest, WatchOptions(directory=directory, backoff_s=0, **options))


def csv_lines(start: int, count: int, label: str = "x") -> bytes:
    return b"".join(f"{i},{i + 1},{i + 2},{label}\n".encode() for i in range(start, start + count))


def test_rows_arrive_once_across_appends_half_lines_and_repeated_runs(spec, tmp_path):
    ingest, data = FakeIngest(), tmp_path / "a.csv"
    data.write_bytes(HEADER + csv_lines(0, 7))
    watcher(spec, ingest, tmp_path, batch_rows=3).run(once=True)
    assert len(ingest.stored) == 7 and ingest.posts == 3
    with data.open("ab") as f:
        f.write(csv_lines(7, 2) + b"9,10,")
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert len(ingest.stored) == 9 and summary.waiting == {"a.csv": 5}
    posts = ingest.posts
    watcher(spec, ingest, tmp_path).run(once=True)  # nothing changed: nothing read, nothing posted
    assert ingest.posts == posts
    with data.open("ab") as f:
        f.write(b"11,x\n")
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert len(ingest.stored) == 10 and summary.waiting == {} and summary.accepted == 1
    assert ingest.stored[max(ingest.stored, key=lambda k: int(k.split("@")[1].split("#")[0]))]["features"] == \
        {"a": 9.0, "b": 10.0, "c": 11.0}
    state = load_state(tmp_path / ".refit-watch.json", "iris")["a.csv"]
    assert state.offset == data.stat().st_size and state.header == ("a", "b", "c", "label")


def test_a_lost_state_file_re_sends_the_same_keys(spec, tmp_path):
    ingest = FakeIngest()
    (tmp_path / "a.csv").write_bytes(HEADER + csv_lines(0, 5))
    watcher(spec, ingest, tmp_path).run(once=True)
    keys = set(ingest.stored)
    (tmp_path / ".refit-watch.json").unlink()  # a crash after the 202, before the save, is at most this
    watcher(spec, ingest, tmp_path).run(once=True)
    assert set(ingest.stored) == keys and ingest.posts == 2


def test_refused_rows_are_kept_with_their_reason_and_the_rest_goes_on(spec, tmp_path):
    ingest = FakeIngest()
    (tmp_path / "a.csv").write_bytes(HEADER + csv_lines(0, 2) + csv_lines(2, 1, "bad") + b"1,two,3,x\n"
                                     + csv_lines(3, 2))
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert (summary.accepted, summary.rejected, len(ingest.stored)) == (4, 2, 4)
    rejected = [orjson.loads(line) for line in (tmp_path / ".refit-rejected.jsonl").read_bytes().splitlines()]
    assert [(r["file"], r["line"], r["reason"], r["record"]) for r in rejected] == [
        ("a.csv", 4, "label: 'bad' is not one of ['x', 'y']", "2,3,4,bad"),
        ("a.csv", 5, "features.b: expected a number, got 'two'", "1,two,3,x"),
    ]
    assert all(r["idempotency_key"].startswith("a.csv@") and r["model"] == "iris" for r in rejected)


def test_ingest_down_never_advances_and_up_again_delivers(spec, tmp_path):
    ingest = FakeIngest(down=3)
    (tmp_path / "a.jsonl").write_bytes(b'{"features": [1, 2, 3], "label": "x"}\n')
    with pytest.raises(IngestUnavailable):
        watcher(spec, ingest, tmp_path, retries=2).run(once=True)
    assert ingest.posts == 3 and not ingest.stored
    assert load_state(tmp_path / ".refit-watch.json", "iris").get("a.jsonl", FileState("", 0)).offset == 0
    watcher(spec, ingest, tmp_path, retries=2).run(once=True)
    assert len(ingest.stored) == 1


def test_a_stop_during_backoff_ends_without_advancing(spec, tmp_path):
    ingest, stop = FakeIngest(down=100), threading.Event()
    (tmp_path / "a.jsonl").write_bytes(b'{"features": [1, 2, 3], "label": "x"}\n')
    w = Watcher(spec, ingest, WatchOptions(directory=tmp_path, backoff_s=30), stop)
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    w.run(interval_s=30)
    timer.join()
    assert ingest.posts == 1 and not ingest.stored


def test_truncation_and_rotation_start_over_and_identical_bytes_are_not_counted_twice(spec, tmp_path):
    ingest, data = FakeIngest(), tmp_path / "a.csv"
    data.write_bytes(HEADER + csv_lines(0, 4))
    watcher(spec, ingest, tmp_path).run(once=True)
    data.write_bytes(HEADER + csv_lines(0, 1))  # truncated in place, same first row
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert summary.restarted == 1 and len(ingest.stored) == 4
    rotated = tmp_path / "a.csv.new"
    rotated.write_bytes(HEADER + csv_lines(100, 6))
    os.replace(rotated, data)  # a new file under the old name
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert summary.restarted == 1 and len(ingest.stored) == 10


def test_a_rewritten_head_of_the_same_size_is_noticed(spec, tmp_path):
    ingest, data = FakeIngest(), tmp_path / "a.csv"
    data.write_bytes(HEADER + csv_lines(0, 3))
    watcher(spec, ingest, tmp_path).run(once=True)
    with data.open("r+b") as f:  # same inode, grown, but the first row differs: not an append
        f.write(HEADER + b"9,9,9,y\n")
        f.seek(0, os.SEEK_END)
        f.write(csv_lines(50, 1))
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    # All four rows are sent again; the two unchanged ones keep their keys and are stored once.
    assert (summary.restarted, summary.accepted, len(ingest.stored)) == (1, 4, 3 + 2)


def test_a_renamed_file_is_not_read_again(spec, tmp_path):
    ingest = FakeIngest()
    (tmp_path / "a.csv").write_bytes(HEADER + csv_lines(0, 3))
    watcher(spec, ingest, tmp_path).run(once=True)
    (tmp_path / "a.csv").rename(tmp_path / "b.csv")
    with (tmp_path / "b.csv").open("ab") as f:
        f.write(csv_lines(3, 1))
    watcher(spec, ingest, tmp_path).run(once=True)
    assert len(ingest.stored) == 4 and ingest.posts == 2
    assert all(k.startswith("a.csv@") for k in ingest.stored)  # keys follow the file, not its name


def test_a_bad_header_blocks_only_its_file_until_fixed(spec, tmp_path):
    ingest = FakeIngest()
    (tmp_path / "bad.csv").write_bytes(b"a,b,label\n1,2,x\n")
    (tmp_path / "good.csv").write_bytes(HEADER + csv_lines(0, 2))
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert len(ingest.stored) == 2 and list(summary.failing) == ["bad.csv"]
    assert "missing columns ['c']" in summary.line()
    (tmp_path / "bad.csv").write_bytes(HEADER + csv_lines(10, 1))
    summary = watcher(spec, ingest, tmp_path).run(once=True)
    assert len(ingest.stored) == 3 and summary.failing == {}


def test_the_state_belongs_to_one_model_and_one_watcher(spec, tmp_path):
    ingest = FakeIngest()
    (tmp_path / ".refit-watch.json").write_text('{"version": 1, "model": "digits", "files": {}}')
    with pytest.raises(StateError, match="belongs to model 'digits'"):
        watcher(spec, ingest, tmp_path)
    (tmp_path / ".refit-watch.json").write_text("{torn")
    with pytest.raises(StateError, match="cannot read"):
        watcher(spec, ingest, tmp_path)
    (tmp_path / ".refit-watch.json").unlink()
    first, second = watcher(spec, ingest, tmp_path), watcher(spec, ingest, tmp_path)
    blocked: list[BaseException] = []

    class Probe(FakeIngest):
        def send(self, rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
            try:
                second.run(once=True)
            except WatchError as exc:
                blocked.append(exc)
            return super().send(rows)

    (tmp_path / "a.csv").write_bytes(HEADER + csv_lines(0, 1))
    first.sink = Probe()
    first.run(once=True)
    assert len(blocked) == 1 and "another watcher" in str(blocked[0])


def test_the_long_running_watcher_picks_up_new_files_until_stopped(spec, tmp_path):
    ingest, stop = FakeIngest(), threading.Event()
    w = Watcher(spec, ingest, WatchOptions(directory=tmp_path), stop)
    runner = threading.Thread(target=w.run, kwargs={"interval_s": 0.02})
    runner.start()
    try:
        (tmp_path / "late.csv").write_bytes(HEADER + csv_lines(0, 2))
        for _ in range(250):
            if len(ingest.stored) == 2:
                break
            threading.Event().wait(0.02)
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive() and len(ingest.stored) == 2 and w.summary.accepted == 2
