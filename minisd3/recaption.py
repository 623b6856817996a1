"""Recaptioning (SD3 §5.2.2, Table 4): web-style "original" captions, and the mix of synthetic and original.

Web images come with alt-text that is terse, partial and sometimes wrong ("red circles", "photo of
a square"). SD3 recaptions its images with a vision-language model (CogVLM) and trains on 50 %
synthetic captions and 50 % original alt-text, so the model learns the detailed captions without
forgetting the words people actually write; Table 4 shows the mix scoring higher on GenEval than
original captions alone. On the captioned shapes the generator's full caption plays the synthetic
caption (complete and right), and :func:`original_caption` makes the alt-text from it.

Alt-text grammar (every word in ``VOCABULARY + ALT_TEXT_WORDS``, at most
:data:`~minisd3.shapes.MAX_CAPTION_WORDS` words)::

    alt     := [filler] part | [filler] part join part
    part    := [count] [size] colour noun  |  colour            (colour only: "red")
    join    := relation | and                                  (colour only: always "and")
    filler  := picture of | image of | photo of

    "red circles"    "photo of one blue square"    "two large red circles and one small blue square"
    "red and blue"   "three red circles above one blue square"  (wrong count: there were two)

Each rate of :class:`AltTextRates` is one decision, drawn in this order:

1. ``one_group``: a two-group caption names only one of its groups (either, with probability ½);
2. ``colour_only``: every named group is reduced to its colour word (no count, size, shape or
   relation), groups joined by "and", a colour said once ("red", "red and blue");
3. otherwise ``drop_size`` removes every size word, ``drop_count`` every count word (the noun
   keeps its true number: "red circles"), and each count still shown is, with ``wrong_count``,
   replaced by one of the two other count words (uniformly; the noun agrees with the wrong count);
4. ``drop_relation``: of the captions that still name two groups with their shapes, "and" replaces
   the relation;
5. ``filler``: "picture of", "image of" or "photo of" (uniformly) goes in front, when the caption
   has room for it (at most MAX_CAPTION_WORDS − 2 words: long alt-texts rarely start so).

Colours and shapes are never wrong, only left out: alt-text is vague more often than false.
:func:`mix_captions` keeps each full caption with probability ``synthetic_fraction`` and replaces
the others by their alt-text. Every draw comes from the ``generator`` passed in, so a seed gives
the same captions.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from .shapes import COUNT_WORDS, MAX_CAPTION_WORDS, PLURALS, VOCABULARY, Group, Prompt, as_prompt

FILLERS: tuple[str, ...] = ("picture of", "image of", "photo of")
"""What web alt-text often puts in front of the subject."""
ALT_TEXT_WORDS: tuple[str, ...] = tuple(sorted(({w for f in FILLERS for w in f.split()} | {"and"}) - set(VOCABULARY)))
"""The words alt-text uses beyond :data:`~minisd3.shapes.VOCABULARY` ("and" and the fillers'): a text
encoder that reads original captions needs ``VOCABULARY + ALT_TEXT_WORDS``."""
SYNTHETIC_FRACTIONS: dict[str, float] = {"full": 1.0, "mix": 0.5, "original": 0.0}
"""The fraction of full (synthetic) captions for each ``captions`` setting of the engine: "mix" is SD3's 50/50."""


def _check_probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")


@dataclass(frozen=True)
class AltTextRates:
    """How often alt-text leaves something out or gets it wrong (the steps of the module docstring).

    The defaults make a terse caption as the web writes one: a two-group scene is named by one group
    half the time, one caption in five names only colours, sizes are said in 40 % of the rest and
    counts in 60 %, one shown count in ten is wrong, half the two-group captions say "and" instead of
    where things are, and about a third of those with room start with a filler. With these rates
    about 7 % of alt-texts on training scenes are the full caption. Each rate is a probability in [0, 1]
    (ValueError naming the field otherwise).
    """

    one_group: float = 0.5
    colour_only: float = 0.2
    drop_size: float = 0.6
    drop_count: float = 0.4
    wrong_count: float = 0.1
    drop_relation: float = 0.5
    filler: float = 0.3

    def __post_init__(self):
        for field in fields(self):
            _check_probability(getattr(self, field.name), field.name)


def _count_word(count: int) -> str:
    return next(word for word, n in COUNT_WORDS.items() if n == count)


def _group_words(group: Group, size: bool, count: bool, wrong: float | None) -> list[str]:
    """[count] [size] colour noun; ``wrong`` (a uniform in [0, 1), or None) picks a wrong count among the other two."""
    shown = group.count
    if count and wrong is not None:
        others = [n for n in COUNT_WORDS.values() if n != group.count]
        shown = others[min(int(wrong * len(others)), len(others) - 1)]
    noun = group.shape if shown == 1 else PLURALS[group.shape]
    return [_count_word(shown)] * count + [group.size] * size + [group.colour, noun]


def original_caption(prompt: Prompt | str, generator: torch.Generator | None = None,
                     rates: AltTextRates = AltTextRates()) -> str:
    """A web-style alt-text for a full caption or :class:`~minisd3.shapes.Prompt`: terse, partial, sometimes wrong.

    "two large red circles above one small blue square" → e.g. "red circles", "photo of two red
    circles and one blue square", "red and blue" (grammar and steps: module docstring). Draws twelve
    uniforms from ``generator`` per call, so the same generator state gives the same caption. The
    result has at most :data:`~minisd3.shapes.MAX_CAPTION_WORDS` words, all in ``VOCABULARY +
    ALT_TEXT_WORDS``. Raises ValueError for a caption outside the grammar (naming ``prompt``) or
    ``rates`` that is not an :class:`AltTextRates`.
    """
    prompt = as_prompt(prompt)
    if not isinstance(rates, AltTextRates):
        raise ValueError(f"rates: expected an AltTextRates, got {type(rates).__name__}")
    _check_generator(generator)
    (one_group, which, colour_only, no_size, no_count, wrong_first, wrong_second, other_first, other_second,
     no_relation, filler, which_filler) = torch.rand(12, generator=generator).tolist()
    groups, relation = list(prompt.groups), prompt.relation
    if len(groups) == 2 and one_group < rates.one_group:
        groups, relation = [groups[int(which < 0.5)]], None
    if colour_only < rates.colour_only:
        words = " and ".join(dict.fromkeys(group.colour for group in groups)).split()
    else:
        wrongs = [other_first if wrong_first < rates.wrong_count else None,
                  other_second if wrong_second < rates.wrong_count else None]
        parts = [_group_words(group, no_size >= rates.drop_size, no_count >= rates.drop_count, wrong)
                 for group, wrong in zip(groups, wrongs)]
        words = parts[0]
        if len(parts) == 2:
            words += ["and"] if no_relation < rates.drop_relation else relation.split()
            words += parts[1]
    if filler < rates.filler and len(words) + 2 <= MAX_CAPTION_WORDS:
        words = FILLERS[min(int(which_filler * len(FILLERS)), len(FILLERS) - 1)].split() + words
    return " ".join(words)


def mix_captions(captions: Sequence[str], generator: torch.Generator | None = None, synthetic_fraction: float = 0.5,
                 rates: AltTextRates = AltTextRates()) -> list[str]:
    """Each full caption kept with probability ``synthetic_fraction``, else replaced by its :func:`original_caption`.

    SD3 trains with ``synthetic_fraction = 0.5``; 1 keeps every caption, 0 gives alt-text only.
    Draws ``len(captions)`` uniforms for the choices, then twelve per replaced caption, all from
    ``generator``. Raises ValueError for a single string instead of a list (naming ``captions``) or
    ``synthetic_fraction`` outside [0, 1].
    """
    if isinstance(captions, str):
        raise ValueError("captions: expected a list of caption strings, got a single string")
    synthetic_fraction = _check_probability(synthetic_fraction, "synthetic_fraction")
    _check_generator(generator)
    keep = (torch.rand(len(captions), generator=generator) < synthetic_fraction).tolist()
    return [caption if kept else original_caption(caption, generator, rates) for caption, kept in zip(captions, keep)]
