"""OpenAI-compatible request / response shapes and the error body every failure uses
(``{"error": {"message", "type", "param", "code"}}``, as vLLM's server)."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field


class CompletionRequest(BaseModel):
    """``/v1/completions``; ``task`` and ``deadline`` are hf-ext's extension fields (defaults when absent)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    task: str | None = None
    deadline: float | None = Field(default=None, gt=0.0, description="seconds from arrival")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    task: str | None = None
    deadline: float | None = Field(default=None, gt=0.0)


class APIError(Exception):
    """An error answered with ``status`` and the OpenAI error body; ``headers`` e.g. ``Retry-After``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_body(rid: str, model: str, text: str, finish: str | None, usage: dict | None, ext: dict | None,
                    chat: bool, chunk: bool = False) -> dict:
    """One completion (or streamed chunk) in the OpenAI format, chat or text."""
    if chat:
        key = "delta" if chunk else "message"
        msg = {"content": text} if chunk else {"role": "assistant", "content": text}
        choice = {"index": 0, key: msg, "finish_reason": finish}
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}
    if usage is not None:
        out["usage"] = usage
    if ext is not None:
        out["hf_ext"] = ext
    return out
