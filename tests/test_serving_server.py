"""The real server as a subprocess on 127.0.0.1 (tiny models), spoken to with the official openai client, plus the
load generator and the profiler on tiny levels."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from hf_ext.serving.levels import parse_levels
from hf_ext.serving.loadgen import LoadConfig, run_load
from hf_ext.serving.profiler import measure_profile
from hf_ext.serving.server import BestEffortServer, ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str]):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hf_ext.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not come up")


@pytest.fixture(scope="module")
def server():
    dead = free_port()  # nothing listens there: a backend that is down
    proc, url = start_server(["--level", "tiny:llama", "--level", "tiny:opt", "--level",
                              f"down=http://127.0.0.1:{dead}/v1", "--max-prompt-tokens", "64",
                              "--max-tokens-limit", "32"])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=60)


def test_completion(client):
    out = client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=5)
    assert out.object == "text_completion" and out.usage.completion_tokens <= 5
    assert isinstance(out.choices[0].text, str) and out.choices[0].finish_reason in ("stop", "length")
    ext = out.model_extra["hf_ext"]
    assert ext["level"] == "tiny-llama" and ext["deadline_met"] is True


def test_routed_completion_with_task_and_deadline(client):
    out = client.completions.create(model="hf-ext-best-effort", prompt="Python is", max_tokens=4,
                                    extra_body={"task": "default", "deadline": 30.0})
    assert out.model_extra["hf_ext"]["level"] in ("tiny-llama", "tiny-opt", "down")


def test_streaming(client):
    chunks = list(client.completions.create(model="tiny-opt", prompt="A function returns", max_tokens=6,
                                            stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.object == "text_completion" for c in chunks) and len(chunks) >= 2


def test_chat(client):
    out = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=4)
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    stream = list(client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4, stream=True))
    assert stream[0].choices[0].delta.role == "assistant" and stream[-1].choices[0].finish_reason is not None


def test_health_models_and_metrics(server, client):
    h = httpx.get(f"{server}/health").json()
    assert h["status"] == "ok" and [lv["name"] for lv in h["levels"]] == ["tiny-llama", "tiny-opt", "down"]
    assert {m.id for m in client.models.list()} >= {"hf-ext-best-effort", "tiny-llama"}
    client.completions.create(model="tiny-llama", prompt="x", max_tokens=2)
    text = httpx.get(f"{server}/metrics").text
    assert 'hf_ext_requests_total{level="tiny-llama",status="200"}' in text
    assert "hf_ext_e2e_request_latency_seconds_bucket" in text and "hf_ext_num_requests_waiting" in text


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json_is_400(server):
    r = httpx.post(f"{server}/v1/completions", content=b'{"prompt": "x",',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Malformed JSON" in _error(r)["message"]
    r = httpx.post(f"{server}/v1/completions", json={"prompt": "x", "max_tokens": -3})
    assert r.status_code == 400 and _error(r)["param"] == "max_tokens"


def test_oversized_input(server, client):
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="tiny-llama", prompt="word " * 500, max_tokens=2)
    assert e.value.status_code == 413
    r = httpx.post(f"{server}/v1/completions", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny-llama", prompt="x", max_tokens=1000)


def test_unknown_task_and_model(client):
    with pytest.raises(openai.BadRequestError, match="Unknown task") as e:
        client.completions.create(model="hf-ext-best-effort", prompt="x", max_tokens=2,
                                  extra_body={"task": "poetry"})
    assert e.value.body["param"] == "task"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x", max_tokens=2)


def test_backend_down_is_503_and_server_stays_up(server, client):
    with pytest.raises(openai.InternalServerError) as e:
        client.completions.create(model="down", prompt="x", max_tokens=2)
    assert e.value.status_code == 503 and e.value.response.headers.get("retry-after")
    # the level is skipped while down; routed and other-level requests keep working
    assert client.completions.create(model="tiny-opt", prompt="x", max_tokens=2).choices
    routed = client.completions.create(model="hf-ext-best-effort", prompt="x", max_tokens=2)
    assert routed.model_extra["hf_ext"]["level"] != "down"
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_load_generator_counts_every_request(server):
    s = run_load(LoadConfig(url=server, rate=20, duration_s=1.5, max_requests=20, max_tokens=2, timeout_s=30,
                            model="tiny-opt"))
    assert s["requests"] == 20 and sum(s["status_counts"].values()) == 20
    assert s["status_counts"].get("200", 0) + s["status_counts"].get("429", 0) == 20
    assert s["p50_latency_s"] is not None and 0 <= s["deadline_attainment"] <= 1


def test_overload_refuses_with_retry_after_only_when_no_level_can_meet_the_deadline(server):
    s = run_load(LoadConfig(url=server, rate=200, duration_s=0.5, max_requests=60, max_tokens=16, deadline_s=0.02,
                            timeout_s=30))
    assert s["requests"] == sum(s["status_counts"].values())
    assert s["status_counts"].get("429", 0) > 0 and s["refused_without_retry_after"] == 0


def test_profiler_and_unprofiled_server_validation():
    levels = parse_levels(["tiny:llama", "tiny:opt@layers=1"])
    assert levels[1].name == "tiny-opt-1L" and len(levels[1].model.model.decoder.layers) == 1
    prof = measure_profile(levels, {"a": ["The quick brown fox jumps."], "b": ["def main(): return 0"]},
                           batch_sizes=(1, 2), max_new_tokens=2, repeats=1, progress=False)
    assert prof.names == ["tiny-llama", "tiny-opt-1L"] and prof.levels[0].batch_sizes == [1, 2]
    assert all(0 <= q <= 1 for lv in prof.levels for q in lv.quality.values())
    assert json.loads(json.dumps(prof.to_dict()))["levels"][0]["service_s"][0] > 0
    BestEffortServer(levels, profile=prof, config=ServerConfig(default_task="b"))
    with pytest.raises(ValueError, match="not the server's"):
        BestEffortServer(levels[:1], profile=prof)
    with pytest.raises(ValueError, match="unique"):
        parse_levels(["tiny:llama", "tiny:llama"])
