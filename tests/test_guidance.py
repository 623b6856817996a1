"""Classifier-free guidance: the combination, the batched field, the dropout rate."""
import pytest
import torch

from minisd3.guidance import cfg_combine, drop_mask, guided_field
from minisd3.seeding import make_generator


def velocity(z, t, label):
    """A toy conditional field: pulls towards the label's value."""
    return z - label[:, None] * (1 - t[:, None])


def test_cfg_with_w_1_is_the_conditional_and_0_the_unconditional():
    vu, vc = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(cfg_combine(vu, vc, 1.0), vc, atol=1e-6)
    assert torch.equal(cfg_combine(vu, vc, 0.0), vu)
    assert torch.allclose(cfg_combine(vu, vc, 3.0), vu + 3 * (vc - vu))


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guided_field_batches_both_predictions_correctly(w):
    z, t = torch.randn(5, 2), torch.rand(5)
    cond, uncond = torch.full((5,), 2.0), torch.zeros(5)
    field = guided_field(velocity, (cond,), (uncond,), w)
    expected = cfg_combine(velocity(z, t, uncond), velocity(z, t, cond), w)
    assert torch.allclose(field(z, t), expected)


def test_drop_rate_matches_p():
    mask = drop_mask(200_000, 0.463, make_generator(0))
    assert abs(mask.float().mean().item() - 0.463) < 0.005
    assert not drop_mask(1000, 0.0, make_generator(1)).any() and drop_mask(1000, 1.0, make_generator(1)).all()


def test_drop_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="p: expected a probability"):
        drop_mask(3, 1.5)
