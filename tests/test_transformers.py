"""The transformer pieces of lessons 05–07: patches, positions, adaLN-Zero, joint attention,
and the MM-DiT against diffusers' SD3Transformer2DModel weight for weight."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minisd3.attention import AttentionCore, joint_attention, record_attention, split_heads
from minisd3.blocks import DiTBlock, JointBlock, modulate
from minisd3.embeddings import sincos_2d_positions, timestep_embedding
from minisd3.models import DiT, DiTConfig, MMDiT, MMDiTConfig
from minisd3.patches import patchify, unpatchify


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 4), p=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4))
def test_unpatchify_inverts_patchify(b, c, p, h, w):
    x = torch.randn(b, c, h * p, w * p)
    tokens = patchify(x, p)
    assert tokens.shape == (b, h * w, p * p * c)
    assert torch.equal(unpatchify(tokens, p, (h, w)), x)


def test_patch_tokens_are_the_image_squares_in_row_major_order():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    tokens = patchify(x, 2)
    # token 4 is patch row 1, column 1: rows 2-3, columns 2-3, features ordered (row, col, channel)
    expected = x[0, :, 2:4, 2:4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(tokens[0, 4], expected)


def test_patchify_rejects_sizes_not_divisible_by_the_patch():
    with pytest.raises(ValueError, match="divisible by the patch size 4"):
        patchify(torch.randn(1, 3, 10, 12), 4)


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.rand(7)
    theirs = get_timestep_embedding(1000 * t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(timestep_embedding(t), theirs, atol=1e-5)


def test_2d_positions_match_diffusers_and_put_columns_first():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    ours = sincos_2d_positions(32, 5, 5)
    theirs = get_2d_sincos_pos_embed(32, 5, base_size=5)
    assert torch.allclose(ours, theirs.float(), atol=1e-6)
    grid = ours.reshape(5, 5, 32)
    assert torch.allclose(grid[0, :, :16], grid[3, :, :16])  # first half: same along a column → encodes x
    assert torch.allclose(grid[:, 0, 16:], grid[:, 2, 16:])  # second half encodes y


def test_modulate_formula():
    x, shift, scale = torch.randn(2, 3, 4), torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(modulate(x, shift, scale), x * (1 + scale[:, None]) + shift[:, None])


def test_adaln_zero_blocks_are_the_identity_at_init():
    x, c = torch.randn(2, 9, 32), torch.randn(2, 32)
    assert torch.equal(DiTBlock(32, 4)(x, c), x)
    ctx = torch.randn(2, 5, 32)
    out_x, out_ctx = JointBlock(32, 4)(x, ctx, c)
    assert torch.equal(out_x, x) and torch.equal(out_ctx, ctx)


def test_models_output_zero_velocity_at_init_and_the_shape_of_x():
    model = MMDiT(MMDiTConfig(input_size=8, in_channels=3, depth=2, heads=2, head_dim=16, context_dim=12, pooled_dim=6))
    x = torch.randn(2, 3, 8, 8)
    v = model(x, torch.rand(2), torch.randn(2, 4, 12), torch.randn(2, 6))
    assert v.shape == x.shape and torch.equal(v, torch.zeros_like(x))
    dit = DiT(DiTConfig())
    assert dit(torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 4, 10])).shape == (3, 1, 8, 8)


def test_joint_attention_equals_one_attention_over_the_concatenation():
    q1, k1, v1 = (torch.randn(2, 3, 4, 8) for _ in range(3))
    q2, k2, v2 = (torch.randn(2, 3, 6, 8) for _ in range(3))
    out1, out2 = joint_attention(AttentionCore(), [(q1, k1, v1), (q2, k2, v2)])
    q, k, v = torch.cat([q1, q2], 2), torch.cat([k1, k2], 2), torch.cat([v1, v2], 2)
    full = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ v
    assert torch.allclose(torch.cat([out1, out2], 1), full.transpose(1, 2).reshape(2, 10, 24), atol=1e-5)


def test_recorded_logits_are_the_ones_sdpa_used():
    core = AttentionCore()
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    with record_attention(core) as logits:
        fused = core(q, k, v)
    assert logits[0].shape == (1, 2, 5, 5)
    assert torch.allclose(fused, logits[0].softmax(dim=-1) @ v, atol=1e-6)


def test_split_heads_layout():
    x = torch.arange(12.0).reshape(1, 2, 6)
    assert split_heads(x, 3)[0, 1, 0].tolist() == [2.0, 3.0]


def test_size_rule():
    cfg = MMDiTConfig.from_depth(6)
    assert (cfg.hidden, cfg.heads, cfg.patch_size, cfg.mlp_ratio) == (384, 6, 2, 4.0)


def test_bad_inputs_name_the_argument():
    model = MMDiT(MMDiTConfig(input_size=8, in_channels=3, depth=1, heads=1, head_dim=8, context_dim=12, pooled_dim=6))
    x, t, ctx, pooled = torch.randn(2, 3, 8, 8), torch.rand(2), torch.randn(2, 4, 12), torch.randn(2, 6)
    with pytest.raises(ValueError, match="c_ctxt"):
        model(x, t, torch.randn(2, 4, 11), pooled)
    with pytest.raises(ValueError, match="pooled: expected shape"):
        model(x, t, ctx, torch.randn(2, 5))
    with pytest.raises(ValueError, match="divisible by the patch size"):
        model(torch.randn(2, 3, 7, 8), t, ctx, pooled)
    with pytest.raises(ValueError, match=r"t: expected values in \[0, 1\]"):
        model(x, t * 1000, ctx, pooled)
    with pytest.raises(ValueError, match="x: expected 3 channels"):
        model(torch.randn(2, 4, 8, 8), t, ctx, pooled)
