"""One root error for refit; subclasses also inherit the built-in they resemble."""

from __future__ import annotations


class RefitError(Exception):
    """Root of every error refit raises on purpose."""


class ConfigError(RefitError, ValueError):
    """A settings value or model spec is invalid."""


class SchemaError(RefitError, ValueError):
    """An input does not match a model's declared input schema."""


class UnknownModelError(RefitError, KeyError):
    """A model name that no model spec declares."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "unknown model"


class EventDecodeError(RefitError, ValueError):
    """Bytes from the broker that are not a refit event we understand."""


class BrokerUnavailableError(RefitError, ConnectionError):
    """The broker did not acknowledge a write in time."""


class ArtifactError(RefitError, OSError):
    """An artifact is missing, unreadable, or its bytes do not match its digest."""


class ModelLoadError(RefitError, RuntimeError):
    """An ONNX artifact could not be turned into a working, warmed-up session."""


class SignatureError(RefitError, ValueError):
    """A decision event is unsigned or its signature does not verify."""


class StackError(RefitError, RuntimeError):
    """The local stack (``refit up``, ``refit demo``) could not start, be reached, or do its part."""


class StackTimeoutError(StackError, TimeoutError):
    """Something the local stack was to do did not happen in time."""
