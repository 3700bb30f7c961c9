"""``refit``: run the local stack, talk to the monitor, feed ingest from a directory of files."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

DEFAULT_MONITOR = os.environ.get("REFIT_MONITOR_URL", "http://127.0.0.1:8003")
DEFAULT_INGEST = os.environ.get("REFIT_INGEST_URL", "http://127.0.0.1:8001")
DEFAULT_SPECS = Path("config/models.yaml")


def _up(args: argparse.Namespace) -> int:
    from refit import demo
    from refit.stack import Stack

    stack = Stack(state_dir=Path(args.state_dir).resolve(), specs_path=Path(args.specs).resolve(),
                  inference_replicas=args.replicas, preferred_ports=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        print(f"starting the embedded broker and the services (state in {stack.state_dir}) …", flush=True)
        stack.start()
        print(f"broker     {stack.bootstrap}")
        for name in stack.ports:
            print(f"{name:<10} {stack.url(name)}   log: {stack.state_dir / 'logs' / (name + '.log')}")
        print(f"try: curl {stack.url('monitor')}/v1/models   (Ctrl-C stops everything)", flush=True)
        if args.demo:
            demo.run(stack.url("ingest"), stack.url("monitor"), stack.url("inference-0"),
                     say=lambda line: print(line, flush=True))
            print("demo done; the stack keeps running. Ctrl-C stops everything.", flush=True)
        if args.exit_after_demo:
            return 0
        # Ctrl-C (SIGINT) and SIGTERM both end the wait; a plain Event.wait() would not see SIGINT.
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping …", flush=True)
        stack.stop()
    return 0


def _request(method: str, path: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = httpx.request(method, f"{args.monitor.rstrip('/')}{path}", headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise SystemExit(f"error: cannot reach the monitor at {args.monitor}: {exc}") from None
    if response.status_code >= 400:
        raise SystemExit(f"error: {response.status_code} {response.text}")
    return response.json()


def _print(data: Any, as_json: bool, table: list[str] | None = None) -> None:
    if as_json or table is None:
        print(json.dumps(data, indent=2))
        return
    for line in table:
        print(line)


def _models(args: argparse.Namespace) -> int:
    data = _request("GET", "/v1/models", args)
    rows = [f"{'model':<16}{'task':<16}{'champion':<10}{'holdout':<9}scores"]
    for m in data:
        c = m["champion"] or {}
        scores = " ".join(f"{k}={v:.4f}" for k, v in (c.get("scores") or {}).items())
        rows.append(f"{m['name']:<16}{m['task']:<16}{('v' + str(c['version'])) if c else '-':<10}"
                    f"{m['holdout_size']:<9}{scores}")
    _print(data, args.json, rows)
    return 0


def _history(args: argparse.Namespace) -> int:
    data = _request("GET", f"/v1/models/{args.model}/decisions", args)
    rows = [f"{'#':<5}{'decision':<20}{'version':<9}{'at':<34}reasons"]
    for d in data:
        rows.append(f"{d['sequence']:<5}{d['event_type']:<20}{'v' + str(d['version']):<9}{d['occurred_at']:<34}"
                    f"{'; '.join(d['reasons'])}")
    _print(data, args.json, rows)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    data = _request("POST", f"/v1/models/{args.model}/retrain", args, json={"reason": args.reason})
    _print(data, args.json, [f"retrain requested for {data['model']}: request {data['request_id']}"])
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
                        help="bearer token for changes (env REFIT_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the embedded broker and all services locally")
    up.add_argument("--state-dir", default=".refit")
    up.add_argument("--specs", default=str(DEFAULT_SPECS))
    up.add_argument("--replicas", type=int, default=1, help="inference replicas")
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
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
