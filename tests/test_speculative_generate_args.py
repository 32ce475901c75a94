"""Arguments plain generate() users rely on, through every door of hf_ext.speculative: stop strings with a tokenizer,
streamers, and model inputs other than the mask, position ids and cache (each equal to plain generate)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, StoppingCriteriaList, StopStringCriteria
from transformers.generation.streamers import BaseStreamer

import hf_ext
from hf_ext.common.models import tiny_config, tiny_model
from hf_ext.speculative import (
    CUSTOM_GENERATE_DIR,
    PromptLookupDrafter,
    SpeculativeGenerationMixin,
    shallow_self_draft,
)

spec_generate = hf_ext.speculative.generate


class SpecLlama(SpeculativeGenerationMixin, LlamaForCausalLM):
    pass


class Recorder(BaseStreamer):
    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ends += 1

    def tokens(self):
        return torch.cat([p.flatten() for p in self.puts]).tolist()


@pytest.fixture(scope="module")
def spec_llama():
    _, tok = tiny_model("llama")
    torch.manual_seed(0)
    model = SpecLlama(tiny_config("llama", vocab_size=len(tok))).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _stop_string(model, tok, ids):
    """A string the free-running greedy continuation produces mid-way (so stopping on it shortens the output)."""
    free = model.generate(input_ids=ids, max_new_tokens=30, do_sample=False)
    for k in range(8, 20):
        text = tok.decode(free[0, ids.shape[1] + k:ids.shape[1] + k + 1])
        if text.strip() and text.isascii() and len(text) <= 4:
            return text
    pytest.skip("no short decodable token in the continuation")


def test_stop_strings_with_tokenizer_every_door(spec_llama):
    model, tok = spec_llama
    ids = tok("The model reads a token", return_tensors="pt").input_ids
    stop = _stop_string(model, tok, ids)
    kw = dict(input_ids=ids, max_new_tokens=30, do_sample=False)
    ref = LlamaForCausalLM.generate(model, **kw, stop_strings=[stop], tokenizer=tok)
    assert ref.shape[1] < ids.shape[1] + 30 and stop in tok.decode(ref[0, ids.shape[1]:])
    draft = shallow_self_draft(model, 1)
    mixin = model.generate(**kw, draft_model=draft, num_draft_tokens=3, stop_strings=[stop], tokenizer=tok)
    assert torch.equal(mixin, ref)
    folder = LlamaForCausalLM.generate(model, **kw, custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True,
                                       draft_model=PromptLookupDrafter(), num_draft_tokens=4, stop_strings=[stop],
                                       tokenizer=tok)
    assert torch.equal(folder, ref)
    criteria = StoppingCriteriaList([StopStringCriteria(tokenizer=tok, stop_strings=[stop])])
    plain_callable = LlamaForCausalLM.generate(model, **kw, custom_generate=spec_generate, draft_model=draft,
                                               num_draft_tokens=2, stopping_criteria=criteria)
    assert torch.equal(plain_callable, ref)
    model.generation_config.stop_strings = [stop]  # stop strings set in the generation config
    try:
        assert torch.equal(model.generate(**kw, draft_model=draft, num_draft_tokens=3, tokenizer=tok), ref)
        with pytest.raises(ValueError, match="tokenizer"):
            model.generate(**kw, draft_model=draft)
    finally:
        model.generation_config.stop_strings = None


def test_streamer_receives_what_plain_generate_sends(spec_llama):
    model, tok = spec_llama
    ids = tok("def main(): return", return_tensors="pt").input_ids
    kw = dict(input_ids=ids, max_new_tokens=20, do_sample=False)
    ref_stream = Recorder()
    ref = LlamaForCausalLM.generate(model, **kw, streamer=ref_stream)
    assert ref_stream.ends == 1 and ref_stream.tokens() == ref[0].tolist()
    runs = {
        "mixin": lambda s: model.generate(**kw, draft_model=shallow_self_draft(model, 2), num_draft_tokens=4,
                                          streamer=s),
        "folder": lambda s: LlamaForCausalLM.generate(model, **kw, custom_generate=CUSTOM_GENERATE_DIR,
                                                      trust_remote_code=True, draft_model=PromptLookupDrafter(),
                                                      num_draft_tokens="auto", streamer=s),
        "callable": lambda s: LlamaForCausalLM.generate(model, **kw, custom_generate=spec_generate,
                                                        draft_model=model, num_draft_tokens=5,
                                                        speculative_streamer=s),
    }
    for name, run in runs.items():
        stream = Recorder()
        out = run(stream)
        assert torch.equal(out, ref), name
        assert stream.ends == 1 and stream.tokens() == ref_stream.tokens(), name
        assert [p.shape for p in stream.puts] == [p.shape for p in ref_stream.puts], name  # prompt, then 1 by 1
    with pytest.raises(ValueError, match="batch size 1"):
        model.generate(input_ids=ids.expand(2, -1), max_new_tokens=4, draft_model=model, streamer=Recorder())


def _tiny_gpt2(seed):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=320, n_positions=256, n_embd=64, n_layer=2, n_head=4, type_vocab_size=2,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2 reuses the token embedding for token types: make the types matter
        model.transformer.wte.weight[:2].mul_(30)
    return model


def test_token_type_ids_follow_plain_generate():
    target, other = _tiny_gpt2(0), _tiny_gpt2(1)
    ids = torch.randint(4, 320, (2, 9), generator=torch.Generator().manual_seed(0))
    types = torch.zeros_like(ids)
    types[:, -4:] = 1  # new tokens repeat the last type, as plain decoding does
    kw = dict(input_ids=ids, max_new_tokens=16, do_sample=False)
    ref = target.generate(**kw, token_type_ids=types)
    assert not torch.equal(ref, target.generate(**kw))  # the input matters, so ignoring it would be caught
    for draft, gamma in ((other, 3), (PromptLookupDrafter(), "auto"), (target, 4)):
        out = target.generate(**kw, token_type_ids=types, custom_generate=spec_generate, draft_model=draft,
                              num_draft_tokens=gamma)
        assert torch.equal(out, ref), type(draft).__name__


class BiasedLlama(LlamaForCausalLM):
    """A model with its own forward argument (added to the logits), like many custom heads."""

    def forward(self, *args, logit_bias: torch.Tensor | None = None, **kwargs):
        out = super().forward(*args, **kwargs)
        if logit_bias is not None:
            out.logits = out.logits + logit_bias
        return out


def test_custom_forward_argument_and_inputs_embeds():
    _, tok = tiny_model("llama")
    torch.manual_seed(2)
    model = BiasedLlama(tiny_config("llama", vocab_size=len(tok))).eval()
    bias = torch.zeros(len(tok))
    bias[torch.randperm(len(tok), generator=torch.Generator().manual_seed(1))[:20]] = 3.0
    ids = torch.randint(4, len(tok), (3, 8), generator=torch.Generator().manual_seed(3))
    kw = dict(input_ids=ids, max_new_tokens=14, do_sample=False)
    ref = model.generate(**kw, logit_bias=bias)
    assert not torch.equal(ref, model.generate(**kw))
    out = model.generate(**kw, logit_bias=bias, custom_generate=spec_generate, draft_model=shallow_self_draft(model, 1),
                         num_draft_tokens=3)
    assert torch.equal(out, ref)
    embeds = model.get_input_embeddings()(ids)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        model.generate(inputs_embeds=embeds, max_new_tokens=4, custom_generate=spec_generate, draft_model=model)
