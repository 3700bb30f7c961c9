"""A local Apache Kafka (KRaft) from the jars ``make kafka`` fetched, run with the machine's ``java``.

Two shapes: one combined broker and controller (``nodes=1``, formatted ``--standalone``), or a
cluster of ``nodes`` combined nodes on loopback with static voters. Each node keeps its log under
``state_dir/node-<id>``; the ports are written there too, so a restart on the same state dir
finds the same cluster (``refit up --broker kafka`` keeps its log across restarts). Ready means
the cluster's metadata lists every broker: a process that runs is not yet a broker that answers.
Every process is ours and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from refit.errors import RefitError
from refit.lifecycle import terminate

DEFAULT_LIB = Path(__file__).resolve().parents[2] / ".kafka" / "lib"


class KafkaStartError(RefitError, RuntimeError):
    """The local Kafka could not be formatted or did not become ready."""


def _free_port(preferred: int | None = None) -> int:
    from refit.stack import free_port

    return free_port(preferred)


def _properties(node: int, ports: dict[str, dict[int, int]], nodes: int, data: Path) -> str:
    broker, controller = ports["broker"][node], ports["controller"][node]
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data),
        # Internal topics: as many replicas as there are nodes (at most 3), and few partitions,
        # because creating the offsets topic's partitions is most of a first group join.
        "offsets.topic.replication.factor": str(min(nodes, 3)),
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": str(min(nodes, 3)),
        "transaction.state.log.min.isr": str(min(nodes, 2)),
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": str(min(nodes, 3)),
        "share.coordinator.state.topic.min.isr": str(min(nodes, 2)),
        "min.insync.replicas": str(min(nodes, 2)),
        "default.replication.factor": str(min(nodes, 3)),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",  # refit creates its own topics
    }
    if nodes == 1:
        lines["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{controller}"
    else:
        lines["controller.quorum.voters"] = ",".join(
            f"{n}@127.0.0.1:{ports['controller'][n]}" for n in sorted(ports["controller"]))
    return "".join(f"{k}={v}\n" for k, v in lines.items())


async def _brokers(bootstrap: str) -> set[int]:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "not yet" is expected while it starts
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        return {int(b["node_id"]) for b in (await admin.describe_cluster())["brokers"]}
    except Exception:  # any failure means "not yet"
        return set()
    finally:
        await admin.close()


@dataclass
class LocalKafka:
    """Start with :meth:`start`, stop with :meth:`stop`; nodes are numbered from 1."""

    state_dir: Path
    nodes: int = 1
    lib_dir: Path = DEFAULT_LIB
    heap_mb: int = 512
    preferred_port: int | None = None
    log_dir: Path | None = None  # where each node's log goes (default: its own directory)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, dict[int, int]] = field(default_factory=dict)
    cluster_id: str = ""

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports['broker'][n]}" for n in sorted(self.ports["broker"]))

    def port(self, node: int) -> int:
        return self.ports["broker"][node]

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Format on first use, start every node that is not running, wait until all are brokers."""
        if not any(self.lib_dir.glob("kafka_2.13-*.jar")):
            raise KafkaStartError(f"no Kafka jars in {self.lib_dir}: run `make kafka`")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._load_or_choose_layout()
        for node in range(1, self.nodes + 1):
            self._format(node)
        for node in range(1, self.nodes + 1):
            if node not in self.procs or self.procs[node].poll() is not None:
                self.start_node(node, wait=False)
        self.wait_ready(timeout_s)
        return self

    def _load_or_choose_layout(self) -> None:
        layout = self.state_dir / "layout.json"
        if layout.exists():
            saved = json.loads(layout.read_text())
            self.cluster_id = saved["cluster_id"]
            self.ports = {kind: {int(n): p for n, p in by_node.items()} for kind, by_node in saved["ports"].items()}
            return
        if not self.ports:
            first = _free_port(self.preferred_port)
            self.ports = {"broker": {1: first}, "controller": {}}
            for node in range(1, self.nodes + 1):
                if node > 1:
                    self.ports["broker"][node] = self._unused_port()
                self.ports["controller"][node] = self._unused_port()
        self.cluster_id = _cluster_id()
        layout.write_text(json.dumps({"cluster_id": self.cluster_id, "ports": self.ports}))

    def _unused_port(self) -> int:
        taken = {p for by_node in self.ports.values() for p in by_node.values()}
        while (port := _free_port()) in taken:
            pass
        return port

    def _node_dir(self, node: int) -> Path:
        return self.state_dir / f"node-{node}"

    def log_path(self, node: int) -> Path:
        return (self.log_dir or self._node_dir(node)) / f"kafka-{node}.log"

    def _format(self, node: int) -> None:
        data = self._node_dir(node) / "data"
        config = self._node_dir(node) / "server.properties"
        data.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(_properties(node, self.ports, self.nodes, data))
        if (data / "meta.properties").exists():
            return  # formatted before: keep the log
        command = [*self._java(256), "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config)]
        if self.nodes == 1:
            command.append("--standalone")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaStartError(f"formatting node {node} failed: {done.stdout}{done.stderr}")

    def _java(self, heap_mb: int) -> list[str]:
        # slf4j-simple (deploy/kafka/pom.xml): timestamps, and no dump of every config at each start.
        return ["java", f"-Xmx{heap_mb}m", f"-Xms{heap_mb}m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
                "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn",
                "-cp", f"{self.lib_dir}/*"]

    def start_node(self, node: int, wait: bool = True, timeout_s: float = 90.0) -> None:
        """Start one node on its formatted log (a restart keeps what it had)."""
        log = open(self.log_path(node), "ab")  # noqa: SIM115 - owned by the process
        self.procs[node] = subprocess.Popen(
            [*self._java(self.heap_mb), "kafka.Kafka", str(self._node_dir(node) / "server.properties")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Connect and ask: ready when the metadata lists every broker."""
        wanted = set(range(1, self.nodes + 1))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise KafkaStartError(f"Kafka node(s) {dead} exited: see {self.log_path(dead[0])}")
            if asyncio.run(_brokers(self.bootstrap)) >= wanted:
                return
            time.sleep(0.1)
        raise KafkaStartError(f"Kafka at {self.bootstrap} did not list brokers {sorted(wanted)} within {timeout_s}s")

    def node_answers(self, node: int) -> bool:
        """The node itself (not just the cluster) answers, and its metadata lists every broker."""
        return asyncio.run(_brokers(f"127.0.0.1:{self.port(node)}")) >= set(range(1, self.nodes + 1))

    def stop_node(self, node: int, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        proc = self.procs.pop(node, None)
        if proc is not None:
            terminate([proc], sig, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node at once: one by one, the last ones would wait for a quorum that is gone."""
        procs, self.procs = self.procs, {}
        terminate(procs.values(), timeout_s=timeout_s)


def _cluster_id() -> str:
    """A KRaft cluster id (16 random bytes, base64url) that does not start with "-": the storage tool
    would read such an id as an option (one start in 64 failed so)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate
