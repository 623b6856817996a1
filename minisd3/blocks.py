"""Transformer blocks with adaLN-Zero: DiT's single-stream block and SD3's dual-stream MM-DiT block.

adaLN-Zero (Peebles & Xie 2023): a conditioning vector c gives, through Linear(SiLU(c)),
a shift, scale and gate for the attention and for the MLP of a block:

    modulate(x) = LN(x)·(1 + scale) + shift          (LayerNorm without affine, ε = 1e-6)
    x ← x + gate_attn · Attn(modulate_attn(x))
    x ← x + gate_mlp  · MLP(modulate_mlp(x))

The Linear is initialised to zero, so every gate is 0 and a block is the identity at start.

MM-DiT (Esser et al. 2024, Fig. 2): two streams, context tokens c and image tokens x, each with
its own adaLN, q/k/v projections, output projection and MLP; q, k, v of both streams are
concatenated for one joint attention and the result split back. Both streams are modulated
from the same c_vec = TimestepEmbedder(t) + MLP(pooled text vector) (``MMDiT.conditioning``).
The last block's context stream is "pre-only": it is normalised and projected to q, k, v, but
its output is not used, so it has no output projection or MLP.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import QKV, AttentionCore, joint_attention, merge_heads

LN_EPS = 1e-6


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x·(1 + scale) + shift, with (B, D) shift and scale broadcast over the tokens of x (B, L, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNZero(nn.Module):
    """c ↦ Linear(SiLU(c)) split into ``chunks`` vectors of width ``dim`` (zero-initialised)."""

    def __init__(self, dim: int, chunks: int, cond_dim: int | None = None):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(cond_dim or dim, chunks * dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(nn.functional.silu(c)).chunk(self.chunks, dim=-1)


def mlp(dim: int, ratio: float = 4.0) -> nn.Sequential:
    """Linear → GELU (tanh approximation) → Linear, hidden width ratio·dim."""
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm without affine parameters (the modulation supplies scale and shift)."""
    return nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)


class DiTBlock(nn.Module):
    """One DiT block: adaLN-Zero, self-attention over the image tokens, MLP (module docstring)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.modulation = AdaLNZero(dim, 6)
        self.norm1, self.norm2 = layer_norm(dim), layer_norm(dim)
        self.qkv = QKV(dim, heads, qk_norm)
        self.attention = AttentionCore()
        self.out = nn.Linear(dim, dim)
        self.mlp = mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c)
        q, k, v = self.qkv(modulate(self.norm1(x), shift_a, scale_a))
        x = x + gate_a[:, None] * self.out(merge_heads(self.attention(q, k, v)))
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class Stream(nn.Module):
    """One stream's own weights inside an MM-DiT block: adaLN, q/k/v (+ QK-norm), output, MLP.

    ``pre_only`` keeps just the first half (adaLN shift/scale and q/k/v).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.modulation = AdaLNZero(dim, 2 if pre_only else 6)
        self.norm1 = layer_norm(dim)
        self.qkv = QKV(dim, heads, qk_norm)
        if not pre_only:
            self.out = nn.Linear(dim, dim)
            self.norm2 = layer_norm(dim)
            self.mlp = mlp(dim, mlp_ratio)

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor):
        """Modulate and project: returns (q, k, v) and the MLP's modulation for later."""
        mods = self.modulation(c)
        shift_a, scale_a = mods[0], mods[1]
        return self.qkv(modulate(self.norm1(x), shift_a, scale_a)), mods[2:]

    def post_attention(self, x: torch.Tensor, attended: torch.Tensor, mods) -> torch.Tensor:
        """Gated residuals: x + g_a·Out(attended), then x + g_m·MLP(modulate(LN(x)))."""
        gate_a, shift_m, scale_m, gate_m = mods
        x = x + gate_a[:, None] * self.out(attended)
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class JointBlock(nn.Module):
    """The MM-DiT block: separate weights per stream, one attention over [context; image]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 context_pre_only: bool = False):
        super().__init__()
        self.context = Stream(dim, heads, mlp_ratio, qk_norm, pre_only=context_pre_only)
        self.image = Stream(dim, heads, mlp_ratio, qk_norm)
        self.attention = AttentionCore()

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, c_vec: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D) image tokens, ctx (B, L, D) context tokens, c_vec (B, D) → updated (x, ctx)."""
        qkv_ctx, mods_ctx = self.context.pre_attention(ctx, c_vec)
        qkv_img, mods_img = self.image.pre_attention(x, c_vec)
        out_ctx, out_img = joint_attention(self.attention, [qkv_ctx, qkv_img])
        x = self.image.post_attention(x, out_img, mods_img)
        ctx = None if self.context.pre_only else self.context.post_attention(ctx, out_ctx, mods_ctx)
        return x, ctx


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + LayerNorm, then a zero-initialised Linear to p·p·C_out per token."""

    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.modulation = AdaLNZero(dim, 2)
        self.norm = layer_norm(dim)
        self.linear = nn.Linear(dim, out_features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)
        return self.linear(modulate(self.norm(x), shift, scale))
