"""Lesson 06 (patchify, adaLN-Zero, classifier-free guidance): the checks of ``patchify``, ``unpatchify``,
``modulate`` and ``cfg_combine``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from ... import blocks, guidance, patches, rectified_flow
from ...seeding import make_generator, randn
from .core import Mistake, _call, _check, _compare, _curved_field

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
            ("strided_pixels", "each token gathers pixels p apart across the image, not one p×p square: split H and W "
             "as (h p) and (w q), the patch index outer, not (p h)",
             rearrange(x, "b c (p h) (q w) -> b (h w) (p q c)", p=p, q=p)),
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
            ("strided_pixels", "not the inverse of patchify: you spread each token's pixels p apart across the image; "
             "a token is one p×p square, so merge (rows, p) into H and (cols, p) into W, the patch index outer, not (p h)",
             rearrange(tokens, "b (h w) (p q c) -> b c (p h) (q w)", h=grid[0], w=grid[1], p=p, q=p)),
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


# ---------------------------------------------------------------------------------------------
# guided_sample (a whole piece: a class-conditional sampler with classifier-free guidance)
# ---------------------------------------------------------------------------------------------

def _guided_sample_reference(model: Callable, noise: torch.Tensor, labels: torch.Tensor, null_label: int, w: float,
                             steps: int) -> torch.Tensor:
    """The package's class-conditional sampler: Euler (:func:`minisd3.rectified_flow.sample`) on
    :func:`minisd3.guidance.guided_field` with the labels as the condition and ``null_label`` as the null one."""
    null = torch.full_like(labels, null_label)
    return rectified_flow.sample(guidance.guided_field(model, (labels,), (null,), w), noise, steps)


class _ClassField:
    """A known class-conditional field v(z, t, y) standing in for a DiT; it records every call's (t, y) and insists
    on t being a float (B,) tensor and y an integer (B,) tensor, as ``DiT.forward(x, t, labels)`` does."""

    def __init__(self, num_classes: int, shape: tuple[int, ...], seed: int):
        gen = make_generator(seed)
        self.offsets = randn((num_classes + 1, *shape), gen)
        self.gains = 0.5 + torch.rand(num_classes + 1, generator=gen)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def field(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gain = self.gains[labels].reshape(-1, *[1] * (z.ndim - 1))
        return gain * _curved_field(z, t) + self.offsets[labels]

    def __call__(self, z: torch.Tensor, t, labels=None) -> torch.Tensor:
        batch = z.shape[0]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (batch,) or not t.is_floating_point():
            raise Mistake(f"the model got t = {t!r}; give it a float tensor of shape ({batch},), one time per sample "
                          f"(e.g. torch.full(({batch},), t))", "time_wrong_shape")
        if labels is None:
            raise Mistake("the model got no labels: pass the class labels for v(z, t | y) and a tensor filled with "
                          "null_label for v(z, t | ∅), model(z, t, labels)", "labels_missing")
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (batch,) or labels.is_floating_point():
            raise Mistake(f"the model's labels should be an integer tensor of shape ({batch},), one class per sample "
                          f"(torch.full_like(labels, null_label) for the null class), got {labels!r}", "labels_wrong")
        self.calls.append((t.detach().clone(), labels.detach().clone()))
        return self.field(z, t.to(z.dtype), labels)


def _guided_variant(field: Callable, noise: torch.Tensor, labels: torch.Tensor, null_label: int, w: float, steps: int,
                    combine=lambda u, c, w: u + w * (c - u), sign: float = -1.0, at_end: bool = False,
                    step_size: bool = True) -> torch.Tensor:
    """Euler with classifier-free guidance with one knob turned (the defaults are the reference)."""
    null = torch.full_like(labels, null_label)
    grid = torch.linspace(1.0, 0.0, steps + 1)
    z = noise
    for t, t_next in zip(grid[:-1], grid[1:]):
        tt = (t_next if at_end else t).expand(z.shape[0])
        v = combine(field(z, tt, null), field(z, tt, labels), w)
        z = z + sign * ((t - t_next) if step_size else 1.0) * v
    return z


@_check("guided_sample", "matches Euler on minisd3.guidance.guided_field: v_∅ + w·(v_y − v_∅) at every step")
def check_guided_sample(guided_sample: Callable) -> None:
    """Check ``guided_sample(model, noise, labels, null_label, w, steps)`` → the final samples against Euler on the
    package's guided field (:func:`minisd3.guidance.guided_field`), on a recording class-conditional field: points
    and 1×4×4 images, w = 3 and w = 0.5 (and w = 1, where the unconditional prediction may be skipped). Either two
    calls per step or one call on the doubled batch passes."""
    num_classes, null_label = 5, 5
    gen = make_generator(660)
    for shape, w, steps in (((24, 2), 3.0, 4), ((6, 1, 4, 4), 0.5, 3), ((12, 2), 1.0, 2)):
        model = _ClassField(num_classes, shape[1:], 661)
        noise = randn(shape, gen)
        labels = torch.arange(shape[0]) % (num_classes - 1) + 1  # classes 1 … 4: 0 is never a real label here
        got = _call(guided_sample, "guided_sample", model, noise, labels, null_label, w, steps)
        if not model.calls:
            raise Mistake("never called the model", "model_not_called")
        times = torch.cat([t for t, _ in model.calls])
        seen = torch.cat([y for _, y in model.calls])
        if w != 1.0:
            if not (seen == null_label).any():
                if ((seen != null_label) & ~torch.isin(seen, labels)).any():
                    raise Mistake(f"the unconditional prediction used labels {sorted(set(seen.tolist()) - set(labels.tolist()))}"
                                  f": the null class is null_label (here {null_label}, one past the last class), "
                                  "torch.full_like(labels, null_label)", "wrong_null_label")
                raise Mistake("the model never got the null class: guidance needs v(z, t | ∅) from "
                              "model(z, t, torch.full_like(labels, null_label)) beside v(z, t | y)", "no_unconditional")
            if not torch.isin(labels, seen).all():
                raise Mistake("the model never got the class labels: v(z, t | y) is model(z, t, labels)", "labels_ignored")
        if float(times[0]) < 0.5:
            raise Mistake("time running backwards: sampling starts at t = 1 (noise) and steps down to t = 0 (data)",
                          "time_reversed")

        def variant(**knobs) -> torch.Tensor:
            return _guided_variant(model.field, noise, labels, null_label, w, steps, **knobs)

        want = _guided_sample_reference(model.field, noise, labels, null_label, w, steps)
        _compare(got, want, [
            ("cond_uncond_swapped", "v_y and v_∅ swapped: v_w = v_∅ + w·(v_y − v_∅) starts from the unconditional "
             "prediction and moves w times towards the conditional one", variant(combine=lambda u, c, w: c + w * (u - c))),
            ("w_ignored", f"w is ignored: this is the conditional model alone (w = 1); here w = {w:g}, "
             "v_w = v_∅ + w·(v_y − v_∅)", variant(combine=lambda u, c, w: c)),
            ("missing_difference", "v_∅ + w·v_y: guidance scales the difference, v_∅ + w·(v_y − v_∅)",
             variant(combine=lambda u, c, w: u + w * c)),
            ("w_plus_one_convention", "v_y + w·(v_y − v_∅) is the (1 + w) convention of some papers; the course's w "
             "multiplies the difference from v_∅: v_w = v_∅ + w·(v_y − v_∅)",
             variant(combine=lambda u, c, w: c + w * (c - u))),
            ("sign_flipped", "Euler's sign flipped: from t to t − Δ the step is z ← z − Δ·v_w(z, t)", variant(sign=1.0)),
            ("velocity_at_step_end", "evaluated the model at the end of each step (t − Δ); Euler uses the velocity at "
             "the start of the step, t", variant(at_end=True)),
            ("missing_step_size", f"forgot the step size: z ← z − Δ·v_w with Δ = 1/steps (here 1/{steps})",
             variant(step_size=False)),
        ], formula="Euler on v_w = v_∅ + w·(v_y − v_∅) from t = 1 down to 0",
            shape_hint="return only the final samples (shape of the noise), not the whole path")
