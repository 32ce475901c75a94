"""HTTP routes of the best-effort server: OpenAI-compatible completions (streamed by server-sent events), health,
metrics; every error as ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from transformers.utils import logging

from .levels import BackendUnavailable
from .metrics import CONTENT_TYPE
from .protocol import APIError, ChatCompletionRequest, CompletionRequest, completion_body, new_id

logger = logging.get_logger(__name__)


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def attach_routes(app: FastAPI, server) -> None:
    cfg = server.config

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > cfg.max_request_bytes:
            return _error(APIError(413, f"Request body of {size} bytes exceeds {cfg.max_request_bytes}.",
                                   code="request_too_large"))
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            return _error(APIError(400, f"Malformed JSON body: {first.get('ctx', {}).get('error', 'invalid')}.",
                                   code="json_invalid"))
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = str(first.get("msg", "invalid"))
        return _error(APIError(400, f"{msg} ({'.'.join(loc) or 'body'})", param=".".join(loc) or None,
                               code=first.get("type")))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        logger.error("Unhandled error: %r", e)
        return _error(APIError(500, f"Internal error: {type(e).__name__}", "server_error"))

    @app.get("/health")
    async def health():
        return server.health()

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        names = [cfg.served_model_name] + [lv.name for lv in server.levels]
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "hf-ext"} for n in names]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise APIError(400, "Exactly one prompt per request is supported.", param="prompt")
        return await _serve(server, prompts[0], req.max_tokens, req, chat=False)

    if server.chat_tokenizer is not None:
        @app.post("/v1/chat/completions")
        async def chat(req: ChatCompletionRequest):
            msgs = [m.model_dump() for m in req.messages]
            try:
                prompt = server.chat_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # templates raise on roles they do not know
                raise APIError(400, f"Chat template rejected the messages: {e}", param="messages") from e
            return await _serve(server, prompt, req.max_completion_tokens or req.max_tokens or 16, req, chat=True)


async def _serve(server, prompt: str, max_tokens: int, req, chat: bool):
    cfg = server.config
    if max_tokens > cfg.max_tokens_limit:
        raise APIError(400, f"max_tokens {max_tokens} exceeds {cfg.max_tokens_limit}.", param="max_tokens")
    if len(prompt) > 8 * cfg.max_prompt_tokens or server.levels[0].count_tokens(prompt) > cfg.max_prompt_tokens:
        raise APIError(413, f"Prompt longer than {cfg.max_prompt_tokens} tokens.", param="prompt",
                       code="prompt_too_long")
    task = server.task_index(req.task)
    pinned = server.level_index(req.model)
    deadline = req.deadline or cfg.default_deadline_s
    model = req.model or cfg.served_model_name
    rid = new_id("chatcmpl" if chat else "cmpl")
    queue: asyncio.Queue | None = asyncio.Queue() if req.stream else None
    try:
        level, fut, arrival = await server.submit(prompt, max_tokens, req.temperature, task, deadline, pinned,
                                                  queue.put_nowait if queue is not None else None)
    except APIError as e:
        server.metrics.done("none", str(e.status))
        raise
    def finish(gen) -> dict:
        level = fut.level
        name = server.levels[level].name
        latency = time.monotonic() - arrival
        met = latency <= deadline
        server.metrics.done(name, "200", latency, met, gen.prompt_tokens, gen.completion_tokens)
        return {"level": name, "task": server.profile.tasks[task], "deadline_s": deadline,
                "latency_s": round(latency, 4), "deadline_met": met,
                "quality": server.profile.quality(level, task)}

    def failure(e: Exception) -> APIError:
        name = server.levels[fut.level].name
        if isinstance(e, APIError):
            err = e
        elif isinstance(e, BackendUnavailable):
            err = APIError(503, str(e), "server_error", code="backend_unavailable",
                           headers={"Retry-After": str(int(cfg.down_retry_s))})
        else:
            logger.error("Level %s failed: %r", name, e)
            err = APIError(500, f"Level {name!r} failed: {type(e).__name__}", "server_error")
        server.metrics.done(name, str(err.status))
        return err

    if queue is None:
        try:
            gen = await fut
        except Exception as e:
            raise failure(e) from e
        ext = finish(gen)
        usage = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                 "total_tokens": gen.prompt_tokens + gen.completion_tokens}
        return completion_body(rid, model, gen.text, gen.finish_reason, usage, ext, chat)

    async def events():
        def sse(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        if chat:
            first = completion_body(rid, model, "", None, None, None, chat=True, chunk=True)
            first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            yield sse(first)
        sent = ""
        while not fut.done() or not queue.empty():
            if queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, fut}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                delta = getter.result()
            else:
                delta = queue.get_nowait()
            sent += delta
            yield sse(completion_body(rid, model, delta, None, None, None, chat, chunk=True))
        try:
            gen = fut.result()
        except Exception as e:
            yield sse(failure(e).body())
            yield "data: [DONE]\n\n"
            return
        if gen.text.startswith(sent) and len(gen.text) > len(sent):
            yield sse(completion_body(rid, model, gen.text[len(sent):], None, None, None, chat, chunk=True))
        yield sse(completion_body(rid, model, "", gen.finish_reason, None, finish(gen), chat, chunk=True))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
