"""Lesson 07 (MM-DiT joint attention and QK-norm): the checks of ``joint_attention`` and ``rms_norm``,
with their references and the written-out attention their wrong variants are computed with."""
from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import nn

from ... import attention, blocks
from ...seeding import make_generator, randn
from .core import Mistake, _call, _check, _compare


def _joint_attention_reference(streams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The package's joint attention (:func:`minisd3.attention.joint_attention` with its SDPA core)."""
    return attention.joint_attention(attention.AttentionCore(), streams)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaled: bool = True,
                       softmax_dim: int = -1, scale_power: float = 0.5) -> torch.Tensor:
    """softmax(QKᵀ/√d)V per head, written out (for the wrong variants: no 1/√d, 1/d, softmax over the queries)."""
    logits = q @ k.transpose(-2, -1) / (q.shape[-1] ** scale_power if scaled else 1.0)
    return logits.softmax(dim=softmax_dim) @ v


def _merge_by_reshape(out: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) → (B, L, H·d) by a plain reshape, without moving the heads axis (a wrong variant)."""
    batch, heads, length, head_dim = out.shape
    return out.reshape(batch, length, heads * head_dim)


def _joint_variant(streams, order=None, scaled=True, softmax_dim=-1, merge="b h l d -> b l (h d)", scale_power=0.5,
                   split_then_merge=False):
    """Joint attention with one knob turned: concatenation ``order`` (split in the given order regardless),
    no 1/√d or 1/d, softmax over the queries, heads merged as (d h) or by a callable (``merge``), or the
    heads merged after splitting (``split_then_merge``)."""
    order = order or list(range(len(streams)))
    q, k, v = (torch.cat([streams[i][j] for i in order], dim=2) for j in range(3))
    out = _softmax_attention(q, k, v, scaled, softmax_dim, scale_power)
    lengths = [q_i.shape[2] for q_i, _, _ in streams]

    def merged(x):
        return merge(x) if callable(merge) else rearrange(x, merge)

    if split_then_merge:
        return [merged(part) for part in out.split(lengths, dim=2)]
    return list(merged(out).split(lengths, dim=1))


def _stream_outputs(got, streams) -> list[torch.Tensor]:
    """The learner's per-stream outputs, after checking the container, their number and their shapes."""
    if not isinstance(got, (list, tuple)):
        described = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        raise Mistake(f"should return a list with one output per stream, got {described}: split the joint output "
                      "back into the streams", "not_split")
    if len(got) != len(streams):
        raise Mistake(f"returned {len(got)} outputs for {len(streams)} streams: split the joint output into one "
                      "output per stream, in the order given", "wrong_output_count")
    if not all(isinstance(out, torch.Tensor) for out in got):
        raise Mistake(f"each output should be a torch.Tensor, got {[type(out).__name__ for out in got]}")
    wanted = [(q.shape[0], q.shape[2], q.shape[1] * v.shape[3]) for q, _, v in streams]
    shapes = [tuple(out.shape) for out in got]
    if shapes == wanted:
        return list(got)
    if shapes == wanted[::-1]:
        raise Mistake("returned the outputs in reversed order: give back one output per stream in the order the "
                      "streams came in", "outputs_reversed")
    if shapes == [tuple(v.shape) for _, _, v in streams]:
        raise Mistake("forgot to merge the heads: each output is (B, H, L_i, d); rearrange it to (B, L_i, H·d) "
                      "(minisd3.attention.merge_heads)", "heads_not_merged")
    lengths = [q.shape[2] for q, _, _ in streams]
    raise Mistake(f"wrong split lengths/order: the outputs have shapes {shapes}, expected {wanted} = (B, L_i, H·d); "
                  f"split the joint output along the sequence with the streams' lengths {lengths}, in the order given",
                  "wrong_split_lengths")


_MERGE_BY_RESHAPE = ("heads merged by a plain reshape: (B, H, L, d).reshape(B, L, H·d) mixes tokens of different heads; "
                     "move the heads next to the features first, out.transpose(1, 2).reshape(B, L, H·d) "
                     "(or rearrange 'b h l d -> b l (h d)', minisd3.attention.merge_heads)")

_JOINT_HINT = ("concatenate q, k and v of the streams along the sequence axis, dim 2 of (B, H, L_i, d) — not along "
               "the heads (dim 1) or the features (dim 3)")


@_check("joint_attention", "matches minisd3.attention.joint_attention")
def check_joint_attention(joint_attention: Callable) -> None:
    """Check ``joint_attention(streams)``: streams a list of (q, k, v), each (B, H, L_i, d); concatenate along
    the sequence, one softmax(QKᵀ/√d)V, split back to (B, L_i, H·d) per stream, in order."""
    gen = make_generator(701)
    for batch, heads, lengths, head_dim in ((2, 2, (3, 8), 4), (1, 4, (6, 4), 8)):
        streams = [tuple(randn((batch, heads, length, head_dim), gen) for _ in range(3)) for length in lengths]
        given = [tuple(tensor.clone() for tensor in stream) for stream in streams]
        got = _call(joint_attention, "joint_attention", given, hint=_JOINT_HINT)
        if not all(torch.equal(a, b) for stream, copy in zip(streams, given) for a, b in zip(stream, copy)):
            raise Mistake("joint_attention changed one of the streams' q, k or v in place; compute new tensors instead "
                          "(write q = q / s, not q /= s)", "in_place")
        got = _stream_outputs(got, streams)
        separate = [rearrange(_softmax_attention(q, k, v), "b h l d -> b l (h d)") for q, k, v in streams]
        mutations = [
            ("separate_attention",
             "separate attention per stream (no cross-talk): concatenate both streams' q, k, v along the sequence "
             "for one attention, so every word sees every patch and every patch every word", separate),
            ("wrong_split_order",
             "wrong split order: the streams were concatenated in one order and split in another; concatenate in "
             "the order given and split with the lengths in that same order", _joint_variant(streams, order=[1, 0])),
            ("missing_scale",
             "missing the 1/√d scale: softmax(QKᵀ/√d)V, d the head dimension", _joint_variant(streams, scaled=False)),
            ("softmax_wrong_axis",
             "softmax over the wrong axis: normalise each query's weights over the keys, the last axis of QKᵀ",
             _joint_variant(streams, softmax_dim=-2)),
            ("heads_merge_order", "heads merged in the wrong order: (B, H, L, d) → (B, L, H·d) puts head 0's d features first "
             "(rearrange 'b h l d -> b l (h d)')", _joint_variant(streams, merge="b h l d -> b l (d h)")),
            ("heads_merged_by_reshape", _MERGE_BY_RESHAPE, _joint_variant(streams, merge=_merge_by_reshape)),
            ("heads_merged_by_reshape", _MERGE_BY_RESHAPE,
             _joint_variant(streams, merge=_merge_by_reshape, split_then_merge=True)),
            ("scale_by_d", "scaled the logits by 1/d; the scale is 1/√d, d the head dimension",
             _joint_variant(streams, scale_power=1.0)),
        ]
        _compare(torch.cat(got, dim=1), torch.cat(_joint_attention_reference(streams), dim=1),
                 [(mistake, message, torch.cat(outputs, dim=1)) for mistake, message, outputs in mutations],
                 formula="softmax(QKᵀ/√d)V over the joint sequence")


_VARIANCE = ("used the variance (or standard deviation) of u, which subtracts the mean; RMSNorm divides by the root "
             "mean square, √(mean(u²) + ε), with no mean subtracted")


def _rms_norm_reference(u: torch.Tensor, gain: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The package's QK-norm layer (``nn.RMSNorm`` over the head dimension, as in :class:`minisd3.attention.QKV`)
    with gain ``gain``: u / √(mean(u²) + ε) · g."""
    norm = nn.RMSNorm(u.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(gain)
        return norm(u)


@_check("rms_norm", "matches the package's QK-norm (torch.nn.RMSNorm over the head dimension)")
def check_rms_norm(rms_norm: Callable) -> None:
    """Check ``rms_norm(u, gain, eps=1e-6)`` → u / √(mean(u²) + ε) · g over the last axis of u (B, H, L, d), g (d,).

    One token is tiny, so that ε matters there; the second case passes eps = 0.01."""
    gen = make_generator(702)
    for shape, eps in (((2, 3, 5, 8), None), ((1, 2, 4, 16), 1e-2)):
        u = 1.5 * randn(shape, gen)
        u[0, 0, 1] = u[0, 0, 1] * 1e-4
        gain = 1 + 0.5 * randn((shape[-1],), gen)
        eps_args = {} if eps is None else {"eps": eps}
        got = _call(rms_norm, "rms_norm", u, gain, **eps_args,
                    hint="normalise over the last axis with keepdim=True so the RMS broadcasts against u")
        e = 1e-6 if eps is None else eps

        def mean_square(dim=-1):
            return (u**2).mean(dim, keepdim=True)

        centred = u - u.mean(-1, keepdim=True)
        mutations = [
            ("subtracted_mean", "subtracted the mean: that is LayerNorm; RMSNorm only divides by the root mean square, "
             "u / √(mean(u²) + ε) · g", centred / ((centred**2).mean(-1, keepdim=True) + e).sqrt() * gain),
            ("sequence_axis",
             "normalised over the sequence axis (dim 2); QK-norm normalises each token's d features in each head: "
             "the mean runs over the last axis (head dimension)", u / (mean_square(2) + e).sqrt() * gain),
            ("heads_axis", "normalised over the heads axis (dim 1); the mean runs over the last axis, the head dimension d",
             u / (mean_square(1) + e).sqrt() * gain),
            ("missing_gain", "missing gain: multiply by the learnable gain g (one number per feature of the head dimension)",
             u / (mean_square() + e).sqrt()),
            ("missing_eps", "missing ε: divide by √(mean(u²) + ε); without ε a token whose features are all near 0 is blown up "
             "to full size (or to inf at exactly 0)",
             u / mean_square().sqrt() * gain),
            ("eps_outside_sqrt", "ε belongs inside the square root: √(mean(u²) + ε), not √mean(u²) + ε",
             u / (mean_square().sqrt() + e) * gain),
            ("missing_sqrt",
             "missing the square root: divide by √(mean(u²) + ε), the root mean square", u / (mean_square() + e) * gain),
            ("sum_not_mean", "summed u² over the head dimension; the RMS takes the mean, √(mean(u²) + ε)",
             u / ((u**2).sum(-1, keepdim=True) + e).sqrt() * gain),
            ("l2_norm", "divided by the L2 norm ‖u‖ = √Σu² (F.normalize); the RMS takes the mean, "
             "√(mean(u²) + ε) = ‖u‖/√d", u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12) * gain),
            ("variance_not_mean_square", _VARIANCE, u / (u.var(-1, keepdim=True) + e).sqrt() * gain),
            ("variance_not_mean_square", _VARIANCE, u / (u.var(-1, keepdim=True, correction=0) + e).sqrt() * gain),
            ("variance_not_mean_square", _VARIANCE, u / (u.std(-1, keepdim=True) + e) * gain),
            ("mean_abs_not_rms", "divided by the mean absolute value mean(|u|); RMSNorm divides by the root mean "
             "square, √(mean(u²) + ε)", u / (u.abs().mean(-1, keepdim=True) + e) * gain),
            ("gain_before_norm", "applied the gain before normalising: normalise u first, then multiply by g, "
             "u / √(mean(u²) + ε) · g", u * gain / ((u * gain) ** 2).mean(-1, keepdim=True).add(e).sqrt()),
        ]
        if eps is None:
            mutations.append(("wrong_default_eps", "the default ε is 1e-6, as in the package's QK-norm; yours is 1e-5",
                              u / (mean_square() + 1e-5).sqrt() * gain))
        else:
            mutations.append(("ignored_eps_argument", "ignored the eps argument: use the ε you are given (default 1e-6)",
                              u / (mean_square() + 1e-6).sqrt() * gain))
        _compare(got, _rms_norm_reference(u, gain, e), mutations, formula="u / √(mean(u²) + ε) · g",
                 shape_hint="return a tensor shaped like u (normalise with keepdim=True)")


# ---------------------------------------------------------------------------------------------
# joint_block_forward (a whole piece: the MM-DiT block assembled from its parts)
# ---------------------------------------------------------------------------------------------

def _joint_block_reference(block: blocks.JointBlock, x: torch.Tensor, ctx: torch.Tensor,
                           c_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's :meth:`minisd3.blocks.JointBlock.forward`, run by a fresh block with the same weights (the
    check's block refuses its finished methods)."""
    state = torch.random.get_rng_state()
    fresh = blocks.JointBlock(block.image.out.in_features, block.image.qkv.heads, qk_norm=True)  # its init draws
    torch.random.set_rng_state(state)
    fresh.load_state_dict(block.state_dict())
    return fresh(x, ctx, c_vec)


def _block_variant(block: blocks.JointBlock, x: torch.Tensor, ctx: torch.Tensor, c_vec: torch.Tensor, *,
                   joint: bool = True, swap_streams: bool = False, chunk_order=(0, 1, 2, 3, 4, 5), gate: bool = True,
                   residual: bool = True, mlp_mods: str = "mlp", sequential: bool = True, one_plus: bool = True,
                   layer_norm: bool = True, out_projection: bool = True, qk_norm_twice: bool = False
                   ) -> torch.Tensor:
    """The MM-DiT block written out from its parts with one knob turned (the defaults are the package's
    :meth:`minisd3.blocks.JointBlock.forward`); returns [x_out; ctx_out] concatenated along the sequence."""
    image, context = (block.context, block.image) if swap_streams else (block.image, block.context)

    def mod(u, shift, scale):
        return u * (1 + scale[:, None]) + shift[:, None] if one_plus else u * scale[:, None] + shift[:, None]

    def norm(layer, u):
        return layer(u) if layer_norm else u

    parts = []
    for stream, tokens in ((context, ctx), (image, x)):
        chunks = stream.modulation(c_vec)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (chunks[i] for i in chunk_order)
        q, k, v = stream.qkv(mod(norm(stream.norm1, tokens), shift_a, scale_a))
        if qk_norm_twice:
            q, k = stream.qkv.q_norm(q), stream.qkv.k_norm(k)
        parts.append((tokens, (q, k, v), (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m), stream))
    core = attention.AttentionCore()
    if joint:
        attended = attention.joint_attention(core, [p[1] for p in parts])
    else:
        attended = [attention.joint_attention(core, [p[1]])[0] for p in parts]
    outs = []
    for (tokens, _, (shift_a, scale_a, gate_a, shift_m, scale_m, gate_m), stream), a in zip(parts, attended):
        update = stream.out(a) if out_projection else a
        update = gate_a[:, None] * update if gate else update
        h = tokens + update if residual else update
        source = h if sequential else tokens
        if mlp_mods == "attention":
            m_in = mod(norm(stream.norm2, source), shift_a, scale_a)
        else:
            m_in = mod(norm(stream.norm2, source), shift_m, scale_m)
        m = stream.mlp(m_in)
        outs.append(h + (gate_m[:, None] * m if gate else m))
    ctx_out, x_out = outs
    return torch.cat([x_out, ctx_out], dim=1)


class _NoShortcut(Mistake):
    pass


def _test_block(seed: int, dim: int = 32, heads: int = 4) -> blocks.JointBlock:
    """A JointBlock with QK-norm whose every weight is random (the zero-initialised adaLN too, so that gates,
    shifts and scales are not 0, and the QK-norm gains not 1), and whose finished methods refuse to run."""
    torch.manual_seed(seed)  # the global RNG is restored by the caller
    block = blocks.JointBlock(dim, heads, qk_norm=True)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(0.4 * torch.randn_like(p) + (1.0 if name.endswith("norm.weight") else 0.0))

    def refuse(what: str):
        def method(*args, **kwargs):
            raise _NoShortcut(f"called {what}, the block's finished method: assemble the block from its parts "
                              "(modulation, norm1, qkv, out, norm2, mlp of each stream, and your joint_attention)",
                              "used_finished_method")
        return method

    block.forward = refuse("block(…) / block.forward")
    for stream_name in ("context", "image"):
        stream = getattr(block, stream_name)
        stream.pre_attention = refuse(f"block.{stream_name}.pre_attention")
        stream.post_attention = refuse(f"block.{stream_name}.post_attention")
    return block


@_check("joint_block_forward", "matches minisd3.blocks.JointBlock.forward with the same weights")
def check_joint_block_forward(joint_block_forward: Callable) -> None:
    """Check ``joint_block_forward(block, x, ctx, c_vec)`` → (x, ctx) against :meth:`minisd3.blocks.JointBlock.forward`
    on a block with QK-norm and random weights everywhere (so every gate, shift, scale and gain matters), 8 image
    and 3 context tokens of width 32; the block's finished methods (forward, pre_/post_attention) refuse to run."""
    state = torch.random.get_rng_state()
    try:
        block = _test_block(740)
    finally:
        torch.random.set_rng_state(state)
    gen = make_generator(741)
    x, ctx, c_vec = randn((2, 8, 32), gen), randn((2, 3, 32), gen), randn((2, 32), gen)
    with torch.no_grad():
        got = _call(joint_block_forward, "joint_block_forward", block, x, ctx, c_vec)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mistake(f"should return the pair (x, ctx): the updated image tokens (B, N, D) and context tokens "
                          f"(B, L, D), got {type(got).__name__}")
        x_out, ctx_out = got
        if all(isinstance(t, torch.Tensor) for t in got) and tuple(x_out.shape) == tuple(ctx.shape) \
                and tuple(ctx_out.shape) == tuple(x.shape):
            raise Mistake("returned (ctx, x): return the image tokens first, (x, ctx), as JointBlock.forward does",
                          "outputs_swapped")
        if not all(isinstance(t, torch.Tensor) for t in got):
            raise Mistake("should return two tensors, (x, ctx)")
        if tuple(x_out.shape) != tuple(x.shape) or tuple(ctx_out.shape) != tuple(ctx.shape):
            raise Mistake(f"wrong shapes: expected x {tuple(x.shape)} and ctx {tuple(ctx.shape)}, got "
                          f"{tuple(x_out.shape)} and {tuple(ctx_out.shape)}")

        def variant(**knobs) -> torch.Tensor:
            return _block_variant(block, x, ctx, c_vec, **knobs)

        want = torch.cat(_joint_block_reference(block, x, ctx, c_vec), dim=1)
        _compare(torch.cat([x_out, ctx_out], dim=1), want, [
            ("separate_attention", "each stream attended only to itself: concatenate both streams' q, k, v along the "
             "sequence and attend once (joint_attention), so words and patches see each other", variant(joint=False)),
            ("streams_swapped", "each stream used the other's weights: the image tokens go through block.image, the "
             "context tokens through block.context", variant(swap_streams=True)),
            ("shift_scale_swapped", "shift and scale swapped: modulation(c_vec) gives (shift_a, scale_a, gate_a, "
             "shift_m, scale_m, gate_m) in that order, and modulate(u) = u·(1 + scale) + shift",
             variant(chunk_order=(1, 0, 2, 4, 3, 5))),
            ("chunks_misread", "the six modulation vectors read in the wrong order: (shift_a, scale_a, gate_a) belong "
             "to the attention, (shift_m, scale_m, gate_m) to the MLP", variant(chunk_order=(3, 4, 5, 0, 1, 2))),
            ("missing_gate", "no gates: each residual update is multiplied by its gate, x + gate_a·out(attn) and "
             "x + gate_m·mlp(…) (the zero-initialised gates make a new block the identity)", variant(gate=False)),
            ("missing_residual", "no residual: add the gated update to the tokens, x ← x + gate_a·out(attn)",
             variant(residual=False)),
            ("mlp_uses_attention_modulation", "the MLP is modulated with the attention's shift and scale: it has "
             "its own, shift_m and scale_m", variant(mlp_mods="attention")),
            ("parallel_mlp", "the MLP read the tokens from before the attention: it comes after the attention's "
             "residual, on the updated tokens", variant(sequential=False)),
            ("modulate_without_one", "modulate is u·(1 + scale) + shift, not u·scale + shift", variant(one_plus=False)),
            ("missing_layer_norm", "no LayerNorm before modulating: u = norm1(x) for the attention, norm2(x) for "
             "the MLP", variant(layer_norm=False)),
            ("missing_out_projection", "the attention output skipped the stream's output projection: "
             "x + gate_a·out(attended)", variant(out_projection=False)),
            ("qk_norm_twice", "QK-norm applied twice: the stream's qkv already returns normalised q and k",
             variant(qk_norm_twice=True)),
        ], formula="JointBlock.forward", shape_hint="return (x, ctx)", atol=1e-4, rtol=1e-4)
