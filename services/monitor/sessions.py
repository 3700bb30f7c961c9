"""The ONNX sessions the monitor scores with: champions and candidates, loaded once by digest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from refit.artifacts import LocalArtifactStore
from refit.errors import ArtifactError, ModelLoadError
from refit.onnx_model import OnnxModel
from services.monitor.challengers import Role
from services.monitor.registry import Registry

_KEPT = 16  # sessions kept loaded: the champions of a few models and the candidates being judged


@dataclass(frozen=True)
class Champion:
    """A model's serving champion, loaded, with the holdout scores that promoted it."""

    version: int
    since: datetime
    model: OnnxModel
    scores: dict[str, float]
    # the newest sample its training window held: what arrived up to then is not live evidence of it
    trained_until: datetime | None = None


class Sessions:
    def __init__(self, registry: Registry, artifacts: LocalArtifactStore) -> None:
        self.registry, self.artifacts = registry, artifacts
        self._loaded: dict[str, OnnxModel] = {}

    def load(self, digest: str) -> OnnxModel:
        """The session of an artifact (ArtifactError, ModelLoadError when it cannot be had)."""
        model = self._loaded.get(digest)
        if model is None:
            model = OnnxModel(self.artifacts.get(digest))
            if len(self._loaded) >= _KEPT:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[digest] = model
        return model

    def load_or_error(self, digest: str) -> OnnxModel | Exception:
        try:
            return self.load(digest)
        except (ArtifactError, ModelLoadError) as exc:
            return exc

    def challengers(self, model: str, champion: int) -> list[tuple[int, Role, OnnxModel]]:
        """The versions that challenge champion ``champion`` on live traffic, loaded: the champion a
        promotion replaced ("previous"), and the newest later candidate not promoted ("candidate").
        A version rolled back from, or one whose artifact cannot load, challenges nothing."""
        wanted: list[tuple[int, Role, str]] = []
        history = self.registry.serving_history(model, limit=2)
        if len(history) == 2 and history[0].event_type == "ModelPromoted" and history[1].version != champion:
            wanted.append((history[1].version, "previous", history[1].digest))
        newest = self.registry.newest_unpromoted(model, after=champion)
        if newest is not None:
            wanted.append((newest[0], "candidate", newest[1]))
        loaded = [(version, role, self.load_or_error(digest)) for version, role, digest in wanted]
        return [(version, role, model) for version, role, model in loaded if isinstance(model, OnnxModel)]

    def champion(self, model: str) -> Champion | None:
        """The serving champion, loaded (None before the first, or when its artifact cannot load)."""
        serving = self.registry.serving(model)
        if serving is None:
            return None
        version = self.registry.version(model, serving.version)
        try:
            loaded = self.load(serving.digest)
        except (ArtifactError, ModelLoadError):
            return None
        return Champion(serving.version, serving.decided_at, loaded, (version.scores if version else None) or {},
                        version.candidate.training.last_sample_at if version else None)
