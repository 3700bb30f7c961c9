"""The file source's pure core: complete records of CSV / JSON-lines bytes, their rows and keys.

No I/O: given a file's bytes from a remembered offset, it returns the complete records
(a half-written last line waits for its newline), the rows ingest takes, a stable
idempotency key per row, and what changed in a file since it was last read.
``refit.watch`` is the shell that stats, reads, posts and saves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from refit.errors import RefitError
from refit.specs import ModelSpec

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# A row without a source of its own is sent with source "file:<name>": the monitor's data_change trigger
# (triggers.data_change) tells rows from changed files by it.
FILE_SOURCE = "file:"
OPTIONAL_COLUMNS = ("confidence", "source", "event_time", "request_id", "idempotency_key")
_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 8 * 1024 * 1024        # the reader takes at most this much at once; also the longest record


class FileFormatError(RefitError, ValueError):
    """A file yields no rows (bad CSV header, endless record); it waits until it changes."""


class _RowError(ValueError):
    """One row this side cannot turn into a sample; the message is ``field: why``."""


@dataclass(frozen=True)
class FileState:
    """How far one file was read. ``origin`` (its first name) keeps row keys stable across renames."""

    origin: str
    inode: int
    offset: int = 0                       # always just after a complete record
    line: int = 1                         # number of the line that starts at ``offset``
    header: tuple[str, ...] | None = None
    head: str = ""                        # sha256 of the first ``head_len`` consumed bytes
    head_len: int = 0
    size: int = -1                        # size and mtime when last read: unchanged files are skipped
    mtime_ns: int = -1


@dataclass(frozen=True)
class Record:
    """One complete record of a file: a sample row for ingest, a row refused here, or a blank line."""

    offset: int
    end: int
    line: int
    end_line: int                         # the number of the line after the record
    raw: bytes
    key: str
    row: dict[str, Any] | None = None
    error: str | None = None              # "field: why" when refused before ingest saw it


@dataclass(frozen=True)
class Parsed:
    state: FileState                      # advanced past a header read here, not past any record
    records: tuple[Record, ...]


def file_format(name: str) -> str | None:
    """``csv`` or ``jsonl`` by suffix; ``None`` for hidden files and anything else."""
    if name.startswith("."):
        return None
    return FORMATS.get(os.path.splitext(name)[1].lower())


def split_records(data: bytes, quoted: bool, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of every complete record; a newline inside a quoted CSV field does not end one."""
    bounds: list[tuple[int, int]] = []
    pos, inside = start, False
    while (newline := data.find(b"\n", pos)) != -1:
        if quoted and (inside or data.find(b'"', pos, newline) != -1):  # plain lines take the fast path
            inside = _still_quoted(data[pos:newline], inside)
        pos = newline + 1
        if not inside:
            bounds.append((start, pos))
            start = pos
    return bounds


_START, _PLAIN, _QUOTED, _QUOTE = range(4)
_COMMA, _DQUOTE = ord(","), ord('"')


def _still_quoted(line: bytes, inside: bool) -> bool:
    """Whether a CSV record is still in a quoted field after ``line``, read as Python's csv reads it:
    a quote opens a field only at its start (``5" screen`` is plain text), ``""`` is a quote."""
    state = _QUOTED if inside else _START
    for char in line:
        if state == _QUOTED:
            state = _QUOTE if char == _DQUOTE else _QUOTED
        elif char == _COMMA:
            state = _START
        elif state in (_START, _QUOTE):
            state = _QUOTED if char == _DQUOTE else _PLAIN
    return state == _QUOTED


def row_key(origin: str, offset: int, raw: bytes, salt: str = "") -> str:
    """``name@offset#digest``: the same bytes at the same place give the same key, new bytes a new one."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + raw).hexdigest()[:12]
    name = origin if len(origin) <= 120 else hashlib.sha256(origin.encode()).hexdigest()[:24]
    return f"{name}@{offset}#{digest}"


def head_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def change(prev: FileState, inode: int, size: int, mtime_ns: int) -> Literal["unchanged", "read", "restart"]:
    """What a poll does with a known file; ``read`` still checks the head fingerprint."""
    if inode != prev.inode or size < prev.offset:
        return "restart"
    if size == prev.size and mtime_ns == prev.mtime_ns:
        return "unchanged"
    return "read"


def reconcile(states: Mapping[str, FileState], present: Mapping[str, int]) -> dict[str, FileState]:
    """States of the files present (name -> inode): a renamed file keeps its state; gone ones are dropped."""
    out = {name: s for name, s in states.items() if name in present}
    gone = {s.inode: s for name, s in states.items() if name not in present}
    for name, inode in present.items():
        if name not in out and inode in gone:
            out[name] = gone.pop(inode)
    return out


def read_header(spec: ModelSpec, raw: bytes) -> tuple[str, ...]:
    """The CSV header's column names, checked against the model's inputs."""
    try:
        names = tuple(c.strip() for c in _fields(raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise FileFormatError("header: not UTF-8") from None
    need = ("text", "label") if spec.input.kind == "text" else (*spec.input.features, "label")
    missing = [n for n in need if n not in names]
    unknown = [n for n in names if n not in need and n not in OPTIONAL_COLUMNS]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    for problem, found in (("missing", missing), ("unknown", unknown), ("duplicated", duplicated)):
        if found:
            raise FileFormatError(f"header: {problem} columns {found[:5]}{' …' if len(found) > 5 else ''}; "
                                  f"a {spec.name} CSV has {_columns_hint(spec)}")
    return names


def parse(data: bytes, state: FileState, fmt: str, spec: ModelSpec) -> Parsed:
    """The complete records of ``data``, the file's bytes from ``state.offset``.

    A last record without its newline waits for it. A CSV file's first record is its header,
    checked and remembered in the returned state. Raises :class:`FileFormatError`.
    """
    base, line, skip = state.offset, state.line, len(_BOM) if state.offset == 0 and data.startswith(_BOM) else 0
    bounds = split_records(data, quoted=fmt == "csv", start=skip)
    if not bounds and len(data) >= CHUNK_BYTES:
        raise FileFormatError(f"line {line}: no end of line within {CHUNK_BYTES} bytes")
    records: list[Record] = []
    salt = ",".join(state.header or ())
    for start, end in bounds:
        raw = data[start:end]
        end_line = line + raw.count(b"\n")
        if fmt == "csv" and state.header is None:
            if raw.strip():
                state = replace(state, header=read_header(spec, raw))
                salt = ",".join(state.header or ())
            state = replace(state, offset=base + end, line=end_line)
        else:
            key = row_key(state.origin, base + start, raw, salt)
            records.append(_record(spec, fmt, state.header, raw, key, base + start, base + end, line, end_line))
        line = end_line
    return Parsed(state, tuple(records))


def refused_rows(detail: Any, count: int) -> dict[int, str] | None:
    """Ingest's 422 detail as {row index: "field: why"}; ``None`` if any error is not about one row."""
    if not isinstance(detail, list) or not detail:
        return None
    refused: dict[int, str] = {}
    for error in detail:
        loc = error.get("loc") if isinstance(error, dict) else None
        if not (isinstance(loc, list) and len(loc) >= 3 and loc[:2] == ["body", "samples"]
                and isinstance(loc[2], int) and 0 <= loc[2] < count):
            return None
        reason = f"{'.'.join(map(str, loc[3:])) or 'row'}: {error.get('msg', 'invalid')}"
        refused[loc[2]] = f"{refused[loc[2]]}; {reason}" if loc[2] in refused else reason
    return refused


def _record(spec: ModelSpec, fmt: str, header: tuple[str, ...] | None, raw: bytes, key: str,
            offset: int, end: int, line: int, end_line: int) -> Record:
    made = Record(offset=offset, end=end, line=line, end_line=end_line, raw=raw, key=key)
    if not raw.strip():
        return made
    try:
        text = raw.decode("utf-8")
        row = _csv_row(spec, header or (), _fields(text)) if fmt == "csv" else _json_row(spec, text)
    except UnicodeDecodeError:
        return replace(made, error="line: not UTF-8")
    except _RowError as exc:
        return replace(made, error=str(exc))
    if not row.get("idempotency_key"):
        row["idempotency_key"] = key
    return replace(made, row=row)


def _fields(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text, newline="")), [])


def _number(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _RowError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _RowError(f"{where}: must be finite")
    return value


def _csv_row(spec: ModelSpec, header: tuple[str, ...], values: list[str]) -> dict[str, Any]:
    if len(values) != len(header):
        raise _RowError(f"line: {len(values)} fields where the header has {len(header)}")
    cells = dict(zip(header, values, strict=True))
    row: dict[str, Any] = {"text": cells["text"]} if spec.input.kind == "text" else \
        {"features": {n: _number(cells[n], f"features.{n}") for n in spec.input.features}}
    label = cells["label"].strip()
    row["label"] = _number(label, "label") if spec.task == "regression" else label
    if cells.get("confidence", "").strip():
        row["confidence"] = _number(cells["confidence"], "confidence")
    for name in ("source", "event_time", "request_id", "idempotency_key"):
        if cells.get(name, "").strip():
            row[name] = cells[name].strip()
    return row


def _json_row(spec: ModelSpec, text: str) -> dict[str, Any]:
    try:
        row = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _RowError(f"line: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise _RowError(f"line: expected a JSON object, got {type(row).__name__}")
    model = row.pop("model", spec.name)
    if model != spec.name:
        raise _RowError(f"model: this file feeds {spec.name!r}, the row names {model!r}")
    return row


def _columns_hint(spec: ModelSpec) -> str:
    inputs = "text" if spec.input.kind == "text" else ",".join(spec.input.features[:3]) + \
        (f",…,{spec.input.features[-1]}" if len(spec.input.features) > 3 else "")
    return f"{inputs},label and optionally {', '.join(OPTIONAL_COLUMNS)}"
