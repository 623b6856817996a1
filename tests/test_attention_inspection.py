"""Lesson 07's attention inspection: statistics and word-to-patch maps against direct computation."""
import math

import pytest
import torch

from minisd3.attention import AttentionCore, attention_cores, attention_statistics, record_attention, word_patch_attention
from minisd3.models import MMDiT, MMDiTConfig


def test_statistics_of_uniform_and_peaked_attention():
    assert attention_statistics(torch.zeros(2, 3, 5, 5)) == pytest.approx((0.0, math.log(5)))
    peaked = torch.full((1, 1, 4, 4), -1e4)
    peaked[..., 0] = 50.0
    top, entropy = attention_statistics(peaked)
    assert top == 50.0 and entropy == pytest.approx(0.0, abs=1e-6)


def test_word_patch_maps_read_the_right_rows_and_columns():
    logits = torch.randn(2, 3, 2 + 6, 2 + 6)
    probs = logits.softmax(-1).mean(1)
    to_word = word_patch_attention(logits, 1, 2, (2, 3))
    from_word = word_patch_attention(logits, 1, 2, (2, 3), direction="word_to_patches")
    assert torch.allclose(to_word, probs[:, 2:, 1].reshape(2, 2, 3))
    assert torch.allclose(from_word, probs[:, 1, 2:].reshape(2, 2, 3))
    with pytest.raises(ValueError, match="context_length, grid"):
        word_patch_attention(logits, 0, 3, (2, 3))


def test_recorded_logits_cover_every_block_of_an_mmdit_and_leave_the_model_as_it_was():
    model = MMDiT(MMDiTConfig(input_size=8, in_channels=3, depth=2, heads=2, head_dim=8, context_dim=6, pooled_dim=6))
    for p in model.parameters():  # non-zero gates, so that the output depends on the attention
        torch.nn.init.normal_(p, std=0.3)
    inputs = torch.randn(1, 3, 8, 8), torch.rand(1), torch.randn(1, 4, 6), torch.randn(1, 6)
    plain = model(*inputs)
    with record_attention(model) as logits:
        assert logits == [None, None]
        recorded = model(*inputs)
    assert len(logits) == 2 and all(s.shape == (1, 2, 4 + 16, 4 + 16) and not s.requires_grad for s in logits)
    assert torch.equal(recorded, plain)
    assert all(not core._forward_hooks for core in attention_cores(model))  # the hooks are gone
    with pytest.raises(ValueError, match="model: expected a module containing AttentionCore"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass


def test_cpu_attention_under_bf16_autocast_runs_in_float32():
    """Under CPU autocast, q, k, v in bfloat16 are attended in float32 (the CPU's bf16 flash kernel is
    slow for short sequences, benchmarks/cpu_step.py) and the output comes back in bfloat16."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 27, 32, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AttentionCore()(q, k, v)
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.bfloat16())
