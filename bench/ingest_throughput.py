"""Ingest throughput: samples per second accepted through ``/v1/samples:batch`` versus a raw producer.

Starts a broker (the embedded one, or Apache Kafka with ``--broker kafka``) and ingest only (real
processes, loopback), then runs the same
digits rows, round after round, through three paths to ``refit.samples`` (in this order, and
in the reverse order every other round):

raw        the baseline: a plain ``AIOKafkaProducer(acks="all", enable_idempotence=False)`` in
           this process sends the exact ``SampleIngested`` records ingest writes (bytes and CloudEvents headers, built beforehand
           with ingest's own ``to_event``), keyed by the model, one ``send`` per record, and
           awaits every acknowledgement;
publisher  a diagnostic: refit's ``Publisher`` (what ingest writes with) in this process, the
           same records in chunks of ``--batch``, ``--clients`` chunks in flight;
ingest     ``--clients`` concurrent HTTP clients post pre-encoded batches of ``--batch`` rows; a
           batch counts when ingest answered 202, i.e. after the broker acknowledged every row.

Each round sends ``--rows`` records per path, with idempotency keys no other round used. The
report: samples/s per path, the ratios ingest/raw (the number the issue asks for) and
ingest/publisher (what HTTP, validation and encoding cost on top of the write), each the median
over rounds, ingest's batch latency, and the CPU each process spent per sample. At the end the
records both ingest and the raw producer wrote are read back and checked to be the same event.

    .venv/bin/python bench/ingest_throughput.py --rows 20000 --batch 500 --rounds 9 --clients 4
    .venv/bin/python bench/ingest_throughput.py --broker kafka --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from refit import topics
from refit.datasets import sample_rows
from refit.events import SampleIngested, parse_event
from refit.kafka import Publisher, cloudevent_source, ensure_topics
from refit.settings import CommonSettings
from refit.specs import load_specs
from refit.stack import Stack, free_port, wait_http
from services.ingest.app import _ID_NAMESPACE, to_event
from services.ingest.bodies import SampleRow

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "config" / "models.yaml"
MODEL = "digits"
PATHS = ("raw", "publisher", "ingest")


class CpuMeter:
    """CPU seconds (user + system) each process spent between :meth:`start` and :meth:`stop`; ingest's
    with its worker processes (``--ingest-workers``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(sum(q.cpu_times()[:2]) for q in (p, *(p.children(recursive=True) if name == "ingest"
                                                                  else ())))
                for name, p in self.procs.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        return {name: t - self._start[name] for name, t in self._now().items()}


@dataclass
class Run:
    per_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float]


@dataclass
class Round:
    values: list[bytes]  # the SampleIngested bytes of this round's rows
    headers: list[list[tuple[str, bytes]]]  # and their CloudEvents headers, as ingest writes them
    bodies: list[bytes]  # the same rows as ingest batch requests


def make_round(round_no: int, count: int, batch: int) -> Round:
    """``count`` digits rows (the dataset repeated), keys no other round uses, in both forms."""
    base, spec = sample_rows(MODEL), load_specs(SPECS).get(MODEL)
    rows = [{**base[i % len(base)], "idempotency_key": f"bench-{round_no}-{i}"} for i in range(count)]
    events = [to_event(spec, SampleRow.model_validate(r)) for r in rows]
    bodies = [orjson.dumps({"model": MODEL, "samples": rows[i:i + batch]}) for i in range(0, count, batch)]
    source = cloudevent_source("refit-ingest")
    return Round([e.to_bytes() for e in events], [e.headers(source) for e in events], bodies)


async def timed_workers(jobs: list[Callable[[], Awaitable[None]]], workers: int) -> tuple[float, list[float]]:
    """Run ``jobs`` with ``workers`` in flight; wall seconds and each job's latency."""
    queue, latencies = list(reversed(jobs)), []

    async def worker() -> None:
        while queue:
            job = queue.pop()
            started = time.perf_counter()
            await job()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started, latencies


async def run_raw(producer: AIOKafkaProducer, values: list[bytes],
                  headers: list[list[tuple[str, bytes]]]) -> tuple[float, list[float]]:
    """Send every record (with the headers ingest writes), then await every acknowledgement."""
    key, started = MODEL.encode(), time.perf_counter()
    futures = [await producer.send(topics.SAMPLES, value=v, key=key, headers=h) for v, h in zip(values, headers)]
    await asyncio.gather(*futures)
    return time.perf_counter() - started, []


async def run_publisher(publisher: Publisher, values: list[bytes], headers: list[list[tuple[str, bytes]]],
                        batch: int, clients: int) -> tuple[float, list[float]]:
    records = [(topics.SAMPLES, MODEL.encode(), v, h) for v, h in zip(values, headers)]
    chunks = [records[i:i + batch] for i in range(0, len(records), batch)]
    return await timed_workers([lambda c=c: publisher.publish_many_raw(c) for c in chunks], clients)


async def run_ingest(client: httpx.AsyncClient, url: str, bodies: list[bytes],
                     clients: int) -> tuple[float, list[float]]:
    async def post(body: bytes) -> None:
        response = await client.post(f"{url}/v1/samples:batch", content=body,
                                     headers={"content-type": "application/json"})
        if response.status_code != 202:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")

    return await timed_workers([lambda b=b: post(b) for b in bodies], clients)


async def measure(url: str, bootstrap: str, cpu: CpuMeter, args: argparse.Namespace) -> list[dict[str, Run]]:
    settings = CommonSettings(bootstrap_servers=bootstrap, broker="embedded")
    await ensure_topics(settings)  # as the services create them, before the raw producer writes
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    publisher = Publisher(settings, client_id="bench")
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    await producer.start()
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            paths = {
                "raw": lambda r: run_raw(producer, r.values, r.headers),
                "publisher": lambda r: run_publisher(publisher, r.values, r.headers, args.batch, args.clients),
                "ingest": lambda r: run_ingest(client, url, r.bodies, args.clients),
            }
            warm = make_round(-1, args.batch * args.clients, args.batch)  # connections, metadata, caches
            for path in paths.values():
                await path(warm)
            rounds: list[dict[str, Run]] = []
            for n in range(args.rounds):
                data, runs = make_round(n, args.rows, args.batch), {}
                order = list(paths) if n % 2 == 0 else list(reversed(paths))  # no path always goes last
                for name in order:
                    path = paths[name]
                    cpu.start()
                    wall, latencies = await path(data)
                    runs[name] = Run(args.rows / wall, latencies, cpu.stop())
                rounds.append(runs)
                print(f"round {n + 1}: " + "  ".join(f"{k} {runs[k].per_s:,.0f}/s" for k in PATHS)
                      + f"  ingest/raw {runs['ingest'].per_s / runs['raw'].per_s:.2f}", flush=True)
            return rounds
    finally:
        await producer.stop()
        await publisher.close()


async def check_records(bootstrap: str, count: int) -> str:
    """Read back the first records (the warm-up: raw, publisher, then ingest) and compare them."""
    consumer = AIOKafkaConsumer(topics.SAMPLES, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(r.value or b"" for r in batch)
    finally:
        await consumer.stop()
    records = records[:count]
    if len(records) < count:
        return f"only {len(records)} of {count} records read back"
    raw, ingest = records[: count // 3], records[-(count // 3):]
    events = [parse_event(v, SampleIngested) for v in records]  # raises if one does not parse
    shapes = {tuple(orjson.loads(v)) for v in raw} | {tuple(orjson.loads(v)) for v in ingest}
    content = lambda es: sorted((e.model_dump(exclude={"event_id", "occurred_at"}) for e in es),  # noqa: E731
                                key=lambda d: d["sample_id"])
    same = [a == b for a, b in zip(content(events[: count // 3]), content(events[-(count // 3):]), strict=True)]
    stable = [e.sample_id == str(uuid.uuid5(_ID_NAMESPACE, f"{e.model}\x00{e.idempotency_key}")) for e in events]
    if len(shapes) != 1 or not all(same) or not all(stable):
        return (f"records differ: {len(shapes)} field layouts, {same.count(False)} rows with other values, "
                f"{stable.count(False)} sample ids that are not uuid5(namespace, model NUL key)")
    return (f"{len(records)} records parse as SampleIngested, ingest's equal the raw producer's but for "
            "event id and time, every sample id is uuid5(namespace, model NUL key)")


def report(rounds: list[dict[str, Run]], args: argparse.Namespace) -> None:
    median = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
    latencies = sorted(x for r in rounds for x in r["ingest"].latencies_s)
    pct = lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"\nrows per round and path {args.rows}, batch {args.batch}, clients {args.clients}, rounds {len(rounds)}")
    for name in PATHS:
        print(f"{name:10s} median {median(lambda r: r[name].per_s):>9,.0f} samples/s")
    for a, b in (("ingest", "raw"), ("ingest", "publisher")):
        ratios = [r[a].per_s / r[b].per_s for r in rounds]
        print(f"ratio {a}/{b}: median {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"ingest batch latency: p50 {pct(0.50):.1f} ms  p99 {pct(0.99):.1f} ms  ({len(latencies)} batches)")
    total = args.rows * len(rounds)
    for name in PATHS:
        spent = {proc: sum(r[name].cpu_s[proc] for r in rounds) for proc in rounds[0][name].cpu_s}
        print(f"CPU µs per sample, {name:9s}: " + "  ".join(f"{p} {1e6 * t / total:5.1f}" for p, t in spent.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="records per round and path (at most 100000)")
    parser.add_argument("--batch", type=int, default=500, help="rows per ingest request (ingest allows 1000)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (at most 20)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients / publisher calls")
    parser.add_argument("--time-limit", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--ingest-workers", type=int, default=1,
                        help="ingest worker processes (REFIT_INGEST_WORKERS; 0 = one per core)")
    parser.add_argument("--broker", choices=["embedded", "kafka"], default="embedded",
                        help="the embedded broker (default) or Apache Kafka (`make kafka`'s jars)")
    args = parser.parse_args()
    args.rows, args.rounds = min(args.rows, 100_000), min(args.rounds, 20)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(state_dir=Path(tmp), specs_path=SPECS, broker=args.broker,
                      env={"REFIT_INGEST_LOG_LEVEL": "WARNING", "REFIT_INGEST_WORKERS": str(args.ingest_workers)})
        (stack.state_dir / "logs").mkdir()
        try:
            stack.start_broker()
            stack.ports["ingest"] = free_port()
            stack.start_service("ingest")
            wait_http(f"{stack.url('ingest')}/healthz", proc=stack.procs["ingest"])
            print(f"{args.broker} broker {stack.bootstrap} (pid {stack.procs['broker'].pid}), "
                  f"ingest {stack.url('ingest')} (pid {stack.procs['ingest'].pid})", flush=True)
            cpu = CpuMeter({"bench": os.getpid(), "broker": stack.procs["broker"].pid,
                            "ingest": stack.procs["ingest"].pid})
            rounds = asyncio.run(asyncio.wait_for(measure(stack.url("ingest"), stack.bootstrap, cpu, args),
                                                  timeout=args.time_limit))
            check = asyncio.run(asyncio.wait_for(check_records(stack.bootstrap, 3 * args.batch * args.clients),
                                                 timeout=60))
        finally:
            stack.stop()
    report(rounds, args)
    print(f"check: {check}")


if __name__ == "__main__":
    main()
