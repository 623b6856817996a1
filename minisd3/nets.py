"""Small networks for the 2-D toys and 8×8 digits: an MLP on [x, emb(t)].

The same network predicts a velocity (rectified flow) or a noise (DDPM): both are a vector field
shaped like x. Images are flattened in and reshaped out.
"""
from __future__ import annotations

import torch
from torch import nn

from .embeddings import timestep_embedding
from .validation import check_tensor, check_time


class TimeMLP(nn.Module):
    """f(x, t) = MLP([flatten(x), emb(t)]) reshaped like x; SiLU activations.

    ``data_shape`` is the shape of one sample, e.g. (2,) for points or (1, 8, 8) for digits.
    ``num_classes`` adds a learned class embedding (index ``num_classes`` is "no label", for CFG).
    """

    def __init__(self, data_shape: tuple[int, ...], hidden: int = 256, depth: int = 3, time_dim: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.time_dim = time_dim
        self.num_classes = num_classes
        dim = int(torch.tensor(self.data_shape).prod())
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.time_proj = nn.Linear(time_dim, time_dim)
        self.class_embedding = nn.Embedding(num_classes + 1, time_dim) if num_classes else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor(x, "x", shape=(None, *self.data_shape))
        check_time(t, "t", batch=x.shape[0])
        cond = self.time_proj(timestep_embedding(t, self.time_dim))
        if self.class_embedding is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, device=x.device)
            cond = cond + self.class_embedding(labels)
        out = self.net(torch.cat([x.flatten(1), cond], dim=1))
        return out.reshape(x.shape)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
