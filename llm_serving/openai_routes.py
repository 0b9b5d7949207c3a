"""vLLM's own OpenAI-compatible routes (/v1/chat/completions, /v1/completions, /v1/models).

We reuse vLLM's routers and serving classes rather than re-implementing the OpenAI protocol:
they bring streaming, usage, logprobs, structured outputs and vLLM's error format. Their state
(``openai_serving_chat`` ...) is built by vLLM's ``init_app_state`` on our ``app.state`` once the
engine is up; until then a dependency answers 503.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from llm_serving.errors import NotReady


def require_openai_state(request: Request) -> None:
    if getattr(request.app.state, "openai_serving_chat", None) is None:
        raise NotReady("the language model is still loading")


def attach_openai_routes(app: FastAPI) -> None:
    """Include vLLM's chat, completion and model-list routers (imports vLLM: real engine only)."""
    from vllm.entrypoints.openai.chat_completion.api_router import router as chat_router
    from vllm.entrypoints.openai.completion.api_router import router as completion_router
    from vllm.entrypoints.openai.models.api_router import router as models_router

    guard = [Depends(require_openai_state)]
    for router in (chat_router, completion_router, models_router):
        app.include_router(router, dependencies=guard)


async def init_openai_state(app: FastAPI, engine: object, cli_args: object, supported_tasks: tuple[str, ...]) -> None:
    """Build vLLM's serving objects (models, renderer, chat, completion) on ``app.state``."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    await init_app_state(engine, app.state, cli_args, supported_tasks)  # type: ignore[arg-type]
