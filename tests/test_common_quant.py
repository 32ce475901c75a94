import pytest
import torch

from hf_ext.common.quant import fake_quantize, find_params, pack_bits, quantize_rtn, unpack_bits


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
def test_pack_unpack_round_trip_and_size(bits):
    codes = torch.randint(0, 2**bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1001), codes.to(torch.uint8))


def test_pack_layout_is_lsb_first():
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1]), 1).tolist() == [0b10000001]
    assert pack_bits(torch.tensor([0b101, 0b011]), 3).tolist() == [0b011101]


def test_pack_rejects_out_of_range_and_truncated():
    with pytest.raises(ValueError, match="out of range"):
        pack_bits(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 4, 10)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_error_shrinks_with_bits_and_codes_fit(bits):
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    q, scale, zero = quantize_rtn(w, bits, 64)
    assert scale.shape == (32, 4) and int(q.max()) <= 2**bits - 1
    err = (fake_quantize(w, bits, 64) - w).abs().max(1).values
    assert (err <= scale.amax(1) / 2 + 1e-6).all()  # round to nearest: at most half a step


def test_masked_quantization_keeps_zeros_and_uses_kept_range():
    w = torch.randn(8, 128)
    mask = torch.rand(8, 128) > 0.8
    out = fake_quantize(w, 4, 128, mask)
    assert (out[~mask] == 0).all()
    s_masked, _ = find_params(w, 4, 128, mask)
    s_all, _ = find_params(w, 4, 128)
    assert (s_masked <= s_all + 1e-7).all()


def test_group_size_must_divide_columns():
    with pytest.raises(ValueError, match="group_size 48 does not divide"):
        quantize_rtn(torch.randn(4, 100), 4, 48)
