"""Configuration at run time: the sections of a model's spec an operator replaces while it runs.

The monitor owns it (``PUT /v1/models/{name}/config/{section}``). A change is validated as one
whole spec (the spec file's, with every section set so far), numbered per model (its config
version: 0 is the spec file as is), told to the trainer (``ModelConfigured`` on
refit.retrain-requests, which it follows for the training section), stored, and applied in place
to the specs every part of the monitor reads. Every decision names the version it was made under,
and every candidate the version it was trained under.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from refit.events import ModelConfigured
from refit.kafka import Publisher
from refit.specs import ModelSpec, ModelSpecs
from services.monitor.trigger_store import TriggerStore

log = structlog.get_logger("monitor")


class RunConfig:
    """Per model: the sections set over the spec file, and their version."""

    def __init__(self, specs: ModelSpecs, store: TriggerStore, publisher: Publisher) -> None:
        self.specs, self.store, self.publisher = specs, store, publisher
        self.files = specs.model_copy(deep=True)  # the spec file's, which every change is made over
        for name in specs.names():
            version, sections = self.state(name)
            try:
                specs.put(self.files.get(name).configured(sections))
            except (ValidationError, ValueError) as exc:  # the spec file changed under it: its own values serve
                log.error("run-time configuration no longer fits the spec file; the spec file's serves",
                          model=name, config_version=version, error=str(exc))

    def state(self, model: str) -> tuple[int, dict[str, Any]]:
        """(config version, the sections set over the spec file)."""
        saved = self.store.get(f"runconfig:{model}")
        if saved is not None:
            return int(saved["version"]), dict(saved["sections"])
        triggers = self.store.get(f"config:{model}")  # a trigger configuration stored by an earlier version
        return (1, {"triggers": triggers}) if triggers is not None else (0, {})

    def version(self, model: str) -> int:
        return self.state(model)[0]

    def describe(self, model: str) -> dict[str, Any]:
        """The model's effective configuration, its version and which sections are set over the spec file."""
        version, sections = self.state(model)
        spec = self.specs.get(model)
        return {"model": model, "version": version, "overridden": sorted(sections),
                "source": "override" if "triggers" in sections else "spec",  # of the triggers, as before
                "triggers": spec.triggers.model_dump(mode="json"),
                "safeguard": spec.safeguard.model_dump(mode="json", by_alias=True),
                "training": spec.training.model_dump(mode="json")}

    async def set(self, model: str, section: str, value: dict[str, Any] | None,
                  requested_by: str | None = None) -> ModelSpec:
        """Set one section (``None``: back to the spec file's); :class:`ValidationError` or
        :class:`ValueError` if the whole spec it makes is not valid, and then nothing changes."""
        version, sections = self.state(model)
        wanted = {k: v for k, v in sections.items() if k != section}
        if value is not None:
            wanted[section] = value
        spec = self.files.get(model).configured(wanted)
        event = ModelConfigured(model=model, config_version=version + 1, sections=wanted, requested_by=requested_by)
        await self.publisher.publish(event)  # the trainer is told before the monitor applies it
        self.store.put(f"runconfig:{model}", {"version": version + 1, "sections": wanted,
                                              "changed_at": datetime.now(UTC).isoformat(),
                                              "changed_by": requested_by})
        self.specs.put(spec)
        log.info("configuration changed", model=model, config_version=version + 1, section=section,
                 reset=value is None, requested_by=requested_by)
        return spec
