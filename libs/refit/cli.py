"""``refit``: run the local stack and talk to the monitor."""

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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
