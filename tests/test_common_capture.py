import pytest
import torch

from hf_ext.common.capture import SequentialRunner, capture_block_inputs, collect_inputs, forward_block_by_block
from hf_ext.common.models import tiny_model

from .conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_block_by_block_equals_full_forward(family, device):
    model, _ = tiny_model(family)
    ids = torch.randint(3, 300, (3, 40), generator=torch.Generator().manual_seed(1))
    expected = model(ids).logits
    got = forward_block_by_block(model, ids, device=device).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert next(model.parameters()).device.type == "cpu"  # blocks went back home


def test_gemma_blocks_get_their_own_masks():
    # Gemma 3 mixes sliding and full attention: block inputs must carry the mask of each block's type.
    model, _ = tiny_model("gemma")
    ids = torch.randint(3, 300, (1, 40))
    runner = SequentialRunner(model, ids, progress=False, device=torch.device("cpu"))
    kw_sliding, kw_full = runner.inputs.kwargs[0][0], runner.inputs.kwargs[2][0]
    assert kw_sliding["attention_mask"] is not None  # a sliding window needs an explicit mask
    assert kw_full["attention_mask"] is None or not torch.equal(kw_sliding["attention_mask"], kw_full["attention_mask"])
    # local and global layers use different rotary bases
    assert not torch.equal(kw_sliding["position_embeddings"][0], kw_full["position_embeddings"][0])


def test_collect_inputs_statistics_match_the_definition():
    model, _ = tiny_model("llama")
    ids = torch.randint(3, 300, (2, 16))
    runner = SequentialRunner(model, ids, progress=False, device=torch.device("cpu"))
    step = next(iter(runner))
    seen = []
    handle = step.block.self_attn.q_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 64)))
    with collect_inputs({"q": step.block.self_attn.q_proj}, gram=True) as stats:
        step.run()
    handle.remove()
    x = torch.cat(seen)
    assert stats["q"].n == 32
    torch.testing.assert_close(stats["q"].col_norm, (x.pow(2).mean(0)).sqrt())
    torch.testing.assert_close(stats["q"].hessian, 2 * x.T @ x / 32)


def test_advance_feeds_rewritten_block_outputs_forward():
    model, _ = tiny_model("opt")
    ids = torch.randint(3, 300, (1, 12))
    runner = SequentialRunner(model, ids, progress=False, device=torch.device("cpu"))
    for step in runner:
        if step.index == 0:
            step.block.fc2.weight.data.zero_()
        step.advance()
    # The same edit applied to the model gives the same final hidden state as the sequential pass.
    out = model.model.decoder(ids).last_hidden_state
    hidden = model.model.decoder.final_layer_norm(runner.inputs.hidden[0])
    torch.testing.assert_close(hidden, out, rtol=1e-5, atol=1e-5)


def test_blocks_share_one_device_copy_of_their_kwargs():
    # Masks and rotary tensors are the same for every block of a batch: one copy on the execution device, not one
    # per block ("meta" stands in for an accelerator: any device other than the model's forces a copy).
    model, _ = tiny_model("llama")
    captured = capture_block_inputs(model, torch.randint(3, 300, (2, 16)), batch_size=1, device=torch.device("meta"))
    first, second = captured.kwargs[0][0], captured.kwargs[1][0]
    assert first["position_embeddings"][0].is_meta
    assert first["position_embeddings"][0] is second["position_embeddings"][0]
    assert captured.kwargs[0][1]["position_embeddings"][0] is not first["position_embeddings"][0]  # per batch
