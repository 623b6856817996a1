"""Multi-head attention for DiT and MM-DiT, with optional QK-norm, and recording of the logits.

    A = softmax(Q Kᵀ / √d) V   per head, d the head dimension
    QK-norm: Q ← RMSNorm(Q), K ← RMSNorm(K) per head, RMSNorm(u) = u / √(mean(u²) + ε) · g

Joint attention (MM-DiT) concatenates the context tokens and the image tokens along the sequence
for one attention, then splits the result back: every word sees every patch and vice versa.

Lessons read the attention through :func:`record_attention`, a context manager that hooks every
:class:`AttentionCore` of a model from outside; the cores themselves hold no lesson-only state.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
        if isinstance(self.q_norm, nn.RMSNorm):  # normalised in float32 under bf16 autocast, then cast back
            q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        return q, k, v


class AttentionCore(nn.Module):
    """softmax(QKᵀ/√d)V for (B, H, L, d) q, k, v through PyTorch's fused SDPA.

    One module per block, so that :func:`record_attention` can find and hook each attention.
    On the CPU, bfloat16 inputs (autocast) are computed in float32 and cast back: PyTorch's CPU
    flash kernel is about 6× slower in bfloat16 than in float32 for the course's short sequences
    (27 tokens, head 32: 29 ms against 5 ms forward + backward for a batch of 64,
    ``benchmarks/cpu_step.py``), and float32 softmax is the more accurate one anyway.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            with torch.autocast("cpu", enabled=False):  # autocast would cast the float32 inputs back
                return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v)


def attention_logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """S = QKᵀ/√d, (B, H, L, L), in float32: the logits whose softmax weighs v in :class:`AttentionCore`."""
    q, k = q.float(), k.float()
    return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5


def joint_attention(core: AttentionCore, streams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                    ) -> list[torch.Tensor]:
    """Concatenate (q, k, v) of several streams along the sequence, attend once, split back.

    Returns each stream's output (B, L_i, H·d) in the order given.
    """
    lengths = [q.shape[2] for q, _, _ in streams]
    q, k, v = (torch.cat(parts, dim=2) for parts in zip(*streams))
    out = merge_heads(core(q, k, v))
    return list(out.split(lengths, dim=1))


def attention_cores(model: nn.Module) -> list[AttentionCore]:
    """Every :class:`AttentionCore` inside ``model``, in module order (one per block of a DiT or MM-DiT)."""
    return [module for module in model.modules() if isinstance(module, AttentionCore)]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Record the attention logits S = QKᵀ/√d of every block of ``model`` while inside the ``with``:

        with record_attention(model.mmdit) as logits:
            model.mmdit(z, t, c_ctxt, pooled)
        attention_statistics(logits[0])        # block 0's logits, (B, H, L, L)

    The list has one entry per :class:`AttentionCore` in module order (one per block), None until
    that core runs, then the logits of its latest call (float32, detached): read them after each
    forward pass of a loop. A forward hook on each core recomputes S from the q and k it was
    called with; the cores keep running the fused kernel, and the hooks are removed on exit.
    """
    cores = attention_cores(model)
    if not cores:
        raise ValueError(f"model: expected a module containing AttentionCore layers, got a {type(model).__name__} "
                         "without any")
    logits: list[torch.Tensor | None] = [None] * len(cores)

    def recorder(index: int):
        def hook(core: nn.Module, args: tuple, output: torch.Tensor) -> None:
            q, k, _ = args
            with torch.no_grad():
                logits[index] = attention_logits(q.detach(), k.detach())
        return hook

    handles = [core.register_forward_hook(recorder(i)) for i, core in enumerate(cores)]
    try:
        yield logits
    finally:
        for handle in handles:
            handle.remove()


def _check_logits(logits, name: str = "logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[-1] != logits.shape[-2]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name}: expected attention logits of shape (B, H, L, L), got {got}")
    return logits


def attention_statistics(logits: torch.Tensor) -> tuple[float, float]:
    """(largest logit, mean entropy) of one attention's logits S = QKᵀ/√d, shape (B, H, L, L):

        max logit = max_{b,h,i,j} S_bhij
        entropy   = mean_{b,h,i} −Σ_j P_bhij · log P_bhij,   P = softmax_j(S),   0 ≤ entropy ≤ log L

    Entropy near 0 means each query puts all its weight on one key (collapsed attention);
    log L means it spreads it evenly over all L keys.
    """
    logits = _check_logits(logits).float()
    log_p = logits.log_softmax(dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
    return float(logits.max()), float(entropy)


def word_patch_attention(logits: torch.Tensor, word_index: int, context_length: int, grid: tuple[int, int],
                         direction: str = "patches_to_word") -> torch.Tensor:
    """Attention between one context token and every image patch, averaged over heads, as a patch grid.

    The joint sequence is [context (L_c tokens); image (N = rows·cols patches)] and P = softmax_j(S)
    over all its L_c + N keys. For the token w = ``word_index``:

        "patches_to_word":  A[b, n] = mean_h P[b, h, L_c + n, w]   the weight patch n's query gives the word
        "word_to_patches":  A[b, n] = mean_h P[b, h, w, L_c + n]   the weight the word's query gives patch n

    Returns A reshaped to (B, rows, cols), patches in row-major order.
    """
    logits = _check_logits(logits)
    rows, cols = grid
    if context_length < 1 or context_length + rows * cols != logits.shape[-1]:
        raise ValueError(f"context_length, grid: expected context_length + rows·cols = {logits.shape[-1]} tokens, "
                         f"got {context_length} + {rows}·{cols}")
    if not 0 <= word_index < context_length:
        raise ValueError(f"word_index: expected a context position in [0, {context_length - 1}], got {word_index}")
    probs = logits.float().softmax(dim=-1).mean(dim=1)  # (B, L, L), averaged over heads
    if direction == "patches_to_word":
        weights = probs[:, context_length:, word_index]
    elif direction == "word_to_patches":
        weights = probs[:, word_index, context_length:]
    else:
        raise ValueError(f"direction: expected 'patches_to_word' or 'word_to_patches', got {direction!r}")
    return weights.reshape(-1, rows, cols)
