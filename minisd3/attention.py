"""Multi-head attention for DiT and MM-DiT, with optional QK-norm and inspection of the logits.

    A = softmax(Q Kᵀ / √d) V   per head, d the head dimension
    QK-norm: Q ← RMSNorm(Q), K ← RMSNorm(K) per head, RMSNorm(u) = u / √(mean(u²) + ε) · g

Joint attention (MM-DiT) concatenates the context tokens and the image tokens along the sequence
for one attention, then splits the result back: every word sees every patch and vice versa.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H·d) → (B, H, L, d)."""
    return rearrange(x, "b l (h d) -> b h l d", h=heads)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) → (B, L, H·d)."""
    return rearrange(x, "b h l d -> b l (h d)")


class QKV(nn.Module):
    """One stream's projection to heads: q, k, v = W x + b (fused), then optional RMS QK-norm."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, eps: float = 1e-6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: expected a divisor of the width {dim}, got {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        head_dim = dim // heads
        self.q_norm = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = (split_heads(part, self.heads) for part in self.qkv(x).chunk(3, dim=-1))
        return self.q_norm(q), self.k_norm(k), v


class AttentionCore(nn.Module):
    """softmax(QKᵀ/√d)V through PyTorch's fused SDPA; with ``keep_logits`` on (for lessons), it
    computes the same explicitly and keeps the logits QKᵀ/√d (B, H, L, L) in ``self.logits``."""

    def __init__(self):
        super().__init__()
        self.keep_logits = False
        self.logits: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.keep_logits:
            return F.scaled_dot_product_attention(q, k, v)
        logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        self.logits = logits.detach()
        return logits.softmax(dim=-1).to(v.dtype) @ v


def joint_attention(core: AttentionCore, streams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                    ) -> list[torch.Tensor]:
    """Concatenate (q, k, v) of several streams along the sequence, attend once, split back.

    Returns each stream's output (B, L_i, H·d) in the order given.
    """
    lengths = [q.shape[2] for q, _, _ in streams]
    q, k, v = (torch.cat(parts, dim=2) for parts in zip(*streams))
    out = merge_heads(core(q, k, v))
    return list(out.split(lengths, dim=1))
