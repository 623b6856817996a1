"""Diffusion transformers: a class-conditional DiT (lesson 06) and SD3's MM-DiT (lesson 07).

Both run  image → patches → tokens + positions → blocks → final adaLN + Linear → unpatchify,
and predict the velocity v̂(x_t, t) with the shape of x_t.

MM-DiT conditioning (Esser et al. 2024), from the text encoder's token sequence and pooled vector:
    c_vec  = TimestepEmbedder(t) + MLP(pooled)                  (B, D)  → every adaLN
    c_ctxt = Linear(text token sequence)                         (B, L, D) → the context stream
Model size rule of the paper: hidden width 64·depth, heads = depth (head dim 64), MLP ×4, 2×2 patches.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .blocks import DiTBlock, FinalLayer, JointBlock
from .embeddings import TimestepEmbedder, sincos_2d_positions
from .patches import check_patchable, patchify, unpatchify
from .validation import check_tensor, check_time, values_checkable

POSITION_LAYOUTS = ("scaled", "extended")
"""How :class:`PatchEmbedding` lays out the positions of a patch grid other than its base grid."""


class PatchEmbedding(nn.Module):
    """Linear(patchify(x)) + fixed 2-D sin-cos positions.

    The base grid (``position_base`` patches a side; default input_size/p, the grid the model is
    trained on) has positions at integer coordinates 0 … base − 1. Another h×w grid, e.g. a larger
    canvas at fine-tuning or a non-square one, is laid out by ``layout``:

        "scaled"    spacing base/h and base/w: the grid spans the base grid's range, finer (PixArt-α's
                    interpolation scale; diffusers' ``get_2d_sincos_pos_embed`` with ``base_size``; the SD3
                    paper's spacing 256/S for square images). A non-square grid is stretched.
        "extended"  spacing 1, centred on the base grid: coordinate i − (h − base)/2, so the base grid's
                    positions sit in the middle and a larger grid continues beyond them (the SD3 paper extends
                    its grid this way sideways for non-square buckets and centre-crops it; diffusers'
                    ``pos_embed_max_size`` crops a fixed table at one spacing).

    With ``pos_embed_max_size`` M (SD3, diffusers' ``PatchEmbed``), a table for an M×M grid with spacing
    base/M is cropped at its centre to the image's grid instead. Raises ValueError for an unknown
    ``layout``, a ``position_base`` < 1, or (with M) a grid larger than M×M.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, input_size: int,
                 pos_embed_max_size: int | None = None, position_base: int | None = None, layout: str = "scaled"):
        super().__init__()
        if layout not in POSITION_LAYOUTS:
            raise ValueError(f"position_layout: expected one of {POSITION_LAYOUTS}, got {layout!r}")
        if position_base is not None and position_base < 1:
            raise ValueError(f"position_base: expected a positive number of patches, got {position_base}")
        self.patch_size = patch_size
        self.base = position_base or input_size // patch_size
        self.max_size = pos_embed_max_size
        self.layout = layout
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim)
        size = pos_embed_max_size or self.base
        spacing = self.base / size
        self.register_buffer("table", sincos_2d_positions(dim, size, size, spacing, spacing), persistent=False)

    def positions(self, rows: int, cols: int) -> torch.Tensor:
        """(rows·cols, D) positions for a rows×cols patch grid."""
        if self.max_size is not None:
            if rows > self.max_size or cols > self.max_size:
                raise ValueError(
                    f"x: expected at most {self.max_size}×{self.max_size} patches (pos_embed_max_size), "
                    f"got {rows}×{cols}"
                )
            top, left = (self.max_size - rows) // 2, (self.max_size - cols) // 2
            grid = self.table.reshape(self.max_size, self.max_size, -1)[top:top + rows, left:left + cols]
            return grid.reshape(rows * cols, -1)
        if rows == cols == self.base:
            return self.table
        dim = self.table.shape[1]
        if self.layout == "scaled":
            return sincos_2d_positions(dim, rows, cols, self.base / rows, self.base / cols).to(self.table.device)
        origin = ((self.base - rows) / 2, (self.base - cols) / 2)
        return sincos_2d_positions(dim, rows, cols, origin=origin).to(self.table.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.proj(patchify(x, self.patch_size))
        return tokens + self.positions(rows, cols).to(tokens.dtype)


@dataclass
class MMDiTConfig:
    """Shape of an MM-DiT. ``hidden`` = heads·head_dim; ``out_channels`` defaults to in_channels."""

    input_size: int = 32
    in_channels: int = 4
    out_channels: int | None = None
    patch_size: int = 2
    depth: int = 4
    heads: int = 4
    head_dim: int = 64
    context_dim: int = 64
    pooled_dim: int = 64
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    pos_embed_max_size: int | None = None
    position_base: int | None = None  # patches a side with positions 0 … base − 1 (default input_size/p)
    position_layout: str = "scaled"  # other grids: "scaled" or "extended" (PatchEmbedding)

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @classmethod
    def from_depth(cls, depth: int, **overrides) -> "MMDiTConfig":
        """The paper's size rule: hidden 64·depth, heads = depth (head dim 64), MLP ×4, 2×2 patches."""
        return cls(depth=depth, heads=depth, head_dim=64, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_conditioned_input(x, t, patch_size, in_channels):
    check_patchable(x, patch_size)
    check_tensor(x, "x", ndim=4)
    if x.shape[1] != in_channels:
        raise ValueError(f"x: expected {in_channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    check_time(t, "t", batch=x.shape[0])


class MMDiT(nn.Module):
    """SD3's multimodal diffusion transformer: ``model(x, t, c_ctxt, pooled)`` → v̂ shaped like x.

    x (B, C, H, W), t (B,) in [0, 1] (t = 0 data, t = 1 noise), c_ctxt (B, L, context_dim)
    text tokens, pooled (B, pooled_dim) pooled text vector; inside, c_vec = :meth:`conditioning`.
    """

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = config
        dim, p = config.hidden, config.patch_size
        out_channels = config.out_channels or config.in_channels
        self.patch_embed = PatchEmbedding(config.in_channels, dim, p, config.input_size, config.pos_embed_max_size,
                                          config.position_base, config.position_layout)
        self.t_embedder = TimestepEmbedder(dim)
        self.pooled_embedder = nn.Sequential(nn.Linear(config.pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.context_embedder = nn.Linear(config.context_dim, dim)
        self.blocks = nn.ModuleList(
            JointBlock(dim, config.heads, config.mlp_ratio, config.qk_norm, context_pre_only=i == config.depth - 1)
            for i in range(config.depth)
        )
        self.final = FinalLayer(dim, p * p * out_channels)

    def conditioning(self, t: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """c_vec = TimestepEmbedder(t) + MLP(pooled), (B, D): what modulates every block."""
        return self.t_embedder(t) + self.pooled_embedder(pooled)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c_ctxt: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_conditioned_input(x, t, cfg.patch_size, cfg.in_channels)
        check_tensor(c_ctxt, "c_ctxt", shape=(x.shape[0], None, cfg.context_dim))
        check_tensor(pooled, "pooled", shape=(x.shape[0], cfg.pooled_dim))
        grid = (x.shape[-2] // cfg.patch_size, x.shape[-1] // cfg.patch_size)
        tokens = self.patch_embed(x)
        c_vec = self.conditioning(t, pooled)
        ctx = self.context_embedder(c_ctxt)
        for block in self.blocks:
            tokens, ctx = block(tokens, ctx, c_vec)
        return unpatchify(self.final(tokens, c_vec), cfg.patch_size, grid)


@dataclass
class DiTConfig:
    """Shape of a class-conditional DiT; ``num_classes`` labels plus one "no label" for CFG."""

    input_size: int = 8
    in_channels: int = 1
    patch_size: int = 2
    depth: int = 4
    heads: int = 4
    hidden: int = 128
    num_classes: int = 10
    mlp_ratio: float = 4.0


class DiT(nn.Module):
    """Class-conditional DiT: ``model(x, t, labels)`` → v̂; label ``num_classes`` means unconditional."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim, p = config.hidden, config.patch_size
        self.patch_embed = PatchEmbedding(config.in_channels, dim, p, config.input_size)
        self.t_embedder = TimestepEmbedder(dim)
        self.label_embedding = nn.Embedding(config.num_classes + 1, dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final = FinalLayer(dim, p * p * config.in_channels)

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        _check_conditioned_input(x, t, cfg.patch_size, cfg.in_channels)
        if labels is None:
            labels = torch.full((x.shape[0],), self.null_label, device=x.device)
        if labels.shape != (x.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(f"labels: expected int64 of shape ({x.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and values_checkable(labels) and (labels.min() < 0 or labels.max() > self.null_label):
            raise ValueError(f"labels: expected values in [0, {self.null_label}], got [{labels.min()}, {labels.max()}]")
        grid = (x.shape[-2] // cfg.patch_size, x.shape[-1] // cfg.patch_size)
        cond = self.t_embedder(t) + self.label_embedding(labels)
        tokens = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, cond)
        return unpatchify(self.final(tokens, cond), cfg.patch_size, grid)
