"""Weights between minisd3's MM-DiT and diffusers' ``SD3Transformer2DModel``, both ways.

The two compute the same function; only names and layouts differ:
- diffusers' patch embedding is a Conv2d (D, C, p, p); minisd3 uses Linear on patchified tokens
  whose features are ordered (p_row, p_col, C), so the kernel is permuted to (D, p, p, C).
- diffusers keeps q, k, v as three Linears; minisd3 fuses them into one (concatenated rows).
- diffusers' continuous adaLN (the final layer and the last block's pre-only context stream)
  emits (scale, shift); minisd3 emits (shift, scale) everywhere, so the halves are swapped.
- diffusers' model takes ``timestep = 1000·t``; minisd3 takes t ∈ [0, 1] and scales inside.
SD3.5's extra attention layers (``dual_attention_layers``) have no counterpart here and are refused.
"""
from __future__ import annotations

import torch

from .models import MMDiT, MMDiTConfig


def config_from_diffusers(config) -> MMDiTConfig:
    """The :class:`MMDiTConfig` for a diffusers SD3 transformer config."""
    if tuple(config.get("dual_attention_layers", ()) or ()):
        raise ValueError("config: dual_attention_layers (SD3.5's extra attention) is not supported by minisd3's MM-DiT")
    qk = config.get("qk_norm")
    if qk not in (None, "rms_norm"):
        raise ValueError(f"config: expected qk_norm None or 'rms_norm', got {qk!r}")
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    if config["caption_projection_dim"] != hidden:
        raise ValueError(
            f"config: expected caption_projection_dim equal to the width {hidden}, got {config['caption_projection_dim']}"
        )
    return MMDiTConfig(
        input_size=config["sample_size"], in_channels=config["in_channels"], out_channels=config["out_channels"],
        patch_size=config["patch_size"], depth=config["num_layers"], heads=config["num_attention_heads"],
        head_dim=config["attention_head_dim"], context_dim=config["joint_attention_dim"],
        pooled_dim=config["pooled_projection_dim"], qk_norm=qk == "rms_norm",
        pos_embed_max_size=config["pos_embed_max_size"],
    )


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _linear(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.weight", f"{theirs}.weight"), (f"{ours}.bias", f"{theirs}.bias")]


def _name_pairs(config: MMDiTConfig) -> list[tuple[str, str]]:
    """(minisd3 name, diffusers name) for every tensor copied one-to-one."""
    pairs = _linear("patch_embed.proj", "pos_embed.proj")
    pairs += _linear("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    pairs += _linear("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    pairs += _linear("pooled_embedder.0", "time_text_embed.text_embedder.linear_1")
    pairs += _linear("pooled_embedder.2", "time_text_embed.text_embedder.linear_2")
    pairs += _linear("context_embedder", "context_embedder")
    pairs += _linear("final.modulation.linear", "norm_out.linear") + _linear("final.linear", "proj_out")
    for i in range(config.depth):
        ours, theirs = f"blocks.{i}", f"transformer_blocks.{i}"
        pre_only = i == config.depth - 1
        pairs += _linear(f"{ours}.image.modulation.linear", f"{theirs}.norm1.linear")
        pairs += _linear(f"{ours}.context.modulation.linear", f"{theirs}.norm1_context.linear")
        pairs += _linear(f"{ours}.image.out", f"{theirs}.attn.to_out.0")
        pairs += _linear(f"{ours}.image.mlp.0", f"{theirs}.ff.net.0.proj") + _linear(f"{ours}.image.mlp.2", f"{theirs}.ff.net.2")
        if not pre_only:
            pairs += _linear(f"{ours}.context.out", f"{theirs}.attn.to_add_out")
            pairs += _linear(f"{ours}.context.mlp.0", f"{theirs}.ff_context.net.0.proj")
            pairs += _linear(f"{ours}.context.mlp.2", f"{theirs}.ff_context.net.2")
        if config.qk_norm:
            pairs += [(f"{ours}.image.qkv.q_norm.weight", f"{theirs}.attn.norm_q.weight"),
                      (f"{ours}.image.qkv.k_norm.weight", f"{theirs}.attn.norm_k.weight"),
                      (f"{ours}.context.qkv.q_norm.weight", f"{theirs}.attn.norm_added_q.weight"),
                      (f"{ours}.context.qkv.k_norm.weight", f"{theirs}.attn.norm_added_k.weight")]
    return pairs


def _swapped_names(config: MMDiTConfig) -> set[str]:
    """minisd3 tensors whose (shift, scale) halves are (scale, shift) in diffusers."""
    names = {"final.modulation.linear.weight", "final.modulation.linear.bias"}
    last = f"blocks.{config.depth - 1}.context.modulation.linear"
    return names | {f"{last}.weight", f"{last}.bias"}


def _qkv_names(config: MMDiTConfig):
    for i in range(config.depth):
        for stream, prefix in (("image", "attn.to_"), ("context", "attn.add_")):
            for kind in ("weight", "bias"):
                suffix = "" if stream == "image" else "_proj"
                theirs = [f"transformer_blocks.{i}.{prefix}{x}{suffix}.{kind}" for x in "qkv"]
                yield f"blocks.{i}.{stream}.qkv.qkv.{kind}", theirs


def mmdit_from_diffusers(m) -> MMDiT:
    """A minisd3 :class:`MMDiT` with the config and weights of a diffusers ``SD3Transformer2DModel``."""
    config = config_from_diffusers(m.config)
    theirs = m.state_dict()
    model = MMDiT(config).to(dtype=next(m.parameters()).dtype)
    ours: dict[str, torch.Tensor] = {}
    swapped = _swapped_names(config)
    for mine, name in _name_pairs(config):
        tensor = theirs[name]
        ours[mine] = _swap_halves(tensor) if mine in swapped else tensor
    conv = theirs["pos_embed.proj.weight"]  # (D, C, p, p) → (D, p·p·C) in patchify's (p, q, c) order
    ours["patch_embed.proj.weight"] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
    for mine, names in _qkv_names(config):
        ours[mine] = torch.cat([theirs[n] for n in names], dim=0)
    model.load_state_dict(ours, strict=True)
    return model.to(next(m.parameters()).device)


def diffusers_config(config: MMDiTConfig) -> dict:
    """The ``SD3Transformer2DModel`` keyword arguments for a minisd3 config."""
    return dict(
        sample_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
        num_layers=config.depth, attention_head_dim=config.head_dim, num_attention_heads=config.heads,
        joint_attention_dim=config.context_dim, caption_projection_dim=config.hidden,
        pooled_projection_dim=config.pooled_dim, out_channels=config.out_channels or config.in_channels,
        pos_embed_max_size=config.pos_embed_max_size, qk_norm="rms_norm" if config.qk_norm else None,
    )


def mmdit_to_diffusers(model: MMDiT):
    """A diffusers ``SD3Transformer2DModel`` with the config and weights of a minisd3 :class:`MMDiT`."""
    from diffusers import SD3Transformer2DModel

    config = model.config
    if config.mlp_ratio != 4.0:
        raise ValueError(f"model: diffusers' SD3 block has MLP ratio 4, got {config.mlp_ratio}")
    target = SD3Transformer2DModel(**diffusers_config(config))
    ours = model.state_dict()
    theirs: dict[str, torch.Tensor] = {}
    swapped = _swapped_names(config)
    for mine, name in _name_pairs(config):
        tensor = ours[mine]
        theirs[name] = _swap_halves(tensor) if mine in swapped else tensor
    p, dim = config.patch_size, config.hidden
    theirs["pos_embed.proj.weight"] = ours["patch_embed.proj.weight"].reshape(dim, p, p, -1).permute(0, 3, 1, 2)
    for mine, names in _qkv_names(config):
        for name, part in zip(names, ours[mine].chunk(3, dim=0)):
            theirs[name] = part
    expected = set(target.state_dict())
    missing = expected - set(theirs) - {"pos_embed.pos_embed"}
    if missing:
        raise ValueError(f"model: no minisd3 tensor for diffusers' {sorted(missing)}")
    if "pos_embed.pos_embed" in expected:
        theirs["pos_embed.pos_embed"] = target.state_dict()["pos_embed.pos_embed"]
    target.load_state_dict({k: v.contiguous() for k, v in theirs.items()}, strict=True)
    return target.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
