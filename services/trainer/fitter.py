"""Fits in a killable worker process: a fit past its timeout is stopped, not waited for.

A thread cannot be stopped, so a fit that never ends (a huge forest, a solver that does not
converge) held the trainer's one training slot for good. pebble's process pool kills the worker
of a task past its timeout and starts a fresh one. Workers fork from a forkserver that imported
the fitting code once: no fork of the trainer's own threads (event loop, SQLite, Kafka client),
and no import cost per fit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessPool

from refit.errors import RefitError
from refit.specs import ModelSpec
from services.trainer.fit import Fitted, fit_set
from services.trainer.training_set import TrainingSet


class FitTimeoutError(RefitError, TimeoutError):
    """A fit ran past the spec's ``training.fit_timeout_s``; its worker was killed."""


class Fitter:
    """One worker process, one fit at a time (the trainer trains one model at a time)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["services.trainer.fit"])
        self._pool = ProcessPool(max_workers=1, context=context)
        # Start the forkserver and its worker now, off the first fit's clock and off the event loop: a
        # first submit waits until the forkserver imported the fitting code (seconds; a minute on a
        # loaded machine), and the trainer must answer /healthz meanwhile.
        threading.Thread(target=self._pool.submit, args=(int, None), name="fitter-warm-up", daemon=True).start()

    async def fit(self, spec: ModelSpec, data: TrainingSet) -> Fitted:
        """Fit in the worker; past ``spec.training.fit_timeout_s`` the worker is killed and this raises
        :class:`FitTimeoutError`. Cancelled (the trainer stops), the worker is killed too."""
        timeout = spec.training.fit_timeout_s
        future = await asyncio.to_thread(self._pool.submit, fit_set, timeout, spec, data)
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise FitTimeoutError(f"the fit ran past its timeout of {timeout:g}s and was stopped") from None
        finally:
            future.cancel()  # a no-op once done; kills the worker of a fit still running

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=5)  # a worker still starting (forkserver imports) is not waited for
