"""minisd3's MM-DiT and diffusers' SD3Transformer2DModel compute the same function with the same weights."""
import pytest
import torch
from diffusers import SD3Transformer2DModel

from minisd3.convert import mmdit_from_diffusers, mmdit_to_diffusers
from minisd3.models import MMDiT, MMDiTConfig

CONFIGS = [
    dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
         joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10, out_channels=4,
         pos_embed_max_size=12, qk_norm="rms_norm"),
    dict(sample_size=8, patch_size=1, in_channels=3, num_layers=3, attention_head_dim=16, num_attention_heads=3,
         joint_attention_dim=20, caption_projection_dim=48, pooled_projection_dim=7, out_channels=5,
         pos_embed_max_size=None, qk_norm=None),
    dict(sample_size=12, patch_size=4, in_channels=2, num_layers=4, attention_head_dim=8, num_attention_heads=4,
         joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=16, out_channels=2,
         pos_embed_max_size=6, qk_norm="rms_norm"),
    dict(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=32, num_attention_heads=1,
         joint_attention_dim=8, caption_projection_dim=32, pooled_projection_dim=8, out_channels=4,
         pos_embed_max_size=None, qk_norm=None),
]


def randomised(kw, seed=0):
    """A diffusers model with every weight random (the zero-initialised adaLN and output layers too)."""
    torch.manual_seed(seed)
    m = SD3Transformer2DModel(**kw).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m


def inputs(kw, batch=3, tokens=5, size=None):
    size = size or kw["sample_size"]
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, kw["in_channels"], size, size, generator=g), torch.rand(batch, generator=g),
            torch.randn(batch, tokens, kw["joint_attention_dim"], generator=g),
            torch.randn(batch, kw["pooled_projection_dim"], generator=g))


def diffusers_velocity(m, x, t, ctx, pooled):
    return m(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=1000 * t).sample


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: (f"L{kw['num_layers']}H{kw['num_attention_heads']}p{kw['patch_size']}"
                                                      f"qk{kw['qk_norm']}max{kw['pos_embed_max_size']}"))
def test_from_diffusers_agrees_within_1e5(kw):
    m = randomised(kw)
    ours = mmdit_from_diffusers(m).eval()
    x, t, ctx, pooled = inputs(kw)
    with torch.no_grad():
        assert (ours(x, t, ctx, pooled) - diffusers_velocity(m, x, t, ctx, pooled)).abs().max() <= 1e-5


@pytest.mark.parametrize("kw", CONFIGS[:2])
def test_to_diffusers_round_trip(kw):
    m = randomised(kw, seed=3)
    back = mmdit_to_diffusers(mmdit_from_diffusers(m))
    for name, tensor in m.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_to_diffusers_from_a_fresh_minisd3_model_agrees():
    cfg = MMDiTConfig(input_size=8, in_channels=4, depth=2, heads=2, head_dim=8, context_dim=6, pooled_dim=5, qk_norm=True)
    torch.manual_seed(0)
    model = MMDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    theirs = mmdit_to_diffusers(model).eval()
    kw = dict(in_channels=4, sample_size=8, joint_attention_dim=6, pooled_projection_dim=5)
    x, t, ctx, pooled = inputs(kw)
    with torch.no_grad():
        assert (model(x, t, ctx, pooled) - diffusers_velocity(theirs, x, t, ctx, pooled)).abs().max() <= 1e-5


def test_cropped_positions_agree_at_a_smaller_resolution():
    kw = CONFIGS[0]
    m = randomised(kw)
    ours = mmdit_from_diffusers(m).eval()
    x, t, ctx, pooled = inputs(kw, size=8)
    with torch.no_grad():
        assert (ours(x, t, ctx, pooled) - diffusers_velocity(m, x, t, ctx, pooled)).abs().max() <= 1e-5


def test_unsupported_configs_are_refused_by_name():
    kw = dict(CONFIGS[3], dual_attention_layers=(0,))
    with pytest.raises(ValueError, match="dual_attention_layers"):
        mmdit_from_diffusers(SD3Transformer2DModel(**kw))
