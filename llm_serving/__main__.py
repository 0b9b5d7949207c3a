"""``python -m llm_serving``: run the explainer pod with uvicorn.

On CPU the process re-executes itself once with ``runtime_env.recommended_env`` (tcmalloc/iomp
preload, OpenMP binding): LD_PRELOAD only takes effect at process start.
"""

from __future__ import annotations

import math
import os
import sys

from pydantic import ValidationError

_APPLIED_MARKER = "SERVESTACK_EXPLAINER_RUNTIME_ENV_APPLIED"


def _maybe_reexec(threads: int, kv_cache_gib: float) -> None:
    from llm_serving.runtime_env import missing_from, recommended_env

    if os.environ.get(_APPLIED_MARKER):
        return
    wanted = recommended_env(threads, max(1, math.ceil(kv_cache_gib)))
    wanted.pop("SERVESTACK_EXPLAINER_ENFORCE_EAGER", None)  # a setting, not the process's concern
    missing = missing_from(os.environ, wanted)
    if not missing:
        return
    env = {**os.environ, **missing, _APPLIED_MARKER: "1"}
    os.execve(sys.executable, [sys.executable, "-m", "llm_serving", *sys.argv[1:]], env)


def main() -> int:
    from llm_serving.config import ExplainerSettings

    try:
        settings = ExplainerSettings()
    except ValidationError as exc:
        sys.stderr.write(f"invalid explainer settings:\n{exc}\n")
        return 2
    if settings.apply_runtime_env:
        _maybe_reexec(settings.threads, settings.kv_cache_gib)

    import uvicorn

    from llm_serving.app import create_app
    from tracing import configure_json_logging

    configure_json_logging("servestack-explainer", settings.log_level.upper())
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
