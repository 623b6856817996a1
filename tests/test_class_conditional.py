"""Lesson 06's class-conditional recipe: label dropout at rate p, reproducible, shape-checked."""
import pytest
import torch

from minisd3.training import train_class_conditional


class Recorder(torch.nn.Module):
    """A linear velocity model that records the labels it is given."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.seen = []

    def forward(self, z, t, labels):
        self.seen.append(labels.clone())
        return self.linear(z)


def test_labels_are_dropped_to_the_null_label_at_rate_p():
    data, labels = torch.randn(50, 2), torch.arange(50) % 5
    model = Recorder()
    train_class_conditional(model, data, labels, null_label=5, steps=40, batch_size=256, p_uncond=0.25, progress=False)
    seen = torch.cat(model.seen)
    assert abs((seen == 5).float().mean().item() - 0.25) < 0.02
    assert set(seen.tolist()) <= set(range(6))


def test_same_seed_same_losses_and_label_shape_checked():
    data, labels = torch.randn(50, 2), torch.arange(50) % 5
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_class_conditional(Recorder(), data, labels, 5, steps=5, batch_size=16, progress=False))
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match=r"labels: expected shape \(50,\)"):
        train_class_conditional(Recorder(), data, labels[:10], 5, steps=1, progress=False)
