"""Choose the engine that serves: the preferred backend, then the configured fallbacks.

Never silent: every refused candidate is logged with its reason and listed in
``EngineInfo.fallback_from``, which responses, ``/v2/models/{name}`` and the info metric carry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_serving.artifacts import AgreementTooLow, BuildRequest, artifact_dir, build_artifact, load_artifact
from trt_serving.config import HasherSettings
from trt_serving.engines.base import Engine, EngineUnavailable
from trt_serving.model.hasher import ModelCard
from trt_serving.schemas import EngineInfo

log = logging.getLogger(__name__)


class NoEngine(RuntimeError):
    """No candidate could be loaded; the message lists every reason."""


@dataclass
class Selected:
    engine: Engine
    info: EngineInfo
    manifest: dict[str, Any]
    card: ModelCard
    directory: Path
    refusals: list[str] = field(default_factory=list)


def _request(settings: HasherSettings, backend: str, precision: str) -> BuildRequest:
    return BuildRequest(model=settings.model, version=settings.version, backend=backend, precision=precision,
                        cache_dir=settings.cache_dir, weights=settings.weights, floor=settings.agreement_floor,
                        threads=settings.threads)


def select_engine(settings: HasherSettings) -> Selected:
    """Load the first candidate that works (building a missing artifact when allowed)."""
    tried: list[str] = []
    reasons: list[str] = []
    candidates: list[tuple[str, str, Path | None]] = []
    if settings.artifact_dir is not None:
        candidates.append(("artifact", str(settings.artifact_dir), settings.artifact_dir))
    candidates += [(b, p, None) for b, p in settings.candidates()]
    for backend, precision, explicit in candidates:
        label = f"{backend}:{precision}" if explicit is None else f"artifact:{explicit}"
        try:
            if explicit is not None:
                directory = explicit
            else:
                req = _request(settings, backend, precision)
                directory = artifact_dir(req)
                if not (directory / "manifest.json").exists():
                    if not settings.build_missing:
                        raise EngineUnavailable(f"no artifact at {directory} and build_missing is off")
                    directory = build_artifact(req)
            engine, manifest = load_artifact(directory, settings.threads)
            if (manifest["model"], manifest["version"]) != (settings.model, settings.version):
                engine.close()
                raise EngineUnavailable(f"artifact is {manifest['model']} v{manifest['version']}, "
                                        f"not {settings.model} v{settings.version}")
        except (EngineUnavailable, AgreementTooLow, ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
            log.warning("engine refused, trying the next one",
                        extra={"candidate": label, "reason": f"{type(exc).__name__}: {exc}"})
            tried.append(label)
            reasons.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        card = ModelCard.from_json((directory / "model_card.json").read_text())
        info = EngineInfo(model=settings.model, version=settings.version, backend=manifest["backend"],
                          precision=manifest["precision"], fallback_from=tried)
        log.info("engine selected", extra={"backend": info.backend, "precision": info.precision,
                                           "fallback_from": ",".join(tried), "artifact": str(directory)})
        return Selected(engine=engine, info=info, manifest=manifest, card=card, directory=directory,
                        refusals=reasons)
    raise NoEngine("no engine could be loaded: " + "; ".join(reasons))
