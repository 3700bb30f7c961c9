"""File source: rows of CSV and JSON-lines files in a directory, posted to ingest once each.

``refit ingest watch DIR --model NAME`` polls DIR, reads what each file gained since the
offset it remembers, and posts the complete rows to ingest's batch endpoint. Offsets are
saved (atomically) only after ingest answered 202, and every row carries an idempotency key
derived from its file and byte offset, so a crash re-sends at most the unacknowledged batch
and every consumer stores it once. See ``docs/file-source.md``.

The pure core (records, rows, keys, what changed in a file, ingest's 422 answer) does no I/O;
:class:`Watcher` is the shell around it: it stats and reads files, posts, retries, and saves.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx
import orjson
import structlog

from refit.core.filerows import (CHUNK_BYTES, FILE_SOURCE, FileFormatError, FileState, Record, change, file_format,
                                 head_digest, parse, reconcile, refused_rows)
from refit.errors import RefitError
from refit.specs import ModelSpec

STATE_NAME, REJECTED_NAME = ".refit-watch.json", ".refit-rejected.jsonl"
HEAD_BYTES = 1024                    # a file's first bytes, fingerprinted to notice a rewrite
MAX_BATCH_ROWS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024    # of encoded rows per post: half ingest's default body limit

log = structlog.get_logger(__name__)


class WatchError(RefitError):
    """The watcher cannot go on."""


class StateError(WatchError, ValueError):
    """The state file is unreadable or belongs to another model."""


class IngestUnavailable(WatchError, ConnectionError):
    """Ingest did not take a batch (503, 5xx, no connection): retry, never advance."""


class IngestRefused(WatchError, RuntimeError):
    """Ingest refused in a way no retry fixes (credential, unknown model, a 422 not about rows)."""


class _Stopped(Exception):
    """The stop event was set while waiting."""


# --- shell -------------------------------------------------------------------------------------


class Sink(Protocol):
    def send(self, rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
        """Post rows: ``{}`` when all were taken, else the refused rows by index (then none was taken).

        Raises :class:`IngestUnavailable` (retry later) or :class:`IngestRefused` (give up).
        """


class IngestSink:
    """ingest's ``POST /v1/samples:batch`` (all or nothing; 202 once the broker has every row)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/samples:batch"
        self.model = model
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def send(self, rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
        # orjson writes NaN and infinities as null: ingest then refuses that row, not the request.
        body = orjson.dumps({"model": self.model, "samples": list(rows)})
        try:
            response = self.client.post(self.endpoint, content=body)
        except httpx.TransportError as exc:
            raise IngestUnavailable(f"cannot reach ingest at {self.endpoint}: {exc!r}") from None
        if response.status_code == 202:
            return {}
        answer = f"ingest answered {response.status_code}: {response.text[:300]}"
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise IngestUnavailable(answer)
        if response.status_code == 422:
            try:
                detail = response.json()["detail"]
            except (ValueError, KeyError, TypeError):
                detail = None
            refused = refused_rows(detail, len(rows))
            if refused:
                return refused
        raise IngestRefused(answer)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class WatchOptions:
    directory: Path
    state_path: Path | None = None        # default: DIR/.refit-watch.json
    rejected_path: Path | None = None     # default: DIR/.refit-rejected.jsonl
    batch_rows: int = MAX_BATCH_ROWS
    retries: int = 8                      # per batch, before the pass gives up (0.5 s doubling to 30 s)
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass
class Summary:
    accepted: int = 0
    rejected: int = 0
    restarted: int = 0
    waiting: dict[str, int] = field(default_factory=dict)     # file -> bytes after its last newline
    failing: dict[str, str] = field(default_factory=dict)     # file -> why it yields no rows

    def line(self) -> str:
        text = f"{self.accepted} rows accepted, {self.rejected} rejected"
        if self.waiting:
            text += f", {len(self.waiting)} file(s) end in a partial line ({sum(self.waiting.values())} bytes)"
        if self.failing:
            text += f", {len(self.failing)} file(s) yield no rows: " + "; ".join(
                f"{name}: {why}" for name, why in self.failing.items())
        return text


class Watcher:
    """Polls one directory for one model; offsets advance only behind ingest's 202."""

    def __init__(self, spec: ModelSpec, sink: Sink, options: WatchOptions,
                 stop: threading.Event | None = None) -> None:
        if not options.directory.is_dir():
            raise WatchError(f"{options.directory} is not a directory")
        if not 1 <= options.batch_rows <= MAX_BATCH_ROWS:
            raise WatchError(f"batch size must be within 1..{MAX_BATCH_ROWS}")
        if options.retries < 0:
            raise WatchError("retries cannot be negative")
        self.spec, self.sink, self.options = spec, sink, options
        self.stop = stop or threading.Event()
        self.state_path = options.state_path or options.directory / STATE_NAME
        self.rejected_path = options.rejected_path or options.directory / REJECTED_NAME
        self.files = load_state(self.state_path, spec.name)
        self.summary = Summary()

    def run(self, once: bool = False, interval_s: float = 1.0) -> Summary:
        """Poll until stopped (or once); ingest staying away past the retries ends ``once`` with an error."""
        if interval_s <= 0:
            raise WatchError("the poll interval must be positive")
        with _exclusive(self.state_path):
            log.info("watching", directory=str(self.options.directory), model=self.spec.name,
                     state=str(self.state_path), once=once)
            while True:
                try:
                    self.poll()
                except _Stopped:
                    break
                except IngestUnavailable as exc:
                    if once:
                        raise
                    log.error("ingest unavailable; trying again at the next poll", error=str(exc))
                if once or self.stop.wait(interval_s):
                    break
        if self.stop.is_set():
            log.info("stopped; offsets are saved up to the last accepted batch")
        return self.summary

    def poll(self) -> None:
        """One pass over the directory, oldest files first."""
        entries = self._scan()
        known = reconcile(self.files, {name: st.st_ino for name, st in entries})
        if known != self.files:
            self.files = known
            self._save()
        for name in [n for n in (*self.summary.waiting, *self.summary.failing) if n not in known]:
            self.summary.waiting.pop(name, None)
            self.summary.failing.pop(name, None)
        for name, st in entries:
            if self.stop.is_set():
                raise _Stopped
            self._poll_file(name, st)

    def _scan(self) -> list[tuple[str, os.stat_result]]:
        ours = {self.state_path.resolve(), self.rejected_path.resolve()}
        found = []
        try:
            with os.scandir(self.options.directory) as entries:
                for entry in entries:
                    try:
                        if file_format(entry.name) and entry.is_file() and Path(entry.path).resolve() not in ours:
                            found.append((entry.name, entry.stat()))
                    except FileNotFoundError:  # removed while we looked
                        continue
        except OSError as exc:
            raise WatchError(f"cannot list {self.options.directory}: {exc}") from None
        return sorted(found, key=lambda e: (e[1].st_mtime_ns, e[0]))

    def _poll_file(self, name: str, st: os.stat_result) -> None:
        path = self.options.directory / name
        prev = self.files.get(name)
        state = prev or FileState(origin=name, inode=st.st_ino)
        what = "read" if prev is None else change(prev, st.st_ino, st.st_size, st.st_mtime_ns)
        if what == "unchanged":
            return
        try:
            with open(path, "rb") as handle:
                if prev is not None and what == "read" and prev.head_len and \
                        head_digest(handle.read(prev.head_len)) != prev.head:
                    what = "restart"
                if prev is not None and what == "restart":
                    log.warning("file truncated or replaced: reading it again from the start", file=name,
                                offset_was=prev.offset, size=st.st_size)
                    self.summary.restarted += 1
                    state = FileState(origin=name, inode=st.st_ino)
                state = self._read(name, handle, state)
        except FileNotFoundError:
            return
        except WatchError:  # IngestUnavailable is a ConnectionError, hence an OSError: not this file's fault
            raise
        except OSError as exc:  # unreadable (permissions, I/O): the other files go on
            log.error("cannot read file", file=name, reason=str(exc))
            self.summary.failing[name] = str(exc)
            return
        self.files[name] = replace(state, size=st.st_size, mtime_ns=st.st_mtime_ns)
        self._save()
        tail = st.st_size - state.offset
        if tail > 0 and name not in self.summary.failing:
            self.summary.waiting[name] = tail
            log.info("partial line waits for its newline", file=name, line=state.line, bytes=tail)
        else:
            self.summary.waiting.pop(name, None)

    def _read(self, name: str, handle: BinaryIO, state: FileState) -> FileState:
        fmt = file_format(name) or "csv"
        self.summary.failing.pop(name, None)
        while True:
            handle.seek(state.offset)
            try:
                parsed = parse(handle.read(CHUNK_BYTES), state, fmt, self.spec)
            except FileFormatError as exc:
                log.error("file yields no rows until it changes", file=name, line=state.line, reason=str(exc))
                self.summary.failing[name] = str(exc)
                return state
            state = self._fingerprint(handle, parsed.state)
            if not parsed.records:
                return state
            batch: list[Record] = []
            rows = size = 0
            for record in parsed.records:
                batch.append(record)
                if record.row is not None:
                    rows, size = rows + 1, size + len(orjson.dumps(record.row))
                if rows >= self.options.batch_rows or size >= MAX_BATCH_BYTES:
                    state = self._deliver(name, state, batch, handle)
                    batch, rows, size = [], 0, 0
            if batch:
                state = self._deliver(name, state, batch, handle)

    def _deliver(self, name: str, state: FileState, batch: list[Record], handle: BinaryIO) -> FileState:
        """Post the batch's rows, keep what ingest refused, then (only then) advance and save."""
        if self.stop.is_set():
            raise _Stopped
        refused = [(r, r.error) for r in batch if r.error is not None]
        pending = [r for r in batch if r.row is not None]
        for record in pending:
            record.row.setdefault("source", FILE_SOURCE + name)  # type: ignore[union-attr]
        while pending:  # ingest takes all or nothing: drop the refused rows and post the rest
            answer = self._send([r.row for r in pending if r.row is not None])
            if not answer:
                self.summary.accepted += len(pending)
                break
            refused += [(pending[i], why) for i, why in answer.items()]
            pending = [r for i, r in enumerate(pending) if i not in answer]
        self._reject(name, sorted(refused, key=lambda item: item[0].offset))
        state = self._fingerprint(handle, replace(state, offset=batch[-1].end, line=batch[-1].end_line))
        self.files[name] = state
        self._save()
        return state

    def _send(self, rows: list[dict[str, Any]]) -> dict[int, str]:
        for attempt in range(self.options.retries + 1):
            try:
                return self.sink.send(rows)
            except IngestUnavailable as exc:
                left = self.options.retries - attempt
                if left == 0:
                    raise
                delay = min(self.options.backoff_s * 2**attempt, self.options.max_backoff_s)
                log.warning("ingest unavailable; retrying", error=str(exc), retry_in_s=delay, tries_left=left)
                if self.stop.wait(delay):
                    raise _Stopped from None
        raise AssertionError("unreachable")

    def _reject(self, name: str, refused: list[tuple[Record, str]]) -> None:
        if not refused:
            return
        now = datetime.now(UTC).isoformat()
        lines = []
        for record, reason in refused:
            log.warning("row rejected", file=name, line=record.line, field=reason.partition(": ")[0], reason=reason)
            lines.append(orjson.dumps({
                "at": now, "model": self.spec.name, "file": name, "line": record.line, "offset": record.offset,
                "idempotency_key": (record.row or {}).get("idempotency_key", record.key), "reason": reason,
                "record": record.raw.decode("utf-8", "replace").rstrip("\r\n")}) + b"\n")
        with open(self.rejected_path, "ab") as out:
            out.write(b"".join(lines))
            out.flush()
            os.fsync(out.fileno())
        self.summary.rejected += len(refused)

    @staticmethod
    def _fingerprint(handle: BinaryIO, state: FileState) -> FileState:
        want = min(HEAD_BYTES, state.offset)
        if want <= state.head_len:
            return state
        handle.seek(0)
        return replace(state, head=head_digest(handle.read(want)), head_len=want)

    def _save(self) -> None:
        save_state(self.state_path, self.spec.name, self.files)


def load_state(path: Path, model: str) -> dict[str, FileState]:
    """The remembered offsets; none when the file does not exist yet."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StateError(f"cannot read the state file {path}: {exc}; delete it to read every file again "
                         "(idempotency keys make re-sent rows harmless)") from None
    if not isinstance(data, dict) or data.get("model") != model:
        raise StateError(f"the state file {path} belongs to model {data.get('model') if isinstance(data, dict) else None!r},"
                         f" not {model!r}; give each model its own --state")
    try:
        return {name: FileState(**{**s, "header": tuple(s["header"]) if s.get("header") is not None else None})
                for name, s in data["files"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"the state file {path} is malformed: {exc!r}") from None


def save_state(path: Path, model: str, files: Mapping[str, FileState]) -> None:
    """Write-to-temporary, fsync, rename, fsync the directory: a crash leaves the old or the new file."""
    temporary = path.with_name(f"{path.name}.tmp")
    body = orjson.dumps({"version": 1, "model": model, "files": {n: asdict(s) for n, s in files.items()}},
                        option=orjson.OPT_INDENT_2)
    with open(temporary, "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def _exclusive(state_path: Path) -> Iterator[None]:
    """One watcher per state file: a second one would race the first on offsets."""
    with open(state_path.with_name(f"{state_path.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchError(f"another watcher is using {state_path}") from None
        yield
