"""Nothing heavy in the training step: no value check that reads tensor data (a device→host sync, and a
graph break under torch.compile) runs inside it, so the MM-DiT's forward pass + rectified-flow loss
traces into a single graph."""
import pytest
import torch

from minisd3.models import DiT, DiTConfig, MMDiT, MMDiTConfig
from minisd3.rectified_flow import rf_loss
from minisd3.validation import check_time, values_checkable


@pytest.fixture
def dynamo():
    torch._dynamo.reset()
    yield torch._dynamo
    torch._dynamo.reset()


def test_the_mmdit_training_step_traces_without_graph_breaks(dynamo):
    torch.manual_seed(0)
    model = MMDiT(MMDiTConfig(input_size=4, in_channels=2, depth=2, heads=2, head_dim=8, context_dim=8, pooled_dim=8,
                              qk_norm=True))
    x0, ctx, pooled = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 8), torch.randn(2, 8)
    eps, t = torch.randn_like(x0), torch.rand(2)  # drawn by the caller, as the training engine does

    def step(x0, ctx, pooled, eps, t):  # as TextToImage.loss computes it once the text is encoded
        return rf_loss(lambda z, t_: model(z, t_, ctx, pooled), x0, eps=eps, t=t)

    explanation = dynamo.explain(step)(x0, ctx, pooled, eps, t)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_the_class_conditional_training_step_traces_without_graph_breaks(dynamo):
    model = DiT(DiTConfig(input_size=4, in_channels=1, depth=1, heads=2, hidden=16, num_classes=3))
    x0, labels = torch.randn(2, 1, 4, 4), torch.tensor([0, 3])
    explanation = dynamo.explain(lambda x0, labels: rf_loss(lambda z, t: model(z, t, labels), x0))(x0, labels)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_value_checks_run_only_where_they_are_free(monkeypatch):
    bad = torch.tensor([0.5, 2.0])
    assert values_checkable(bad)
    with pytest.raises(ValueError, match=r"t: expected values in \[0, 1\]"):
        check_time(bad)
    assert not values_checkable(torch.zeros(2, device="meta"))  # stands in for an accelerator
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not values_checkable(bad)
    assert check_time(bad) is bad  # shape and dtype are still checked, the values are not
    with pytest.raises(ValueError, match="t: expected 1 dimensions"):
        check_time(bad[None])
