"""The monitor's parts, wired once: stores, intake, decider, triggers, read models and reports.

``create_app`` opens them in its lifespan; tests open them the same way without HTTP or a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from refit.artifacts import LocalArtifactStore
from refit.errors import BrokerUnavailableError
from refit.kafka import Publisher
from refit.lifecycle import pause
from refit.metrics import Metrics
from refit.settings import MonitorSettings
from refit.specs import ModelSpecs
from services.monitor.decider import Decider
from services.monitor.feedback import FeedbackStore
from services.monitor.mlflow_sync import MlflowSync
from services.monitor.notify import Notifier
from services.monitor.registry import Registry
from services.monitor.reports import Reporter
from services.monitor.retention import collect, retain_rows
from services.monitor.service import Intake
from services.monitor.sessions import Sessions
from services.monitor.trigger_store import TriggerStore
from services.monitor.triggers import Triggers
from services.monitor.views import Views

log = structlog.get_logger("monitor")


@dataclass
class Monitor:
    settings: MonitorSettings
    specs: ModelSpecs
    registry: Registry
    feedback: FeedbackStore
    artifacts: LocalArtifactStore
    publisher: Publisher
    metrics: Metrics
    notifier: Notifier
    triggers: Triggers
    decider: Decider
    intake: Intake
    views: Views
    reporter: Reporter
    mlflow: MlflowSync | None = None
    next_collection: float = 0.0  # monotonic time of the next artifact collection

    async def periodic(self, stop: asyncio.Event) -> None:
        """Every ``trigger_interval_s``: the champion gauges, the report if due, every model's triggers;
        every ``retention_interval_s``, what no model's retention keeps is removed (rows, then artifacts)."""
        while not stop.is_set():
            try:
                self.views.observe_champions(self.metrics)
                self.reporter.send_if_due(datetime.now(UTC))
                if self.settings.retention_interval_s and time.monotonic() >= self.next_collection:
                    self.next_collection = time.monotonic() + self.settings.retention_interval_s
                    await asyncio.to_thread(retain_rows, self.specs, self.registry, self.triggers.store, self.metrics,
                                            datetime.now(UTC))
                    await asyncio.to_thread(collect, self.specs, self.registry, self.artifacts, self.metrics)
                await self.triggers.tick()
            except BrokerUnavailableError as exc:
                log.warning("retrain request not yet published", error=str(exc))
            await pause(stop, self.settings.trigger_interval_s)


@contextmanager
def open_monitor(settings: MonitorSettings, specs: ModelSpecs, publisher: Publisher,
                 metrics: Metrics) -> Iterator[Monitor]:
    """Open the monitor's stores under ``settings.state_dir`` and wire its parts; close the stores after.

    The parts share a copy of ``specs``, which configuration at run time changes in place."""
    specs = specs.model_copy(deep=True)
    registry = Registry(settings.state_dir / "monitor.sqlite")
    feedback = FeedbackStore(settings.state_dir / "feedback.sqlite", {s.name: s.task for s in specs.models},
                             settings.feedback_max_rows)
    trigger_store = TriggerStore(settings.state_dir / "triggers.sqlite")
    try:
        artifacts = LocalArtifactStore(settings.artifact_dir)
        notifier = Notifier(settings.webhook_urls, settings.webhook_secret.get_secret_value().encode())
        sessions = Sessions(registry, artifacts)
        decider = Decider(settings, specs, registry, sessions, publisher, metrics, notifier)
        triggers = Triggers(specs, trigger_store, registry, sessions, publisher, metrics=metrics,
                            notify=notifier.notify, live=decider)
        mlflow = MlflowSync(settings.mlflow_tracking_uri, settings.state_dir / "mlflow-outbox.sqlite", specs, artifacts,
                            metrics) if settings.mlflow_tracking_uri else None
        monitor = Monitor(
            settings=settings, specs=specs, registry=registry, feedback=feedback, artifacts=artifacts,
            publisher=publisher, metrics=metrics, notifier=notifier, triggers=triggers, decider=decider,
            intake=Intake(specs, registry, triggers, feedback, arrived=decider.wake.set, traces=decider.traces),
            views=Views(specs, registry, feedback, settings.live_window),
            reporter=Reporter(specs.names(), settings.report_days, settings.report_cron, registry, trigger_store,
                              notifier), mlflow=mlflow)
        decider.config_version = triggers.runconfig.version
        if mlflow is not None:
            monitor.intake.candidates.append(mlflow.candidate)
            decider.followers.append(mlflow.decision)
        yield monitor
    finally:
        if mlflow is not None:
            mlflow.close()
        registry.close()
        feedback.close()
        trigger_store.close()
