"""``refit``: run the local stack, talk to the monitor, feed ingest from a directory of files."""

from __future__ import annotations

import _thread
import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from pydantic import BaseModel

from refit.client import Client
from refit.errors import RefitError, StackError

DEFAULT_MONITOR = os.environ.get("REFIT_MONITOR_URL", "http://127.0.0.1:8003")
DEFAULT_INGEST = os.environ.get("REFIT_INGEST_URL", "http://127.0.0.1:8001")
DEFAULT_SPECS = Path("config/models.yaml")


def _up(args: argparse.Namespace) -> int:
    from refit import demo
    from refit.core.restarts import RestartPolicy
    from refit.stack import Stack
    from refit.supervisor import Supervisor

    stack = Stack(state_dir=Path(args.state_dir).resolve(), specs_path=Path(args.specs).resolve(),
                  inference_replicas=args.replicas, trainers=args.trainers, preferred_ports=True, broker=args.broker)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    supervisor: Supervisor | None = None
    failed = 0

    def give_up() -> None:  # from the supervisor's thread: end the demo, or the wait below
        stopping.set()
        _thread.interrupt_main()

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        what = "the embedded broker (memory only)" if args.broker == "embedded" else \
            f"Apache Kafka (its log in {stack.state_dir / 'kafka'})"
        print(f"starting {what} and the services (state in {stack.state_dir}) …", flush=True)
        stack.start()
        supervisor = Supervisor(stack, RestartPolicy(give_up_after=args.restart_limit), say, give_up).start()
        print(f"{'broker':<12}{stack.bootstrap}")
        for name in stack.ports:
            print(f"{name:<12}{stack.url(name)}   log: {stack.state_dir / 'logs' / (name + '.log')}")
        print(f"try: curl {stack.url('monitor')}/v1/models   (Ctrl-C stops everything; a service that dies is "
              f"restarted: refit status shows it)", flush=True)
        if args.demo:
            try:
                demo.run(stack.url("ingest"), stack.url("monitor"), stack.url("inference-0"), say=say)
                print("demo done; the stack keeps running. Ctrl-C stops everything.", flush=True)
            except StackError as exc:  # the stack may be fine: keep it for a look at its logs
                print(f"error: the demo stopped: {exc}", file=sys.stderr, flush=True)
                failed = 1
        if args.exit_after_demo:
            return failed
        # Ctrl-C (SIGINT) and SIGTERM both end the wait; a plain Event.wait() would not see SIGINT.
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, lambda *_: stopping.set())  # a give-up racing the stop cannot cut it short
        if supervisor is not None:
            supervisor.stop()
        print("stopping …", flush=True)
        stack.stop()
    if supervisor is not None and supervisor.gave_up is not None:
        print(f"error: {supervisor.gave_up}; everything else was stopped", file=sys.stderr, flush=True)
        return 1
    return failed


def _client(args: argparse.Namespace) -> Client:
    return Client(monitor=args.monitor, token=args.token or None)


def _json(data: Any) -> Any:
    """What the client answered, as JSON data (for --json and the tables)."""
    if isinstance(data, list):
        return [_json(d) for d in data]
    return data.model_dump(mode="json") if isinstance(data, BaseModel) else data


def _print(data: Any, as_json: bool, table: list[str] | None = None) -> None:
    if as_json or table is None:
        print(json.dumps(data, indent=2))
        return
    for line in table:
        print(line)


def _models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = _json(client.models())
    rows = [f"{'model':<16}{'task':<16}{'champion':<10}{'holdout':<9}scores"]
    for m in data:
        c = m["champion"] or {}
        scores = " ".join(f"{k}={v:.4f}" for k, v in (c.get("scores") or {}).items())
        rows.append(f"{m['name']:<16}{m['task']:<16}{('v' + str(c['version'])) if c else '-':<10}"
                    f"{m['holdout_size']:<9}{scores}")
    _print(data, args.json, rows)
    return 0


def _history(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = _json(client.decisions(args.model))
    rows = [f"{'#':<5}{'decision':<20}{'version':<9}{'at':<34}reasons"]
    for d in data:
        rows.append(f"{d['sequence']:<5}{d['event_type']:<20}{'v' + str(d['version']):<9}{d['occurred_at']:<34}"
                    f"{'; '.join(d['reasons'])}")
    _print(data, args.json, rows)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = _json(client.retrain(args.model, args.reason))
    _print(data, args.json, [f"retrain requested for {data['model']}: request {data['request_id']}"])
    return 0


def _status(args: argparse.Namespace) -> int:
    from refit.supervisor import read_status

    with _client(args) as client:
        health = client.health()["services"]
        models, scheduler = _json(client.models()), _json(client.scheduler())
    rows = [f"{name:<14}{'up' if s['ok'] else 'DOWN':<6}{s.get('detail', '')}" for name, s in health.items()]
    rows.append(f"automatic retraining: {'running' if scheduler['running'] else 'stopped'}")
    rows += [f"{m['name']:<16}" + (f"champion v{m['champion']['version']}" if m["champion"] else "no champion")
             + f", {m['versions']} versions, holdout {m['holdout_size']}" for m in models]
    supervisor = read_status(Path(args.state_dir))
    if supervisor is not None:
        rows.append(f"supervised by refit up (pid {supervisor['pid']}):")
        rows += [f"  {name:<12}{s['state']:<11}pid {s['pid']:<8}restarts {s['restarts']}"
                 + (f", last {s['last_exit']} at {s['last_exit_at']}" if s["last_exit"] else "")
                 for name, s in supervisor["services"].items()]
    _print({"services": health, "models": models, "scheduler": scheduler, "supervisor": supervisor}, args.json, rows)
    return 0 if all(s["ok"] for s in health.values()) else 1


def _rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = _json(client.rollback(args.model, args.to, args.reason))
    _print(data, args.json, [f"{data['model']}: v{data['version']} is champion again "
                             f"(was v{data['champion_version']}); inference follows decision #{data['sequence']}"])
    return 0


def _scheduler(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action in ("start", "stop"):
            client.scheduler(args.action)
        data = _json(client.scheduler())
    rows = [f"automatic retraining: {'running' if data['running'] else 'stopped'}"]
    rows += [f"{j['model']:<16}{j['name']:<12}next {j['next_run']}  ({j['timezone']})" for j in data["jobs"]]
    _print(data, args.json, rows)
    return 0


def _export(args: argparse.Namespace) -> int:
    url = f"{args.monitor.rstrip('/')}/v1/models/{args.model}/dataset"
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        # The control token reads too; a reader without it sets REFIT_TOKEN to the read credential.
        headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
        with httpx.stream("GET", url, params={"format": args.format}, headers=headers,
                          timeout=httpx.Timeout(30, read=300)) as response:
            if response.status_code != 200:
                raise SystemExit(f"error: {response.status_code} {response.read().decode(errors='replace')}")
            for chunk in response.iter_bytes():
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise SystemExit(f"error: cannot reach the monitor at {args.monitor}: {exc}") from None
    finally:
        if args.output:
            out.close()
    return 0


def _report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = client.report(args.days)
    rows = [f"report {data['from'][:16]} → {data['to'][:16]}"]
    for m in data["models"]:
        trend = m["trend"]
        start = trend["start"] and f"v{trend['start']['version']}"
        end = trend["end"] and f"v{trend['end']['version']}"
        rows.append(f"{m['model']:<16}retrainings {sum(m['retrainings'].values())} {m['retrainings']}  "
                    f"decisions {m['decisions']}  failures {len(m['failures'])}  champion {start or '-'} → {end or '-'}")
    _print(data, args.json, rows)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from refit import demo

    demo.run(args.ingest, args.monitor, args.inference, say=lambda line: print(line, flush=True), story=args.story)
    return 0


def _ingest_watch(args: argparse.Namespace) -> int:
    from refit.errors import ConfigError, UnknownModelError
    from refit.logs import configure
    from refit.specs import load_specs
    from refit.watch import IngestSink, Watcher, WatchError, WatchOptions

    configure("watch", args.log_level, args.log_json)
    try:
        spec = load_specs(args.specs).get(args.model)
    except (ConfigError, UnknownModelError) as exc:
        raise SystemExit(f"error: {exc}") from None
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if stopping.is_set():  # a second Ctrl-C stops at once; offsets are only ever saved after a 202
            raise KeyboardInterrupt
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    options = WatchOptions(directory=Path(args.dir), batch_rows=args.batch, retries=args.retries,
                           state_path=Path(args.state) if args.state else None,
                           rejected_path=Path(args.rejected) if args.rejected else None)
    sink = IngestSink(args.ingest, args.model, args.api_key)
    try:
        watcher = Watcher(spec, sink, options, stopping)
    except WatchError as exc:
        sink.close()
        raise SystemExit(f"error: {exc}") from None
    try:
        watcher.run(once=args.once, interval_s=args.interval)
    except WatchError as exc:
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt:
        return 130
    finally:
        sink.close()
        print(f"{args.model} from {args.dir}: {watcher.summary.line()}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refit", description=__doc__)
    parser.add_argument("--monitor", default=DEFAULT_MONITOR, help="monitor URL (env REFIT_MONITOR_URL)")
    parser.add_argument("--token", default=os.environ.get("REFIT_TOKEN", "refit-local-token"),
                        help="bearer token for changes, or the read credential for exports (env REFIT_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a broker and all services locally")
    up.add_argument("--state-dir", default=".refit")
    up.add_argument("--specs", default=str(DEFAULT_SPECS))
    up.add_argument("--replicas", type=int, default=1, help="inference replicas")
    up.add_argument("--trainers", type=int, default=1,
                    help="trainers sharing the models (one consumer group; more than one: topics of 6 partitions, "
                         "on a fresh state dir)")
    up.add_argument("--broker", choices=["embedded", "kafka"], default="embedded",
                    help="embedded: in memory, no JVM, nothing kept across restarts (default); kafka: Apache Kafka "
                         "from `make kafka`'s jars, its log kept in the state dir")
    up.add_argument("--restart-limit", type=int, default=5, metavar="N",
                    help="a service that dies is restarted with backoff (0.5 s doubling to 30 s); give up and stop "
                         "everything after N fast failures in a row (each within 10 s of starting)")
    up.add_argument("--demo", action="store_true", help="stream the digits demo once the stack is up")
    up.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=_up)
    sub.add_parser("models", help="models and their champions").set_defaults(func=_models)
    history = sub.add_parser("history", help="decision history of a model")
    history.add_argument("model")
    history.set_defaults(func=_history)
    retrain = sub.add_parser("retrain", help="ask for a new candidate now")
    retrain.add_argument("model")
    retrain.add_argument("--reason", default="manual request from the CLI")
    retrain.set_defaults(func=_retrain)
    status = sub.add_parser("status", help="service health, champions, the scheduler and restarts")
    status.add_argument("--state-dir", default=".refit", help="where `refit up` runs, for its restart counts")
    status.set_defaults(func=_status)
    rollback = sub.add_parser("rollback", help="put the previous (or a named) champion back")
    rollback.add_argument("model")
    rollback.add_argument("--to", type=int, default=None, metavar="VERSION")
    rollback.add_argument("--reason", default="rollback from the CLI")
    rollback.set_defaults(func=_rollback)
    scheduler = sub.add_parser("scheduler", help="automatic retraining: start, stop, status")
    scheduler.add_argument("action", choices=["start", "stop", "status"])
    scheduler.set_defaults(func=_scheduler)
    export = sub.add_parser("export", help="download a model's training dataset")
    export.add_argument("model")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", "-o", default=None, help="file to write (default: standard output)")
    export.set_defaults(func=_export)
    report = sub.add_parser("report", help="what happened to each model over the last days")
    report.add_argument("--days", type=float, default=7)
    report.set_defaults(func=_report)
    demo_cmd = sub.add_parser("demo", help="stream the digits demo into a running stack")
    demo_cmd.add_argument("--story", action=argparse.BooleanOptionalAction, default=True,
                          help="after the digits waves, a wave of noisy labels and a change of concept "
                               "(--no-story: the waves only)")
    demo_cmd.add_argument("--ingest", default=DEFAULT_INGEST)
    demo_cmd.add_argument("--inference", default=os.environ.get("REFIT_INFERENCE_URL", "http://127.0.0.1:8004"))
    demo_cmd.set_defaults(func=_demo)
    ingest = sub.add_parser("ingest", help="feed ingest from outside").add_subparsers(dest="source", required=True)
    watch = ingest.add_parser("watch", help="post the rows of CSV / JSON-lines files in a directory, once each",
                              description="Poll DIR for *.csv, *.jsonl and *.ndjson files and post their new "
                                          "complete rows to ingest; see docs/file-source.md.")
    watch.add_argument("dir", metavar="DIR")
    watch.add_argument("--model", required=True, help="the model the rows are for")
    watch.add_argument("--specs", default=str(DEFAULT_SPECS), help="the model-spec file (CSV columns come from it)")
    watch.add_argument("--ingest", default=DEFAULT_INGEST, help="ingest URL (env REFIT_INGEST_URL)")
    watch.add_argument("--api-key", default=os.environ.get("REFIT_API_KEY"),
                       help="bearer key, if ingest requires one (env REFIT_API_KEY)")
    watch.add_argument("--state", help="where offsets are kept (default DIR/.refit-watch.json)")
    watch.add_argument("--rejected", help="where refused rows are kept (default DIR/.refit-rejected.jsonl)")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    watch.add_argument("--once", action="store_true", help="process what is there, then exit")
    watch.add_argument("--batch", type=int, default=500, help="rows per request (at most 500)")
    watch.add_argument("--retries", type=int, default=8,
                       help="retries per batch while ingest is unavailable (backoff 0.5 s doubling to 30 s)")
    watch.add_argument("--log-level", default="INFO")
    watch.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=True,
                       help="JSON log lines on stderr (--no-log-json: readable ones)")
    watch.set_defaults(func=_ingest_watch)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RefitError as exc:  # a condition a user can cause: a message and an exit code, no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
