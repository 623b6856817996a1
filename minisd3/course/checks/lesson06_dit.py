"""Lesson 06 (patchify, adaLN-Zero, classifier-free guidance): the checks of ``patchify``, ``unpatchify``,
``modulate`` and ``cfg_combine``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from ... import blocks, guidance, patches
from ...seeding import make_generator, randn
from .core import Mistake, _call, _check, _compare

_PLAIN_RESHAPE = ("a plain reshape does not cut patches: it groups pixels that are neighbours in memory (runs of a "
                  "row), not p×p squares; split H into (H/p, p) and W into (W/p, p), permute to "
                  "(B, H/p, W/p, p, p, C), then flatten")


@_check("patchify", "matches minisd3.patches.patchify")
def check_patchify(patchify: Callable) -> None:
    """Check ``patchify(x, patch_size)``: (B, C, H, W) → (B, N, p·p·C), N = (H/p)·(W/p) patches in row-major
    order, each patch's features ordered (p_row, p_col, channel), as :func:`minisd3.patches.patchify`."""
    gen = make_generator(601)
    for shape, p in (((2, 3, 8, 12), 2), ((3, 2, 8, 8), 4)):
        x = randn(shape, gen)
        batch, channels = shape[0], shape[1]
        got = _call(patchify, "patchify", x, p)

        def layout(pattern):
            return rearrange(x, f"b c (h p) (w q) -> {pattern}", p=p, q=p)

        _compare(got, patches.patchify(x, p), [
            ("column_major", "patches in column-major order (a transposed patch grid): number them row by row, token "
             "n = row·(W/p) + col, as einops' `(h w)`, not `(w h)`", layout("b (w h) (p q c)")),
            ("channel_first", "features ordered channel-first (channel, p_row, p_col); the course and SD3 flatten each patch as "
             "(p_row, p_col, channel), channel last", layout("b (h w) (c p q)")),
            ("column_major_and_channel_first",
             "patches in column-major order and features channel-first: tokens go row by row (`(h w)`) and "
             "each patch flattens as (p_row, p_col, channel)", layout("b (w h) (c p q)")),
            ("patch_column_major", "each patch read column by column: flatten it as (p_row, p_col, channel), rows outer",
             layout("b (h w) (q p c)")),
            ("plain_reshape", _PLAIN_RESHAPE, x.reshape(batch, -1, p * p * channels)),
            ("plain_reshape_channels_last", _PLAIN_RESHAPE + " (moving the channels last first is not enough)",
             x.permute(0, 2, 3, 1).reshape(batch, -1, p * p * channels)),
        ], formula="the row-major patch tokens",
            shape_hint="(B, C, H, W) becomes (B, N, p·p·C) with N = (H/p)·(W/p) tokens")


@_check("unpatchify", "unpatchify(patchify(x)) gives x back, as minisd3.patches.unpatchify")
def check_unpatchify(unpatchify: Callable) -> None:
    """Check ``unpatchify(tokens, patch_size, grid)``: (B, rows·cols, p·p·C) → (B, C, rows·p, cols·p), the
    inverse of :func:`minisd3.patches.patchify` for ``grid = (rows, cols)``, on a non-square grid."""
    gen = make_generator(602)
    for shape, p in (((2, 3, 8, 12), 2), ((3, 2, 8, 8), 4)):
        x = randn(shape, gen)
        batch, channels, height, width = shape
        grid = (height // p, width // p)
        tokens = patches.patchify(x, p)
        got = _call(unpatchify, "unpatchify", tokens, p, grid)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch, channels, width, height) != tuple(x.shape):
            raise Mistake(f"rows and columns swapped: grid = (rows, cols) = {grid}, so the image is rows·p = {height} "
                          f"high and cols·p = {width} wide; rows is the first entry of grid", "grid_swapped")

        def layout(pattern):
            return rearrange(tokens, f"{pattern} -> b c (h p) (w q)", h=grid[0], w=grid[1], p=p, q=p)

        _compare(got, x, [
            ("column_major", "not the inverse of patchify: you read the tokens in column-major order (`(w h)`); patchify "
             "numbers the patches row by row, token n = row·cols + col", layout("b (w h) (p q c)")),
            ("channel_first",
             "not the inverse of patchify: you read each token's features channel-first (channel, p_row, p_col); "
             "patchify wrote them (p_row, p_col, channel)", layout("b (h w) (c p q)")),
            ("patch_column_major", "not the inverse of patchify: you read each patch column by column; its features are "
             "(p_row, p_col, channel), rows outer", layout("b (h w) (q p c)")),
            ("plain_reshape", "not the inverse of patchify: a plain reshape of the tokens does not put the p×p squares back; "
             "undo patchify's steps in reverse (unflatten, permute back, merge (rows, p) into H)",
             tokens.reshape(batch, channels, height, width)),
        ], formula="x (unpatchify(patchify(x)) must give x back)",
            shape_hint=f"for tokens (B, N, p·p·C) and grid = (rows, cols) = {grid} return (B, C, rows·p, cols·p) "
                       "with C = features/(p·p); rows is the first entry of grid")


_MODULATE_HINT = ("shift and scale are (B, D), one vector per sample: write shift[:, None] and scale[:, None] "
                  "(shape (B, 1, D)) to broadcast them over the L tokens of x (B, L, D)")


@_check("modulate", "matches minisd3.blocks.modulate")
def check_modulate(modulate: Callable) -> None:
    """Check ``modulate(x, shift, scale)`` → x·(1 + scale) + shift, with (B, D) shift and scale broadcast over
    the tokens of x (B, L, D); the second case has B = L, where a missing broadcast still runs."""
    gen = make_generator(603)
    for batch, length, dim in ((3, 5, 8), (4, 4, 6)):
        x = randn((batch, length, dim), gen)
        shift, scale = randn((batch, dim), gen), 0.5 * randn((batch, dim), gen)
        got = _call(modulate, "modulate", x, shift, scale, hint=_MODULATE_HINT)
        b, s = shift[:, None], scale[:, None]
        mutations = [
            ("missing_one_plus", "missing the 1 +: modulate(x) = x·(1 + scale) + shift, so that scale = shift = 0 (adaLN-Zero's "
             "start) leaves x unchanged", x * s + b),
            ("shift_scale_swapped", "shift and scale swapped: multiply by (1 + scale), then add shift", x * (1 + b) + s),
            ("shift_before_scale", "shift added before scaling: (x + shift)·(1 + scale); add it after, x·(1 + scale) + shift",
             (x + b) * (1 + s)),
            ("one_minus_scale", "x·(1 − scale): the scale enters as x·(1 + scale), so that scale = 0 leaves x unchanged "
             "and a positive scale enlarges it", x * (1 - s) + b),
            ("missing_shift", "missing the shift: modulate(x) = x·(1 + scale) + shift", x * (1 + s)),
            ("shift_subtracted", "the shift is added: x·(1 + scale) + shift, not − shift", x * (1 + s) - b),
        ]
        if batch == length:
            mutations.append(("no_token_broadcast",
                              f"no broadcasting over tokens: with B = L = {batch}, (B, D) lines up with the tokens "
                              "(L, D), so token l got sample l's scale; " + _MODULATE_HINT,
                              x * (1 + scale[None]) + shift[None]))
        _compare(got, blocks.modulate(x, shift, scale), mutations, formula="x·(1 + scale) + shift",
                 shape_hint=_MODULATE_HINT)


@_check("cfg_combine", "matches minisd3.guidance.cfg_combine")
def check_cfg_combine(cfg_combine: Callable) -> None:
    """Check ``cfg_combine(v_uncond, v_cond, w)`` → v_∅ + w·(v_c − v_∅) for w = 4, 1.5, 0 and 1."""
    gen = make_generator(604)
    for w, shape in ((4.0, (16, 2)), (1.5, (4, 1, 8, 8)), (0.0, (16, 2)), (1.0, (16, 2))):
        v_u, v_c = randn(shape, gen), randn(shape, gen)
        got = _call(cfg_combine, "cfg_combine", v_u, v_c, w)
        _compare(got, guidance.cfg_combine(v_u, v_c, w), [
            ("cond_uncond_swapped",
             "conditional and unconditional swapped: v = v_uncond + w·(v_cond − v_uncond), so that w = 0 gives "
             "v_uncond and w = 1 gives v_cond", v_c + w * (v_u - v_c)),
            ("sign_flipped", "sign flipped: guidance moves from v_uncond towards v_cond and past it, + w·(v_cond − v_uncond)",
             v_u - w * (v_c - v_u)),
            ("w_on_cond_only", "w applied to v_cond only: w multiplies the difference, v_uncond + w·(v_cond − v_uncond) "
             "(= w·v_cond + (1 − w)·v_uncond)", v_u + w * v_c),
            ("w_on_cond_only_no_uncond",
             "w applied to v_cond only and v_uncond dropped: v = w·v_cond + (1 − w)·v_uncond", w * v_c),
            ("w_on_cond_only_sign", "w applied to v_cond only: the weights of w·v_cond + (1 − w)·v_uncond sum to 1, "
             "the sign of (1 − w) included", w * v_c - (1 - w) * v_u),
            ("missing_uncond", "forgot to add v_uncond back: v = v_uncond + w·(v_cond − v_uncond)", w * (v_c - v_u)),
            ("started_from_cond",
             "started from v_cond: v_cond + w·(v_cond − v_uncond) is guidance with scale w + 1; in this course "
             "w = 1 must give the conditional model, so start from v_uncond", v_c + w * (v_c - v_u)),
        ], formula="v_uncond + w·(v_cond − v_uncond)")
