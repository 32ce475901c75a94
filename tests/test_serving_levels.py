"""Serving classes in-process: any-precision widths as levels (switch cost, memory), a server driven by a trained
router, a remote OpenAI-compatible level talking to another hf-ext app, and the CLI's router training."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from hf_ext.any_precision import AnyPrecisionConfig, quantize
from hf_ext.common.models import tiny_model
from hf_ext.serving.dqn import DQNConfig
from hf_ext.serving.levels import AnyPrecisionLevel, HFModelLevel, OpenAILevel, parse_levels
from hf_ext.serving.profile import LevelProfile, ServingProfile
from hf_ext.serving.profiler import measure_profile
from hf_ext.serving.server import BestEffortServer, ServerConfig, build_app
from hf_ext.serving.simulator import SimulatorConfig
from hf_ext.serving.training import train_router


@pytest.fixture(scope="module")
def anyprec(calib, tmp_path_factory):
    model, tok = tiny_model("llama")
    quantize(model, tok, AnyPrecisionConfig(calibration=calib, n_samples=2, seqlen=48, seed_bits=3, max_bits=4))
    out = tmp_path_factory.mktemp("anyprec")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_any_precision_widths_share_one_model_and_switch_cheaply(anyprec):
    levels = parse_levels([f"{anyprec}:3", f"{anyprec}:4"])
    a, b = levels
    assert isinstance(a, AnyPrecisionLevel) and a.model is b.model and a.lock is b.lock
    out3 = a.generate_sync(["The quick brown"], [4], 0.0)[0].text
    out4 = b.generate_sync(["The quick brown"], [4], 0.0)[0].text
    assert a.generate_sync(["The quick brown"], [4], 0.0)[0].text == out3 and a.model.precision == 3
    assert b.generate_sync(["The quick brown"], [4], 0.0)[0].text == out4
    prof = measure_profile(levels, {"t": ["Python is a programming language."]}, batch_sizes=(1,),
                           max_new_tokens=2, repeats=1, progress=False)
    assert set(prof.meta["switch_overhead"]) == {f"{b.name}->{a.name}", f"{a.name}->{b.name}"}
    assert prof.levels[0].memory_mib > 0  # both widths' dense caches are held (reported, not hidden)
    with pytest.raises(ValueError, match="not loaded"):
        AnyPrecisionLevel(a.model, a.tokenizer, 8, "x", threading.Lock())


def _toy_profile(levels) -> ServingProfile:
    return ServingProfile(levels=[
        LevelProfile(levels[0].name, [1, 8], [0.01, 0.02], 0.0, {"a": 0.5, "b": 0.4}),
        LevelProfile(levels[1].name, [1, 8], [0.5, 1.0], 0.0, {"a": 0.9, "b": 0.8}),
    ], tasks=["a", "b"])


def test_server_routes_with_a_trained_router_in_process(tmp_path):
    levels = [HFModelLevel(*tiny_model("opt"), name="small"), HFModelLevel(*tiny_model("llama"), name="large")]
    profile = _toy_profile(levels)
    router, _ = train_router(profile, SimulatorConfig(rate=(0.5, 40), duration_s=10, deadline_s=2.0),
                             DQNConfig(total_steps=1500, learning_starts=200), progress=False)
    server = BestEffortServer(levels, profile=profile, router=router, config=ServerConfig(default_deadline_s=5))
    with TestClient(build_app(server)) as c:
        r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2, "task": "b"})
        assert r.status_code == 200 and r.json()["hf_ext"]["task"] == "b"
        assert c.get("/health").json()["router"] == "router"
        r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2, "deadline": 1e-4})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "overloaded"
    other = ServingProfile(levels=profile.levels, tasks=["a", "b"])
    other.levels = list(reversed(other.levels))
    with pytest.raises(ValueError, match="not the server's"):
        BestEffortServer(levels, profile=other, router=router)


def test_remote_level_serves_through_another_app():
    backend = BestEffortServer([HFModelLevel(*tiny_model("opt"), name="b0")])
    app = build_app(backend)

    async def run():
        async with app.router.lifespan_context(app):
            level = OpenAILevel("http://backend/v1", name="remote")
            level.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=30)
            seen = []
            gens = await level.generate(["Hello", "The fox"], [3, 2], 0.0, [seen.append, None])
            await level.aclose()
            return gens, seen

    gens, seen = asyncio.run(run())
    assert len(gens) == 2 and gens[1].completion_tokens <= 2 and seen == ([gens[0].text] if gens[0].text else [])


def test_cli_profile_train_router_round_trip(tmp_path, tiny_text_dir):
    from hf_ext.cli import main
    from hf_ext.serving.router import Router

    prof = tmp_path / "profile.json"
    assert main(["serve", "profile", "--level", "tiny:opt@layers=1", "--level", "tiny:llama", "--out", str(prof),
                 "--tasks", str(tiny_text_dir), "--batch-sizes", "1", "2", "--max-tokens", "2", "--repeats",
                 "1", "--texts-per-task", "2"]) == 0
    assert main(["serve", "train-router", "--profile", str(prof), "--out", str(tmp_path / "r"), "--steps", "600",
                 "--episode-s", "5"]) == 0
    r = Router.load(tmp_path / "r")
    assert r.levels == ["tiny-opt-1L", "tiny-llama"] and len(r.tasks) == 2
    assert main(["serve", "profile", "--level", "tiny:opt", "--out", str(prof)]) == 2  # exists, no --overwrite


@pytest.mark.parametrize("family", ["llama", "opt", "gemma"])
def test_truncated_view_shares_weights_and_equals_a_truncated_copy(family):
    import copy

    import torch

    from hf_ext.common.arch import get_blocks
    from hf_ext.serving.levels import truncated_view

    model, tok = tiny_model(family)
    view = truncated_view(model, 2)
    ref = copy.deepcopy(model)
    del get_blocks(ref)[2:]
    cfg = ref.config
    cfg.num_hidden_layers = 2
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:2]
    ids = tok(["The quick brown fox"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(view(**ids).logits, ref(**ids).logits, atol=1e-6)
        assert torch.equal(view.generate(**ids, max_new_tokens=4, do_sample=False),
                           ref.generate(**ids, max_new_tokens=4, do_sample=False))
    assert len(get_blocks(model)) == 3 and model.config.num_hidden_layers == 3
    assert view.get_input_embeddings().weight is model.get_input_embeddings().weight


def test_reduced_vocabulary_view_predicts_only_the_first_ids():
    import torch

    from hf_ext.serving.levels import truncated_view

    model, tok = tiny_model("gemma")
    view = truncated_view(model, vocab=64)
    ids = tok(["The quick brown fox"], return_tensors="pt")
    with torch.no_grad():
        full, small = model(**ids).logits, view(**ids).logits
        out = view.generate(**ids, max_new_tokens=5, do_sample=False)
    assert small.shape[-1] == 64 and torch.allclose(small, full[..., :64], atol=1e-5)
    assert int(out[0, ids["input_ids"].shape[1]:].max()) < 64
    assert view.get_output_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    lv = parse_levels(["tiny:gemma@layers=2@vocab=64", "tiny:gemma"])
    assert lv[0].name == "tiny-gemma-2L-v64" and lv[0].model.get_output_embeddings().out_features == 64
    with pytest.raises(ValueError, match="positive integer"):
        parse_levels(["tiny:gemma@vocab=x"])


def test_levels_sharing_a_tokenizer_serve_concurrent_requests():
    levels = parse_levels(["tiny:llama@layers=1", "tiny:llama"])
    assert levels[0].tokenizer is levels[1].tokenizer
    app = build_app(BestEffortServer(levels, config=ServerConfig(max_batch=4)))

    async def run():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                reqs = [c.post("/v1/completions", json={"prompt": f"The fox {i}", "max_tokens": 3,
                                                        "model": levels[i % 2].name, "stream": i % 3 == 0})
                        for i in range(24)]
                return await asyncio.gather(*reqs)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 24
    assert all(r.text.rstrip().endswith("data: [DONE]") for i, r in enumerate(responses) if i % 3 == 0)
