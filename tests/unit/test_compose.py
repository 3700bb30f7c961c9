"""docker-compose.yml, Dockerfile, .dockerignore and deploy/ (monitoring): the production shape, checked statically.

No Docker engine is needed: the files are parsed and held against the code they configure
(the settings classes, the service modules, the model specs), so a renamed setting, a
mistyped variable or a default secret fails here rather than in a container.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from refit.metrics import Metrics
from refit.settings import (
    LOCAL_API_TOKEN,
    LOCAL_SIGNING_KEY,
    InferenceSettings,
    IngestSettings,
    MonitorSettings,
    TrainerSettings,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "trainer": TrainerSettings,
    "monitor": MonitorSettings,
    "inference": InferenceSettings,
}
SERVICES = tuple(SETTINGS)
STATEFUL = ("ingest", "trainer", "monitor")  # inference replicas keep no state and must scale


# --- reading the files ------------------------------------------------------------------------

class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in with `<<:` may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_]\w*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))")


class MissingVariable(KeyError):
    pass


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$V``, ``${V}``, ``${V:-default}``, ``${V:?error}``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = variables.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_in(value: str) -> set[str]:
    return {m.group("name") or m.group("bare") for m in _VARIABLE.finditer(value) if m.group(0) != "$$"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), one list per stage."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if not stages:
            raise AssertionError(f"{instruction.keyword} before the first FROM")
        stages[-1].append(instruction)
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching ``path`` (or one of its parents) decides; ``!`` re-includes."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(c, cleaned) for c in candidates):
            excluded = not negated
    return excluded


# --- fixtures and small accessors -------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in docker-compose.yml"
    return data


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return dockerfile_stages(DOCKERFILE.read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def prefix(name: str) -> str:
    return str(SETTINGS[name].model_config["env_prefix"])


def setting(compose: dict[str, Any], name: str, field: str) -> str:
    env = env_of(compose["services"][name])
    key = prefix(name) + field
    assert key in env, f"{name} does not set {key}"
    return env[key]


def kafka_service(compose: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in compose["services"].items() if str(s.get("image", "")).startswith("apache/kafka")]
    assert len(found) == 1, f"expected one apache/kafka service, found {[n for n, _ in found]}"
    return found[0]


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,…`` → {NAME: (host, port)}."""
    out: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def named_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(volume name, container path) of each named-volume mount (bind mounts are skipped)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
            if volume.get("type", "volume") != "volume":
                continue
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        if source and not source.startswith(("/", ".", "~", "$")):
            yield source, target


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host part, container port) of each published port, in short or long syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        out.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def port_range(host: str) -> range:
    low, _, high = host.partition("-")
    return range(int(low), int(high or low) + 1)


def dummy_variables(compose_text: str) -> dict[str, str]:
    return {name: f"dummy-{name.lower()}-for-tests" for name in variables_in(compose_text)}


# --- the YAML itself ---------------------------------------------------------------------------

def test_strict_loader_refuses_duplicate_keys_but_allows_merge_overrides() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'A'"):
        load_yaml("env:\n  A: 1\n  A: 2\n")
    merged = load_yaml("base: &b {x: 1, y: 1}\nthing:\n  <<: *b\n  y: 2\n")
    assert merged["thing"] == {"x": 1, "y": 2}


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-fallback}/$B/$$C", {"B": "b"}) == "fallback/b/$C"
    assert interpolate("${A:?say why}", {"A": "set"}) == "set"
    with pytest.raises(MissingVariable, match="say why"):
        interpolate("${A:?say why}", {})
    with pytest.raises(MissingVariable):
        interpolate("${A:?say why}", {"A": ""})


def test_compose_file_parses_and_has_the_five_services(compose: dict[str, Any]) -> None:
    kafka, _ = kafka_service(compose)
    default = {name for name, service in compose["services"].items() if not service.get("profiles")}
    assert default == {kafka, *SERVICES}, "a plain `docker compose up` runs Kafka and the four services"


# --- Kafka -------------------------------------------------------------------------------------

def test_kafka_is_apache_kafka_in_kraft_mode(compose: dict[str, Any]) -> None:
    name, kafka = kafka_service(compose)
    assert re.fullmatch(r"apache/kafka:[34]\.\d+\.\d+", kafka["image"]), "pin a real 3.x/4.x release tag"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller_names = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    bound = listeners(env["KAFKA_LISTENERS"])
    voters = [v.strip() for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")]
    assert len(voters) == 1, "a single combined node is its only voter"
    voter_id, _, voter_address = voters[0].partition("@")
    voter_host, _, voter_port = voter_address.rpartition(":")
    assert voter_id == node_id
    assert voter_host in {name, kafka.get("hostname")}
    assert int(voter_port) in {bound[c][1] for c in controller_names}, "voters are reached on a controller listener"


def test_kafka_has_no_zookeeper(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "zookeeper" not in name.lower() and "zookeeper" not in str(service.get("image", "")).lower()
        assert not [k for k in env_of(service) if "ZOOKEEPER" in k.upper()], f"{name} configures ZooKeeper"


def test_kafka_listeners_are_consistent(compose: dict[str, Any]) -> None:
    _, kafka = kafka_service(compose)
    env = env_of(kafka)
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller_names = set(env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    assert set(bound) <= set(protocols), "every listener needs a security protocol"
    assert controller_names <= set(bound)
    assert not controller_names & set(advertised), "controller listeners are never advertised"
    for listener, (_, port) in advertised.items():
        assert bound[listener][1] == port, f"{listener} is advertised on a port it does not bind"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in set(advertised)


def test_kafka_single_node_settings(compose: dict[str, Any]) -> None:
    _, kafka = kafka_service(compose)
    env = env_of(kafka)
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", f"{key} must be 1 on one node"
    assert "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS" in env
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false", "refit creates its own topics"
    mounts = dict((target, source) for source, target in named_mounts(kafka))
    assert env["KAFKA_LOG_DIRS"] in mounts, "the log dir must be on a named volume"


def test_kafka_healthcheck_asks_the_broker(compose: dict[str, Any]) -> None:
    _, kafka = kafka_service(compose)
    test = kafka["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    internal = listeners(env_of(kafka)["KAFKA_LISTENERS"])[env_of(kafka)["KAFKA_INTER_BROKER_LISTENER_NAME"]][1]
    assert "kafka-broker-api-versions.sh" in command
    assert f"--bootstrap-server localhost:{internal}" in command


# --- the four services -------------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_its_module(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert argv == ["python", "-m", f"services.{name}"]
    assert importlib.util.find_spec(f"services.{name}.__main__") is not None, f"services.{name} is not runnable"


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_is_real_settings(compose: dict[str, Any], name: str) -> None:
    env = env_of(compose["services"][name])
    fields = SETTINGS[name].model_fields
    for key in env:
        assert key.startswith(prefix(name)), f"{name}: {key} is not read by {SETTINGS[name].__name__}"
        assert key[len(prefix(name)):].lower() in fields, f"{name}: {key} is no field of {SETTINGS[name].__name__}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_production_shaped(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert setting(compose, name, "ENVIRONMENT") == "production"
    assert setting(compose, name, "HOST") == "0.0.0.0"  # noqa: S104 - inside its container
    assert setting(compose, name, "BROKER") == "kafka", "Apache Kafka: idempotence, normal sessions, no recovery hacks"
    assert "container_name" not in service
    assert service["restart"] == "unless-stopped"
    build = service["build"]
    assert (build if isinstance(build, str) else build.get("context", ".")) in {".", "./"}
    kafka, _ = kafka_service(compose)
    assert service["depends_on"][kafka]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_bootstrap_servers_are_kafkas_internal_listener(compose: dict[str, Any], name: str) -> None:
    kafka_name, kafka = kafka_service(compose)
    env = env_of(kafka)
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    host, port = listeners(env["KAFKA_ADVERTISED_LISTENERS"])[internal]
    assert host in {kafka_name, kafka.get("hostname")}
    assert setting(compose, name, "BOOTSTRAP_SERVERS") == f"{host}:{port}"


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_probes_the_service_port(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    port = setting(compose, name, "PORT")
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "exec form: the slim image has no curl and needs no shell"
    assert test[1:3] == ["python", "-c"] and "urllib.request" in test[3]
    assert f"http://127.0.0.1:{port}/healthz" in test[3] or f"http://localhost:{port}/healthz" in test[3]
    container_ports = {c for _, c in published(service)} | {str(p) for p in service.get("expose") or []}
    assert container_ports == {port}, f"{name} publishes or exposes {container_ports}, listens on {port}"


def test_public_ports_are_published_and_do_not_collide(compose: dict[str, Any]) -> None:
    hosts: dict[str, range] = {}
    for name in ("ingest", "monitor", "inference"):
        ports = published(compose["services"][name])
        assert len(ports) == 1, f"{name} must be published once"
        host, container = ports[0]
        assert host.split("-")[0] == setting(compose, name, "PORT") == container
        hosts[name] = port_range(host)
    taken: set[int] = set()
    for name, ports in hosts.items():
        assert not taken & set(ports), f"{name}'s host ports collide"
        taken |= set(ports)


def bound_addresses(service: dict[str, Any], variables: Mapping[str, str]) -> list[str]:
    """The host address each published port binds, after compose's interpolation ("" = every interface)."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append(interpolate(str(port.get("host_ip", "")), variables))
            continue
        parts = interpolate(str(port), variables).split("/")[0].split(":")
        out.append(parts[0] if len(parts) == 3 else "")
    return out


def test_every_published_port_binds_to_loopback_by_default(compose: dict[str, Any]) -> None:
    """Issue 17, defect 18: ingest, monitor and inference were published on every host interface."""
    for name, service in compose["services"].items():
        assert set(bound_addresses(service, {})) <= {"127.0.0.1"}, f"{name} publishes beyond loopback"
    assert all(bound_addresses(compose["services"][n], {}) == ["127.0.0.1"] for n in ("ingest", "monitor", "inference"))


def test_exposing_the_stack_is_one_deliberate_variable(compose: dict[str, Any]) -> None:
    exposed = {"REFIT_BIND_ADDRESS": "0.0.0.0"}
    for name, service in compose["services"].items():
        wanted = ["0.0.0.0"] if name in ("ingest", "monitor", "inference") else ["127.0.0.1"] * len(
            service.get("ports") or [])  # the broker, Prometheus and Grafana have no authentication
        assert bound_addresses(service, exposed) == wanted, name
    operations = (REPO / "docs" / "operations.md").read_text()
    assert "REFIT_BIND_ADDRESS" in operations and "REFIT_BIND_ADDRESS" in COMPOSE.read_text()


def test_ingest_requires_producer_keys(compose: dict[str, Any]) -> None:
    """Issue 17, defect 18: compose ran ingest with no key, open to anyone who reached the port."""
    value = setting(compose, "ingest", "API_KEYS")
    with pytest.raises(MissingVariable, match="REFIT_INGEST_API_KEY"):
        interpolate(value, {})
    assert json.loads(interpolate(value, {"REFIT_INGEST_API_KEY": "k1"})) == ["k1"]
    with pytest.raises(ValueError, match="api_keys must list at least one producer key outside local mode"):
        IngestSettings(environment="production", api_keys=())
    with pytest.raises(ValueError, match="api_keys must list at least one producer key"):
        IngestSettings(environment="production", api_keys=[""])
    assert IngestSettings(environment="local").api_keys == ()  # local mode may stay open


def test_inference_can_scale(compose: dict[str, Any]) -> None:
    inference = compose["services"]["inference"]
    assert "container_name" not in inference and "hostname" not in inference
    (host, _), = published(inference)
    assert len(port_range(host)) >= 2, "publish a host port range so `--scale inference=N` gets N ports"
    assert not list(named_mounts(inference)), "replicas must not share a state volume"
    assert "--scale inference=" in COMPOSE.read_text(), "document how to scale inference"


def test_topics_are_created_alike_by_every_service(compose: dict[str, Any]) -> None:
    _, kafka = kafka_service(compose)
    brokers = len(env_of(kafka)["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    partitions = {setting(compose, name, "TOPIC_PARTITIONS") for name in SERVICES}
    assert len(partitions) == 1, f"whichever service starts first creates the topics: {partitions}"
    assert int(partitions.pop()) > 1, "several partitions, so one model's order is kept by key, not by topic"
    for name in SERVICES:
        replication = int(env_of(compose["services"][name]).get(prefix(name) + "TOPIC_REPLICATION", "1"))
        assert 1 <= replication <= brokers


# --- volumes -----------------------------------------------------------------------------------

def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    used = {source for service in compose["services"].values() for source, _ in named_mounts(service)}
    declared = set(compose.get("volumes") or {})
    assert used <= declared, f"undeclared volumes: {used - declared}"
    assert declared <= used, f"declared but unused volumes: {declared - used}"


@pytest.mark.parametrize("name", STATEFUL)
def test_state_dir_is_on_its_own_named_volume(compose: dict[str, Any], name: str) -> None:
    mounts = {target: source for source, target in named_mounts(compose["services"][name])}
    state_dir = setting(compose, name, "STATE_DIR")
    assert state_dir in mounts, f"{name}'s STATE_DIR {state_dir} is not on a named volume"
    others = {source for other in SERVICES if other != name
              for source, target in named_mounts(compose["services"][other])
              if target == setting(compose, other, "STATE_DIR")}
    assert mounts[state_dir] not in others, f"{name} shares its state volume"


def test_trainer_and_monitor_share_the_artifact_volume(compose: dict[str, Any]) -> None:
    sources = set()
    for name in ("trainer", "monitor"):
        mounts = {target: source for source, target in named_mounts(compose["services"][name])}
        artifact_dir = setting(compose, name, "ARTIFACT_DIR")
        assert artifact_dir in mounts, f"{name}'s ARTIFACT_DIR is not on a named volume"
        sources.add((mounts[artifact_dir], artifact_dir))
    assert len(sources) == 1, f"trainer and monitor must see the same artifacts: {sources}"


# --- how the services find each other ----------------------------------------------------------

@pytest.mark.parametrize(("name", "field"), [("inference", "MONITOR_URL"), ("monitor", "PUBLIC_URL")])
def test_monitor_is_reached_by_its_service_name_and_port(compose: dict[str, Any], name: str, field: str) -> None:
    url = urlsplit(setting(compose, name, field))
    assert url.scheme == "http"
    assert url.hostname == "monitor" and "monitor" in compose["services"]
    assert str(url.port) == setting(compose, "monitor", "PORT")


# --- secrets -----------------------------------------------------------------------------------

REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]+\}")


@pytest.mark.parametrize("name", SERVICES)
def test_secrets_are_required_interpolations(compose: dict[str, Any], name: str) -> None:
    secrets = [f for f, info in SETTINGS[name].model_fields.items() if info.annotation is SecretStr]
    for field in secrets:
        value = setting(compose, name, field.upper())
        assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {field} must be `${{VAR:?message}}`, not {value!r}"


def test_monitor_and_inference_share_the_signing_key_variable(compose: dict[str, Any]) -> None:
    names = {variables_in(setting(compose, n, "DECISION_SIGNING_KEY")).pop() for n in ("monitor", "inference")}
    assert len(names) == 1, f"inference cannot verify decisions signed with another key: {names}"


OPTIONAL_MONITOR_VARIABLES = {"REFIT_MONITOR_MLFLOW_TRACKING_URI"}  # off by default, not a secret


def test_no_local_default_secret_appears() -> None:
    text = COMPOSE.read_text()
    assert LOCAL_SIGNING_KEY not in text and LOCAL_API_TOKEN not in text


def test_compose_refuses_to_start_without_the_secrets(compose: dict[str, Any]) -> None:
    for name, value in env_of(compose["services"]["monitor"]).items():
        if variables_in(value) and name not in OPTIONAL_MONITOR_VARIABLES:
            with pytest.raises(MissingVariable):
                interpolate(value, {})


@pytest.mark.parametrize("name", SERVICES)
def test_settings_validate_from_the_compose_environment(
        compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variables = dummy_variables(COMPOSE.read_text())
    env = {key: interpolate(value, variables) for key, value in env_of(compose["services"][name]).items()}
    for key in list(os.environ):
        if key.upper().startswith(prefix(name)):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings: Any = SETTINGS[name]()
    assert settings.environment == "production"
    assert settings.port == int(env[prefix(name) + "PORT"])
    assert settings.bootstrap_servers == env[prefix(name) + "BOOTSTRAP_SERVERS"]
    for field, info in SETTINGS[name].model_fields.items():
        if info.annotation is SecretStr:
            assert getattr(settings, field).get_secret_value().startswith("dummy-"), f"{field} kept its default"


# --- the image ---------------------------------------------------------------------------------

def final_stage(stages: list[list[Instruction]]) -> list[Instruction]:
    assert stages, "the Dockerfile has no FROM"
    return stages[-1]


def workdir(stage: list[Instruction]) -> PurePosixPath:
    dirs = [i.args for i in stage if i.keyword == "WORKDIR"]
    assert dirs, "the runtime stage sets no WORKDIR"
    return PurePosixPath(dirs[-1])


def test_image_is_python_slim_matching_the_project(stages: list[list[Instruction]]) -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=\s*3\.(\d+)", requires)
    assert minor is not None
    for stage in stages:
        image = stage[0].args.split()[0]
        assert re.fullmatch(rf"python:3\.{minor.group(1)}-slim(-\w+)?", image), f"{image} vs {requires}"


def test_image_runs_as_non_root_with_no_entrypoint(stages: list[list[Instruction]]) -> None:
    stage = final_stage(stages)
    users = [i for i in stage if i.keyword == "USER"]
    assert users, "the runtime stage never leaves root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    last_run = max((n for n, i in enumerate(stage) if i.keyword == "RUN"), default=-1)
    assert stage.index(users[-1]) > last_run, "USER comes after the installs"
    assert not [i for i in stage if i.keyword == "ENTRYPOINT"], "compose's command must run as given"


def test_image_is_lean(stages: list[list[Instruction]]) -> None:
    stage = final_stage(stages)
    env = " ".join(i.args for i in stage if i.keyword == "ENV")
    assert re.search(r"PYTHONDONTWRITEBYTECODE=1", env)
    no_cache = re.search(r"PIP_NO_CACHE_DIR=(1|true|on)", env) is not None
    for instruction in (i for s in stages for i in s if i.keyword == "RUN"):
        for pip in re.findall(r"pip (?:install|wheel)[^&;]*", instruction.args):
            assert no_cache or "--no-cache-dir" in pip, f"pip keeps its cache: {pip}"


def test_image_installs_the_project_from_pyproject(stages: list[list[Instruction]]) -> None:
    copies = [i for s in stages for i in s if i.keyword == "COPY" and not i.args.startswith("--from")]
    sources = {src.rstrip("/") for i in copies for src in i.args.split()[:-1] if not src.startswith("--")}
    assert {"pyproject.toml", "libs", "services", "config"} <= sources
    runs = " ".join(i.args for s in stages for i in s if i.keyword == "RUN")
    assert re.search(r"pip (install|wheel)\b[^&;]* \.(\s|$)", runs), "the project is installed with pip from ."
    for src in sources:
        if not any(ch in src for ch in "*?["):
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"


def test_image_paths_match_the_compose_environment(
        compose: dict[str, Any], stages: list[list[Instruction]]) -> None:
    stage = final_stage(stages)
    config_copy = [i for i in stage if i.keyword == "COPY" and i.args.split()[0].rstrip("/") == "config"]
    assert config_copy, "the runtime stage does not copy config/"
    target = PurePosixPath(config_copy[0].args.split()[-1])
    config_dir = target if target.is_absolute() else workdir(stage) / target
    runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    for name in SERVICES:
        specs = PurePosixPath(setting(compose, name, "SPECS_PATH"))
        assert specs.parent == config_dir and (REPO / "config" / specs.name).is_file(), f"{name}: {specs}"
        env = env_of(compose["services"][name])
        for field in ("STATE_DIR", "ARTIFACT_DIR"):
            if prefix(name) + field in env:
                path = env[prefix(name) + field]
                assert path in runs, f"{path} is not created in the image (volume ownership for the non-root user)"


def test_dockerignore_keeps_the_context_to_what_the_image_needs(stages: list[list[Instruction]]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    for path in (".git", ".venv", ".env", ".refit", "tests", "libs/refit/__pycache__", "refit.egg-info"):
        assert dockerignore_excludes(patterns, path), f"{path} would be sent to the builder"
    copies = [i for s in stages for i in s if i.keyword == "COPY" and not i.args.startswith("--from")]
    for src in {src.rstrip("/") for i in copies for src in i.args.split()[:-1]}:
        if not any(ch in src for ch in "*?["):
            assert not dockerignore_excludes(patterns, src), f"COPY {src} is excluded by .dockerignore"


# --- the monitoring profile: Prometheus and Grafana -------------------------------------------

PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "refit.yml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "refit.json"
MONITORING_DOC = REPO / "docs" / "monitoring.md"
MONITORING = ("prometheus", "grafana")

# What each kind of metric is exported as (prometheus_client also adds `_created`, unused here).
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
METRIC_NAME = re.compile(r"\brefit_[a-z0-9_]*[a-z0-9]\b")


@dataclass(frozen=True)
class MetricInfo:
    family: str            # the name in the registry (counters without `_total`)
    kind: str              # counter, gauge, histogram
    labels: tuple[str, ...]

    @property
    def samples(self) -> tuple[str, ...]:
        return tuple(self.family + suffix for suffix in SAMPLE_SUFFIXES[self.kind])

    @property
    def query_name(self) -> str:
        """The name a reader looks for: ``…_total`` for counters, the base name otherwise."""
        return self.samples[0] if self.kind == "counter" else self.family


def refit_metrics() -> dict[str, MetricInfo]:
    """Every metric a refit service exports, read from a fresh :class:`refit.metrics.Metrics`."""
    metrics = Metrics("t")
    found = {}
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase):
            info = MetricInfo(wrapper._name, wrapper._type, tuple(wrapper._labelnames))
            assert info.kind in SAMPLE_SUFFIXES, f"{info.family}: no rule for a {info.kind}"
            found[info.family] = info
    families = {family.name: family.type for family in metrics.registry.collect()}
    assert families == {name: info.kind for name, info in found.items()}, "a metric is registered but not kept"
    return found


def exported_names() -> dict[str, MetricInfo]:
    """Sample name (what PromQL selects) → its metric."""
    return {sample: info for info in refit_metrics().values() for sample in info.samples}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each bind mount from a relative path, short or long syntax."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                out.append((volume["source"], volume["target"], "ro" if volume.get("read_only") else "rw"))
            continue
        parts = volume.split(":")
        if parts[0].startswith("."):
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def mount_of(service: dict[str, Any], source: Path) -> str:
    """The container path where ``source`` (a path in the repository) is bind-mounted."""
    targets = [t for s, t, _ in bind_mounts(service) if (REPO / s).resolve() == source.resolve()]
    assert len(targets) == 1, f"{source.relative_to(REPO)} is mounted {len(targets)} times"
    return targets[0]


def flags(service: dict[str, Any]) -> dict[str, str]:
    command = service.get("command") or []
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert match, f"not a simple Prometheus duration: {duration}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    data = load_yaml(PROMETHEUS_CONFIG.read_text())
    assert isinstance(data, dict) and isinstance(data.get("scrape_configs"), list)
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def scrape_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == name]
    assert len(jobs) == 1, f"expected one scrape job {name!r}, found {len(jobs)}"
    return jobs[0]


def provisioned_datasource() -> dict[str, Any]:
    sources = load_yaml(DATASOURCES.read_text())["datasources"]
    assert len(sources) == 1, "one datasource: the compose Prometheus"
    return sources[0]


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def queries_of(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [(panel["title"], target["expr"]) for panel in panels_of(dashboard) for target in panel.get("targets") or []]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or "")


def test_monitoring_is_an_opt_in_profile(compose: dict[str, Any]) -> None:
    profiled = {name: service.get("profiles") for name, service in compose["services"].items()
                if "profiles" in service}
    assert profiled == {**{name: ["monitoring"] for name in MONITORING}, "mlflow": ["mlflow"]}, (
        "only prometheus and grafana have a profile, `monitoring`, and mlflow its own: a plain `docker compose up` "
        "is unchanged")


def test_mlflow_is_an_opt_in_profile_the_monitor_is_pointed_at_by_one_variable(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert mlflow["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"  # the version tests/e2e/test_mlflow.py runs
    assert mlflow["ports"] == ["127.0.0.1:5000:5000"] and "--serve-artifacts" in mlflow["command"]
    assert "mlflow-data:/mlflow" in mlflow["volumes"] and "mlflow-data" in compose["volumes"]
    uri = env_of(compose["services"]["monitor"])["REFIT_MONITOR_MLFLOW_TRACKING_URI"]
    assert interpolate(uri, {}) == ""  # off by default: MonitorSettings reads "" as unset
    assert interpolate(uri, {"REFIT_MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == "http://mlflow:5000"
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "mlflow==3.17.2" in pins["optional-dependencies"]["test"]
    assert "mlflow-skinny==3.17.2" in pins["optional-dependencies"]["mlflow"]  # installed in the image


def test_every_image_is_pinned_to_a_release(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "image" not in service:
            continue
        repository, _, tag = str(service["image"]).rpartition(":")
        assert repository and "/" not in tag, f"{name}: {service['image']} has no tag"
        assert tag != "latest" and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag!r}"
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", compose["services"]["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", compose["services"]["grafana"]["image"])


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_mounts_are_files_of_the_repository_read_only(compose: dict[str, Any], name: str) -> None:
    mounts = bind_mounts(compose["services"][name])
    assert mounts, f"{name} mounts no configuration"
    for source, target, mode in mounts:
        assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
        assert (REPO / source).resolve().is_relative_to(REPO / "deploy"), f"{name}: mount from deploy/ only"
        assert mode == "ro", f"{name}: {source} → {target} must be read-only"


@pytest.mark.parametrize(("name", "port"), [("prometheus", "9090"), ("grafana", "3000")])
def test_monitoring_ports_are_loopback_only(compose: dict[str, Any], name: str, port: str) -> None:
    ports = compose["services"][name].get("ports") or []
    assert ports == [f"127.0.0.1:{port}:{port}"], f"{name} has no authentication of its own: publish on loopback"


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_requires_no_variable(compose: dict[str, Any], name: str) -> None:
    """Compose interpolates the whole file before applying profiles: a `${VAR:?…}` in a profiled
    service would make a plain `docker compose up` demand it too."""
    assert not variables_in(yaml.safe_dump(compose["services"][name])), f"{name} uses a variable"


def test_prometheus_reads_the_repository_config_and_keeps_its_data(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    options = flags(prometheus)
    assert options.get("--config.file") == mount_of(prometheus, PROMETHEUS_CONFIG)
    tsdb = options.get("--storage.tsdb.path")
    assert tsdb in {target for _, target in named_mounts(prometheus)}, "the TSDB must be on a named volume"
    assert "--storage.tsdb.retention.time" in options or "--storage.tsdb.retention.size" in options
    test = prometheus["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:9090/-/ready" in test


def test_grafana_starts_once_prometheus_is_healthy(compose: dict[str, Any]) -> None:
    assert compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_grafana_is_read_only_and_needs_no_password(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true", "no admin with the default password"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env


# --- deploy/prometheus.yml ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVICES)
def test_prometheus_scrapes_every_service_where_compose_runs_it(
        compose: dict[str, Any], prometheus_config: dict[str, Any], name: str) -> None:
    job = scrape_job(prometheus_config, name)
    assert job.get("metrics_path") == "/metrics"
    assert job.get("scheme", "http") == "http"
    port = setting(compose, name, "PORT")
    addresses = [tuple(target.rsplit(":", 1)) for static in job.get("static_configs") or []
                 for target in static["targets"]]
    addresses += [(host, str(dns["port"])) for dns in job.get("dns_sd_configs") or [] for host in dns["names"]]
    assert addresses == [(name, port)], f"{name} listens on {name}:{port} in the compose network, not {addresses}"
    labels = {k: v for static in job.get("static_configs") or [] for k, v in (static.get("labels") or {}).items()}
    labels |= {rule["target_label"]: rule["replacement"] for rule in job.get("relabel_configs") or []
               if rule.get("action", "replace") == "replace" and not rule.get("source_labels")}
    assert labels.get("service") == name, f"label {name}'s targets with service={name}"


def test_prometheus_finds_every_inference_replica(prometheus_config: dict[str, Any]) -> None:
    job = scrape_job(prometheus_config, "inference")
    assert not job.get("static_configs"), "a static target would reach one replica of many"
    (dns,) = job["dns_sd_configs"]
    assert dns["type"] == "A", "compose's DNS answers A records, one per replica (no SRV records)"
    assert dns["names"] == ["inference"], "`tasks.<service>` exists only in Swarm"
    assert seconds(dns.get("refresh_interval", "30s")) <= 60


def test_prometheus_scrape_pace(prometheus_config: dict[str, Any]) -> None:
    interval = seconds(prometheus_config["global"]["scrape_interval"])
    assert 5 <= interval <= 60
    assert seconds(prometheus_config["global"].get("scrape_timeout", "10s")) <= interval
    for job in prometheus_config["scrape_configs"]:
        assert "scrape_interval" not in job or seconds(job["scrape_interval"]) <= 60, job["job_name"]


def test_services_serve_metrics_at_the_scraped_path(prometheus_config: dict[str, Any]) -> None:
    app = FastAPI()
    Metrics("t").mount(app)
    paths = {getattr(route, "path", None) for route in app.routes}
    for job in prometheus_config["scrape_configs"]:
        assert job["metrics_path"] in paths


# --- deploy/grafana ---------------------------------------------------------------------------

def test_grafana_datasource_is_the_compose_prometheus(compose: dict[str, Any]) -> None:
    source = provisioned_datasource()
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source.get("uid")
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and "prometheus" in compose["services"]
    assert (str(url.port), str(url.port)) in published(compose["services"]["prometheus"])
    assert source["jsonData"]["timeInterval"] == load_yaml(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]


def test_grafana_provisioning_and_dashboards_are_mounted_where_grafana_reads_them(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert mount_of(grafana, GRAFANA_DIR / "provisioning") == "/etc/grafana/provisioning"
    (provider,) = load_yaml(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mount_of(grafana, DASHBOARD.parent)
    assert provider.get("allowUiUpdates") is False, "dashboards are code: the file is the truth"
    home = PurePosixPath(env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == provider["options"]["path"] and (DASHBOARD.parent / home.name).is_file()


def test_dashboard_is_well_formed(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    panels = panels_of(dashboard)
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"{panel['title']} queries nothing"
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refIds"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "model" in variables and variables["model"]["type"] == "query"
    assert variables["model"].get("includeAll") and variables["model"].get("multi")


def test_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    uid = provisioned_datasource()["uid"]
    users = [p for p in panels_of(dashboard) if p["type"] != "row"] + dashboard["templating"]["list"]
    users += [t for p in panels_of(dashboard) for t in p.get("targets") or []]
    for user in users:
        assert user.get("datasource") == {"type": "prometheus", "uid": uid}, user.get("title", user.get("name"))


def test_dashboard_queries_only_metrics_refit_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    texts = [expr for _, expr in queries_of(dashboard)]
    texts += [variable_query(v) for v in dashboard["templating"]["list"]]
    used = {name for text in texts for name in METRIC_NAME.findall(text)}
    assert used, "the dashboard queries no refit metric"
    assert used <= set(exported), f"not exported by refit.metrics.Metrics: {sorted(used - set(exported))}"


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    used = {name for _, expr in queries_of(dashboard) for name in METRIC_NAME.findall(expr)}
    wanted = {
        "refit_samples_ingested_total", "refit_samples_rejected_total", "refit_dead_lettered_total",
        "refit_trainings_total", "refit_training_duration_seconds_bucket", "refit_retraining_triggered_total",
        "refit_decisions_total", "refit_champion_version", "refit_model_age_seconds", "refit_live_metric",
        "refit_inference_requests_total", "refit_inference_latency_seconds_bucket", "refit_swaps_total",
        "refit_swap_duration_seconds_bucket",
    }
    assert wanted <= used, f"no panel shows {sorted(wanted - used)}"
    quantiles = {expr for _, expr in queries_of(dashboard) if "refit_inference_latency_seconds_bucket" in expr}
    assert {q for q in quantiles if "histogram_quantile(0.5," in q} and {q for q in quantiles if "(0.99," in q}


def test_dashboard_reads_histograms_through_their_buckets(dashboard: dict[str, Any]) -> None:
    for title, expr in queries_of(dashboard):
        quantiles = expr.count("histogram_quantile(")
        assert quantiles == len(re.findall(r"_bucket\b", expr)), f"{title}: a quantile per _bucket series"
        if quantiles:
            assert re.search(r"\bby \([^)]*\ble\b[^)]*\)", expr), f"{title}: aggregate the buckets by `le`"
            assert "rate(" in expr, f"{title}: a quantile of cumulative counts means nothing"


def test_dashboard_follows_the_model_variable(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    for title, expr in queries_of(dashboard):
        for match in METRIC_NAME.finditer(expr):
            if "model" not in exported[match.group(0)].labels:
                continue
            selector = re.match(r"\{([^}]*)\}", expr[match.end():])
            assert selector and 'model=~"$model"' in selector.group(1), f"{title}: {match.group(0)} ignores $model"


# --- docs/monitoring.md ------------------------------------------------------------------------

def test_monitoring_doc_describes_every_metric_with_its_labels() -> None:
    lines = MONITORING_DOC.read_text().splitlines()
    for info in refit_metrics().values():
        rows = [line for line in lines if line.startswith(f"| `{info.query_name}` |")]
        assert len(rows) == 1, f"docs/monitoring.md: one table row for {info.query_name}, found {len(rows)}"
        for label in info.labels:
            assert f"`{label}`" in rows[0], f"docs/monitoring.md: {info.query_name} does not name its label {label}"
        assert info.kind in rows[0], f"docs/monitoring.md: say that {info.query_name} is a {info.kind}"


def test_monitoring_doc_tells_how_to_run_the_profile() -> None:
    text = MONITORING_DOC.read_text()
    assert "--profile monitoring" in text
    for path in (PROMETHEUS_CONFIG, DASHBOARD):
        assert str(path.relative_to(REPO)) in text

