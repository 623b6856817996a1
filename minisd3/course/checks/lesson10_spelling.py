"""Lesson 10 (spelling: characters and several text encoders): the checks of the character tokenizer
(``char_tokenize``), the per-encoder drop mask (``encoder_drop_mask``) and the combined token sequence
(``build_context``), with their references and the wrong variants the checks name."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...multi_text import MultiTextEncoder
from ...seeding import make_generator, randn
from ...text import CharTokenizer
from .core import Mistake, _call, _check, _compare, _require_generator, error_summary

# ---------------------------------------------------------------------------------------------
# char_tokenize
# ---------------------------------------------------------------------------------------------

_PAD, _BOS, _UNK, _FIRST = 0, 1, 2, 3
"""The ids of [PAD], [BOS] and [UNK], and the id of the alphabet's first character."""

_CHAR_CASES = (
    # (alphabet, max_length, captions): the alphabet's order is not sorted order, some characters are
    # unknown (capitals, punctuation, é), one caption is empty and one fills max_length exactly
    ("abcdefghijklmnopqrstuvwxyz \"", 16, ['the word "cab"', "Hi, zop!", "", "abcdefghijklmno"]),
    ("cbaxyz", 6, ["abc", "cab!", "b", "Zyé"]),
)


def _char_tokenize_reference(captions: Sequence[str], alphabet: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's character tokenizer: ``CharTokenizer(alphabet, max_length)(captions)``."""
    return CharTokenizer(alphabet, max_length)(captions)


def _tokenize_variant(captions: Sequence[str], alphabet: str, max_length: int, *, bos: str = "start",
                      unknown: str = "unk", first: int = _FIRST, lower: bool = False, sort: bool = False) -> torch.Tensor:
    """The ids of a character tokenizer with one knob turned: [BOS] ``"start"``, ``"end"`` or ``"none"``;
    unknown characters ``"unk"``, ``"pad"`` (id 0) or ``"drop"``; character ids from ``first``; the caption
    lower-cased; the alphabet sorted. Rows that do not fit are cut at ``max_length``."""
    table = sorted(alphabet) if sort else list(alphabet)
    stoi = {c: first + i for i, c in enumerate(table)}
    ids = torch.zeros(len(captions), max_length, dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens = []
        for char in caption.lower() if lower else caption:
            if char in stoi:
                tokens.append(stoi[char])
            elif unknown != "drop":
                tokens.append(_UNK if unknown == "unk" else _PAD)
        tokens = {"start": [_BOS, *tokens], "end": [*tokens, _BOS], "none": tokens}[bos][:max_length]
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return ids


def _attempt(fn: Callable, *args):
    """Call the learner's ``fn``: (its result, None) or (None, the exception it raised); NotImplementedError
    (an unfinished stub) and :class:`Mistake` go through."""
    try:
        return fn(*args), None
    except (NotImplementedError, Mistake):
        raise
    except Exception as err:  # a learner's code can raise anything; the caller says what it means
        return None, err


def _raised(err: BaseException) -> str:
    return f"{type(err).__name__}: {error_summary(err)}"


def _ids_and_mask(got, batch: int, max_length: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's (ids, mask), after checking that it is a pair of tensors of the right shape and kind."""
    if isinstance(got, torch.Tensor) or not isinstance(got, (tuple, list)) or len(got) != 2:
        described = (f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor)
                     else f"{type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
        raise Mistake(f"should return the pair (ids, mask), got {described}", "not_a_pair")
    ids, mask = got
    if not isinstance(ids, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise Mistake(f"ids and mask should be torch tensors, got {type(ids).__name__} and {type(mask).__name__}: "
                      "start from ids = torch.zeros(len(captions), max_length, dtype=torch.long)")
    want = (batch, max_length)
    shape = tuple(ids.shape)
    if shape != want:
        if shape == (batch, longest):
            raise Mistake(f"ids have shape {shape}: padded to the longest caption; pad every row to max_length = "
                          f"{max_length}, so that every batch has the same shape {want}", "padded_to_longest")
        if shape == want[::-1]:
            raise Mistake(f"ids have shape {shape}: transposed; one row per caption, (B, max_length) = {want}", "transposed")
        raise Mistake(f"wrong shape of ids: expected (B, max_length) = {want}, got {shape}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise Mistake(f"ids should be integers (dtype torch.long, what nn.Embedding takes), got {ids.dtype}", "ids_not_integer")
    if tuple(mask.shape) != want:
        raise Mistake(f"wrong shape of mask: expected the shape of ids {want}, got {tuple(mask.shape)}")
    return ids.detach().cpu().long(), mask.detach().cpu()


def _name_ids(ids: torch.Tensor, want: torch.Tensor, captions: Sequence[str], alphabet: str, max_length: int) -> None:
    """Name the way the learner's ids differ from the reference's (raises :class:`Mistake`)."""
    def variant(**knobs):
        return _tokenize_variant(captions, alphabet, max_length, **knobs)

    variants = [
        ("no_bos", "no [BOS]: position 0 of every row is [BOS] (id 1), the characters follow from position 1",
         variant(bos="none")),
        ("bos_at_end", "[BOS] at the end: it goes first, at position 0, and the characters follow it",
         variant(bos="end")),
        ("unknown_dropped", "characters outside the alphabet were dropped; map each to [UNK] (id 2), so the model "
         "still sees one token per character and knows something was there", variant(unknown="drop")),
        ("unknown_as_pad", "characters outside the alphabet became [PAD] (id 0); map them to [UNK] (id 2): [PAD] "
         "means 'no token here', and the mask hides it", variant(unknown="pad")),
        ("alphabet_sorted", "the ids follow the alphabet in the order given, alphabet[i] → 3 + i; you sorted it "
         "first (or ordered the characters some other way)", variant(sort=True)),
        ("lowercased", "lower-cased the caption: the character tokenizer keeps each character as it is, so 'H' "
         "is not 'h' (here it is [UNK]: the alphabet has no capitals)", variant(lower=True)),
    ]
    for first in (0, 1, 2, 4):
        mistake = "ids_off_by_one" if abs(first - _FIRST) == 1 else "ids_offset"
        variants.append((mistake, f"character ids start at {first}; ids 0, 1, 2 are [PAD], [BOS], [UNK], so "
                         f"alphabet[i] has id 3 + i (alphabet.index(c) + 3)", variant(first=first)))
    for mistake, message, wrong in variants:
        if torch.equal(ids, wrong):
            raise Mistake(message, mistake)
    differ = ids != want
    if (want[differ] == _PAD).all():
        values = sorted(set(ids[differ].tolist()))
        raise Mistake(f"padding with id {values[0] if len(values) == 1 else values}: fill every position after the "
                      "caption with [PAD] = 0 (what the mask and the model treat as 'nothing here')", "pad_not_zero")
    if (want[differ] == _UNK).all():
        values = sorted(set(ids[differ].tolist()))
        raise Mistake(f"characters outside the alphabet got id {values[0] if len(values) == 1 else values}; map "
                      "each to [UNK] = 2", "unknown_not_unk")
    row, col = (int(i) for i in differ.nonzero()[0])
    caption = captions[row]
    where = "[BOS]" if col == 0 else (repr(caption[col - 1]) if col <= len(caption) else "padding")
    raise Mistake(f"ids differ from CharTokenizer's, and not in one of the usual ways: caption {caption!r} at position "
                  f"{col} ({where}) should have id {int(want[row, col])}, yours has {int(ids[row, col])}; the rule: "
                  "[BOS] = 1 first, then alphabet[i] → 3 + i per character (unknown → [UNK] = 2), then [PAD] = 0")


def _check_mask(mask: torch.Tensor, ids: torch.Tensor) -> None:
    """Compare the learner's mask with the reference mask of the (correct) ``ids``."""
    if mask.dtype != torch.bool:
        raise Mistake(f"mask should be bool (True on real tokens), got dtype {mask.dtype}: ids != 0 gives it",
                      "mask_not_bool")
    want = ids != _PAD
    if torch.equal(mask, want):
        return
    first_column = torch.zeros_like(want)
    first_column[:, 0] = True
    variants = [
        ("mask_false_on_bos", "mask False on [BOS]: [BOS] is a real token (the text encoder attends to it and "
         "pools it); mask = ids != 0, True on [BOS] and every character", want & ~first_column),
        ("mask_true_on_padding", "mask True on padding: it is True on the real tokens only ([BOS] and the "
         "characters), False on [PAD] (mask = ids != 0)", torch.ones_like(want)),
        ("mask_inverted", "mask inverted: here True marks a real token and False padding (PyTorch's "
         "key_padding_mask uses the opposite convention; the text encoder passes ~mask to it)", ~want),
        ("mask_false_on_unknown", "mask False on [UNK]: an unknown character is still a token in the caption; "
         "mask = ids != 0", want & (ids != _UNK)),
    ]
    for mistake, message, wrong in variants:
        if torch.equal(mask, wrong):
            raise Mistake(message, mistake)
    raise Mistake("mask differs from ids != 0: it should be True on [BOS] and on every character (known or [UNK]), "
                  "False on [PAD]")


@_check("char_tokenize", "matches minisd3.text.CharTokenizer: [BOS], one id per character ([UNK] for unknown "
        "ones), [PAD]; too-long captions and single strings raise ValueError")
def check_char_tokenize(char_tokenize: Callable) -> None:
    """Check ``char_tokenize(captions, alphabet, max_length)`` → (ids, mask), each (B, max_length), against
    :class:`minisd3.text.CharTokenizer`: [BOS] = 1 at position 0, alphabet[i] → 3 + i, unknown → [UNK] = 2,
    then [PAD] = 0; mask True on [BOS] and the characters; ValueError for a caption of more than
    max_length − 1 characters and for a single string."""
    for alphabet, max_length, captions in _CHAR_CASES:
        got, err = _attempt(char_tokenize, list(captions), alphabet, max_length)
        if err is not None:
            if isinstance(err, ValueError):
                fitting = [c for c in captions if len(c) + 1 < max_length]
                if len(fitting) < len(captions) and _attempt(char_tokenize, fitting, alphabet, max_length)[1] is None:
                    raise Mistake(f"raised ValueError for a caption of max_length − 1 = {max_length - 1} characters, "
                                  f"which fits: [BOS] + {max_length - 1} characters = max_length tokens; raise only "
                                  "when len(caption) + 1 > max_length", "length_limit_off_by_one")
                known = ["".join(char for char in c if char in alphabet) for c in captions]
                if _attempt(char_tokenize, known, alphabet, max_length)[1] is None:
                    raise Mistake(f"raised ValueError for a character outside the alphabet ({_raised(err)}); map it "
                                  "to [UNK] = 2 instead: the character tokenizer never refuses a character, that is "
                                  "what [UNK] is for", "unknown_raises")
            raise Mistake(f"calling char_tokenize raised {_raised(err)}")
        longest = 1 + max(len(c) for c in captions)
        ids, mask = _ids_and_mask(got, len(captions), max_length, longest)
        want, _ = _char_tokenize_reference(captions, alphabet, max_length)
        if not torch.equal(ids, want):
            _name_ids(ids, want, captions, alphabet, max_length)
        _check_mask(mask, want)

    alphabet, max_length, _ = _CHAR_CASES[0]
    got, err = _attempt(char_tokenize, "cab", alphabet, max_length)
    if err is None:
        raise Mistake("took a single string as a batch of its characters (one caption per letter): raise "
                      "ValueError when captions is a str (isinstance(captions, str)); one caption is passed as "
                      "['the word \"cab\"']", "single_string_accepted")
    if not isinstance(err, ValueError):
        raise Mistake(f"a single string should raise ValueError (check isinstance(captions, str) first); yours raised "
                      f"{_raised(err)}")
    for length in (max_length + 5, max_length):
        caption = ("abc" * max_length)[:length]
        got, err = _attempt(char_tokenize, [caption], alphabet, max_length)
        if isinstance(err, ValueError):
            continue
        if length == max_length:
            raise Mistake(f"a caption of max_length = {max_length} characters does not fit: [BOS] takes position 0, "
                          f"so at most max_length − 1 = {max_length - 1} characters; raise ValueError when "
                          "len(caption) + 1 > max_length" + (f" (yours raised {_raised(err)})" if err else ""),
                          "length_limit_off_by_one")
        if err is not None:
            raise Mistake(f"a caption of {length} characters (max_length = {max_length}) made your function raise "
                          f"{_raised(err)}; check the length first and raise ValueError when len(caption) + 1 > "
                          "max_length", "no_length_check")
        raise Mistake(f"a caption of {length} characters with max_length = {max_length} was cut short silently: "
                      "raise ValueError when len(caption) + 1 > max_length, so a caption is never silently "
                      "truncated (a cut-off word would be drawn wrong)", "truncated_silently")


# ---------------------------------------------------------------------------------------------
# encoder_drop_mask
# ---------------------------------------------------------------------------------------------

def _drop_tensor(got, batch: int, encoders: int) -> torch.Tensor:
    """The learner's mask after checking its type, shape and dtype."""
    if not isinstance(got, torch.Tensor):
        raise Mistake(f"should return a torch.Tensor of bools, got {type(got).__name__}")
    want = (batch, encoders)
    shape = tuple(got.shape)
    if shape != want:
        if shape == want[::-1]:
            raise Mistake(f"wrong shape {shape}: that is (E, B); return one row per sample and one column per "
                          f"encoder, (B, E) = {want}", "transposed")
        if shape == (batch,):
            raise Mistake(f"one flag per sample, shape {shape}: that drops the whole caption; draw one flag per "
                          f"(sample, encoder), shape (B, E) = {want}", "one_flag_per_sample")
        raise Mistake(f"wrong shape: expected (B, E) = {want}, got {shape}")
    if got.dtype != torch.bool:
        values = got.detach().double()
        if ((values == 0) | (values == 1)).all():
            raise Mistake(f"returned dtype {got.dtype}; return a bool mask (torch.rand(...) < p is one), True where "
                          "an encoder is dropped", "not_bool")
        raise Mistake(f"returned numbers of dtype {got.dtype}, not True/False: compare the uniform draws with p, "
                      "torch.rand(..., generator=generator) < p", "returned_draws")
    return got.detach().cpu()


@_check("encoder_drop_mask", "(B, E) bool, each entry True with probability p independently (no text at all: "
        "p^E), drawn from the generator")
def check_encoder_drop_mask(encoder_drop_mask: Callable) -> None:
    """Check ``encoder_drop_mask(batch, encoders, p, generator)`` → (B, E) bool, True (drop) with probability p
    independently per entry, as :func:`minisd3.multi_text.encoder_drop_mask`: the rates per encoder, the
    fraction of samples that keep no encoder (p^E), p = 0 and p = 1, and the generator (the same seed gives
    the same mask, another seed another)."""
    batch = 20_000
    for encoders, p in ((2, 0.3), (3, 0.463)):
        drop = _drop_tensor(_call(encoder_drop_mask, "encoder_drop_mask", batch, encoders, p, make_generator(1001)),
                            batch, encoders)
        rates = drop.double().mean(0)
        none_kept = drop.all(1).double().mean().item()
        independent = p**encoders
        power = "p²" if encoders == 2 else f"p^{encoders}"
        if (drop == drop[:1]).all():
            raise Mistake(f"every sample got the same mask {drop[0].tolist()}: draw one flag per (sample, encoder), "
                          f"shape (B, E) = ({batch}, {encoders})", "shared_across_batch")
        if (drop == drop[:, :1]).all():
            raise Mistake(f"one mask shared by all {encoders} encoders (identical columns): no text at all should happen "
                          f"with probability {power} = {independent:.3f}, here {none_kept:.3f} ≈ p = {p}, because the "
                          "encoders are always dropped together; draw every entry independently, "
                          "torch.rand((batch, encoders), generator=generator) < p (SD3: 0.463³ ≈ 10 % of steps see no "
                          "text with three encoders)", "shared_mask")
        dropped = drop.sum(1)
        if (dropped <= 1).all():
            how = "exactly one encoder" if (dropped == 1).all() else "at most one encoder"
            raise Mistake(f"{how} dropped per sample: each encoder is dropped independently with probability p, so "
                          "a sample can lose none, some or all of them; no text at all should happen with probability "
                          f"{power} = {independent:.3f}, here {none_kept:.3f}", "one_per_row")
        if ((rates - (1 - p)).abs() < 0.025).all():
            raise Mistake(f"your mask is True with probability 1 − p = {1 - p:.3f} (measured {rates.mean().item():.3f}): "
                          f"True means drop, with probability p = {p}; compare torch.rand(...) < p", "keep_not_drop")
        if not ((rates - p).abs() < 0.025).all():
            raise Mistake(f"each entry should be True with probability p = {p}; your columns were True for "
                          f"{[round(r, 3) for r in rates.tolist()]} of the samples")
        pairs = [(a, b) for a in range(encoders) for b in range(a + 1, encoders)]
        both = [(drop[:, a] & drop[:, b]).double().mean().item() for a, b in pairs]
        if abs(none_kept - independent) > 0.02 or any(abs(value - p * p) > 0.02 for value in both):
            raise Mistake(f"the encoders are not dropped independently: no text at all should happen with probability "
                          f"{power} = {independent:.3f}, here {none_kept:.3f} (two given encoders both dropped: "
                          f"p² = {p * p:.3f}, here {[round(v, 3) for v in both]}); draw every entry on its own, "
                          "torch.rand((batch, encoders), generator=generator) < p", "not_independent")
    for p, expected in ((0.0, False), (1.0, True)):
        drop = _drop_tensor(_call(encoder_drop_mask, "encoder_drop_mask", 64, 3, p, make_generator(1004)), 64, 3)
        if not (drop == expected).all():
            raise Mistake(f"with p = {p:g} {'no' if not expected else 'every'} encoder should be dropped; yours dropped "
                          f"{int(drop.sum())} of {drop.numel()} (compare torch.rand(...) < p)")
    first, second, other = (_drop_tensor(_call(encoder_drop_mask, "encoder_drop_mask", 64, 3, 0.5, make_generator(seed)),
                                         64, 3) for seed in (1002, 1002, 1003))
    _require_generator(torch.equal(first, second), not torch.equal(first, other), "masks",
                       "torch.rand((batch, encoders), generator=generator) < p")


# ---------------------------------------------------------------------------------------------
# build_context
# ---------------------------------------------------------------------------------------------

class _GivenTokens(nn.Module):
    """A stand-in text encoder returning fixed tokens, so that :class:`MultiTextEncoder` can be the reference."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens = tokens
        self.context_dim = self.pooled_dim = tokens.shape[-1]
        self.gives_pooled = False
        self.max_length = tokens.shape[1]

    def token_mask(self, captions) -> torch.Tensor:
        return torch.ones(self.tokens.shape[:2], dtype=torch.bool)

    def forward(self, captions):
        return self.tokens, self.tokens[:, 0]


def _build_context_reference(sequences: Sequence[torch.Tensor], projections: Sequence[nn.Linear],
                             keep: torch.Tensor) -> torch.Tensor:
    """The package's c_ctxt: :class:`minisd3.multi_text.MultiTextEncoder` with encoders that return ``sequences``
    and its projections replaced by ``projections``."""
    names = [f"encoder{e}" for e in range(len(sequences))]
    width = projections[0].out_features
    with torch.random.fork_rng(devices=[]):  # its own Linears (replaced below) draw from the global RNG: leave it as it was
        combined = MultiTextEncoder({n: _GivenTokens(s) for n, s in zip(names, sequences)}, width=width)
    for name, projection in zip(names, projections):
        combined.projections[name] = projection
    with torch.no_grad():
        return combined([""] * sequences[0].shape[0], keep=keep)[0]


def _linear(d_in: int, width: int, gen: torch.Generator) -> nn.Linear:
    """nn.Linear(d_in, width) with seeded weights and a clearly non-zero bias (no draw from the global RNG)."""
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation draws from the global RNG
        layer = nn.Linear(d_in, width)
    with torch.no_grad():
        layer.weight.copy_(randn((width, d_in), gen) / d_in**0.5)
        layer.bias.copy_(0.5 + randn((width,), gen))
    return layer


_CONTEXT_CASES = (
    # (B, lengths L_e, dims D_e, width, keep): every combination of kept and dropped encoders occurs
    (4, (5, 5), (6, 6), 8, ((1, 1), (1, 0), (0, 1), (0, 0))),
    (4, (3, 6, 4), (5, 7, 6), 8, ((1, 0, 1), (0, 1, 1), (1, 1, 0), (0, 0, 0))),
)

_CONTEXT_HINT = ("project each encoder's tokens with its own Linear, multiply by keep[:, e] reshaped to (B, 1, 1) so it "
                 "broadcasts over tokens and features, and concatenate along the sequence axis (dim 1)")


@_check("build_context", "matches minisd3.multi_text.MultiTextEncoder's c_ctxt")
def check_build_context(build_context: Callable) -> None:
    """Check ``build_context(sequences, projections, keep)`` → c_ctxt (B, Σ L_e, width): each encoder's tokens
    (B, L_e, D_e) projected by its own ``nn.Linear(D_e, width)``, multiplied by its keep flag (zeros after the
    projection for a dropped encoder) and concatenated along the sequence axis in the encoders' order."""
    gen = make_generator(1010)
    for batch, lengths, dims, width, flags in _CONTEXT_CASES:
        sequences = [randn((batch, length, dim), gen) for length, dim in zip(lengths, dims)]
        projections = [_linear(dim, width, gen) for dim in dims]
        keep = torch.tensor(flags, dtype=torch.bool)
        given = [s.clone() for s in sequences]
        got = _call(build_context, "build_context", given, projections, keep, hint=_CONTEXT_HINT)
        if not all(torch.equal(a, b) for a, b in zip(sequences, given)):
            raise Mistake("build_context changed one of the token sequences in place; compute new tensors instead "
                          "(write x = x * k, not x *= k)", "in_place")
        encoders, total = len(sequences), sum(lengths)
        if isinstance(got, (list, tuple)) and all(isinstance(part, torch.Tensor) for part in got):
            raise Mistake(f"returned a {type(got).__name__} of {len(got)} parts; concatenate them along the sequence "
                          f"axis into one tensor, torch.cat(parts, dim=1) → (B, Σ L_e, width) = ({batch}, {total}, "
                          f"{width})", "not_concatenated")
        if isinstance(got, torch.Tensor):
            shape = tuple(got.shape)
            if len(set(lengths)) == 1 and shape == (batch, lengths[0], encoders * width):
                raise Mistake(f"concatenated along the channel axis: shape {shape}; the encoders' tokens follow each "
                              f"other along the sequence axis (dim 1), giving (B, Σ L_e, width) = ({batch}, {total}, "
                              f"{width}), so the image tokens can attend to each of them", "channel_concat")
            if shape == (batch, encoders, lengths[0], width) and len(set(lengths)) == 1:
                raise Mistake(f"stacked the encoders into a new axis, shape {shape}; concatenate them along the "
                              f"sequence axis (torch.cat(..., dim=1)) to (B, Σ L_e, width) = ({batch}, {total}, {width})",
                              "stacked_not_concatenated")
            if shape == (encoders * batch, lengths[0], width) and len(set(lengths)) == 1:
                raise Mistake(f"concatenated along the batch axis, shape {shape}; concatenate along the sequence "
                              f"axis (dim 1) to (B, Σ L_e, width) = ({batch}, {total}, {width})", "batch_concat")
        k = [keep[:, e, None, None].float() for e in range(encoders)]
        with torch.no_grad():
            projected = [projection(s) for projection, s in zip(projections, sequences)]
            mutations = [
                ("order_reversed", "the encoders are concatenated in reverse order: keep the order given (the first "
                 "encoder's tokens first), as MultiTextEncoder.segments records",
                 torch.cat([p * f for p, f in zip(projected, k)][::-1], dim=1)),
                ("zeroed_before_projection", "zeroed a dropped encoder's tokens before the projection: the Linear's bias "
                 "is still added, so a dropped encoder still says something; multiply by keep after projecting",
                 torch.cat([projection(s * f) for projection, s, f in zip(projections, sequences, k)], dim=1)),
                ("not_zeroed", "dropped encoders were not zeroed: multiply each encoder's projected tokens by its keep "
                 "flag, keep[:, e] (False → zeros)", torch.cat(projected, dim=1)),
                ("keep_inverted", "keep applied inverted: keep is True where an encoder is KEPT; multiply by keep[:, e], "
                 "not by ~keep[:, e] (that is the drop mask)", torch.cat([p * (1 - f) for p, f in zip(projected, k)], dim=1)),
            ]
            if len(set(dims)) == 1:
                mutations.append(("projections_swapped", "each encoder has its own projection: encoder e's tokens go "
                                  "through projections[e], in the same order as sequences",
                                  torch.cat([projections[-1 - e](s) * f for e, (s, f) in enumerate(zip(sequences, k))],
                                            dim=1)))
            want = _build_context_reference(sequences, projections, keep)
        _compare(got, want.double(), mutations, formula="concat_e(keep[:, e] · Linear_e(tokens_e)) along the sequence",
                 shape_hint=f"(B, Σ L_e, width) = ({batch}, {total}, {width})")
