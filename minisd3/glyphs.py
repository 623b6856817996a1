"""Glyphs: rendered words with captions, a text-to-image dataset for spelling, made on the fly.

Each image is a 24×24 one-channel canvas in [−1, 1] (background −1, ink up to +1) holding one
word of up to :data:`MAX_LETTERS` lower-case letters, drawn in DejaVu Sans Mono (the font that
ships inside matplotlib, so nothing is downloaded). Every letter sits in its own cell of
:data:`CELL` = 12 rows × 8 columns, left-aligned on a band of rows 6–17:

    cell i  =  rows 6 … 17,  columns 8·i … 8·i + 7        (i = 0, 1, 2)

so letter i of the word is always in image columns 8·i … 8·i + 7: a fixed font on a fixed grid,
which is what lets :mod:`minisd3.spelling` read a rendering back exactly.

Captions name the word in double quotes::

    the word "cab"

Words. The dataset's words have three letters, consonant–vowel–consonant ("cab", "hug", "zop",
real or not): 21·5·21 = 2205 of them. :func:`split_words` draws training words and held-out words
that never occur in training, while every letter of a held-out word occurs at the same position
in some training word — a model that spells letter by letter can write them, one that memorises
whole words cannot.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .seeding import make_generator
from .validation import check_positive_int

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
CONSONANTS = "bcdfghjklmnpqrstvwxyz"
VOWELS = "aeiou"
MAX_LETTERS = 3
"""Letters a canvas holds (three cells of 8 columns fill its 24 columns)."""
CELL = (12, 8)
"""(rows, columns) of one letter's cell."""
IMAGE_SIZE = 24
BAND_TOP = 6
"""First row of the text band (rows 6 … 17; the rows above and below stay background)."""
FONT_PIXELS = 11
"""DejaVu Sans Mono at 11 px: every lower-case letter fits a 12×8 cell (descenders included)."""
CAPTION = 'the word "{}"'
_QUOTED = re.compile(r'"([^"]*)"')


def font_path() -> Path:
    """DejaVu Sans Mono as shipped by matplotlib (no download, the same glyphs on every machine)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"


@lru_cache(maxsize=None)
def letter_cell(letter: str) -> np.ndarray:
    """One letter's 12×8 cell in [−1, 1] (float32); a space gives the blank cell.

    Raises ValueError for anything but one character of :data:`ALPHABET` or a space.
    """
    if letter != " " and (len(letter) != 1 or letter not in ALPHABET):
        raise ValueError(f"letter: expected one of {ALPHABET!r} or ' ', got {letter!r}")
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = CELL
    canvas = Image.new("L", (cols, rows), 0)
    font = ImageFont.truetype(str(font_path()), FONT_PIXELS)
    ImageDraw.Draw(canvas).text((0, -2), letter, fill=255, font=font)  # glyph boxes span rows 2–13 at 11 px
    return np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0


def check_word(word, name: str = "word") -> str:
    """A word the canvas can hold: 1 … :data:`MAX_LETTERS` letters of :data:`ALPHABET`; else ValueError naming ``name``."""
    if not isinstance(word, str):
        raise ValueError(f"{name}: expected a word of lower-case letters, got {type(word).__name__} {word!r}")
    outside = sorted({c for c in word if c not in ALPHABET})
    if outside:
        raise ValueError(f"{name}: expected lower-case letters a–z only, got {word!r} (with {''.join(outside)!r})")
    if not 1 <= len(word) <= MAX_LETTERS:
        raise ValueError(f"{name}: expected 1 to {MAX_LETTERS} letters (the canvas holds {MAX_LETTERS} cells), "
                         f"got {len(word)} in {word!r}")
    return word


def render_word(word: str) -> torch.Tensor:
    """The (1, 24, 24) rendering of ``word`` in [−1, 1], letter i in columns 8·i … 8·i + 7 of rows 6 … 17."""
    check_word(word)
    image = np.full((1, IMAGE_SIZE, IMAGE_SIZE), -1.0, dtype=np.float32)
    rows, cols = CELL
    for i, letter in enumerate(word):
        image[0, BAND_TOP:BAND_TOP + rows, cols * i:cols * (i + 1)] = letter_cell(letter)
    return torch.from_numpy(image)


def caption_of(word: str) -> str:
    """``'the word "cab"'`` for ``"cab"``."""
    return CAPTION.format(check_word(word))


def word_of(caption, name: str = "prompt") -> str:
    """The word a caption names in double quotes: ``'the word "cab"'`` → ``"cab"``.

    Raises ValueError naming ``name`` for a caption without exactly one quoted word, or a word
    the canvas cannot hold (letters outside a–z, more than :data:`MAX_LETTERS`).
    """
    if not isinstance(caption, str):
        raise ValueError(f"{name}: expected a caption such as 'the word \"cab\"', got {type(caption).__name__}")
    quoted = _QUOTED.findall(caption)
    if len(quoted) != 1 or caption.count('"') != 2:
        raise ValueError(f"{name}: expected the word in double quotes, as in 'the word \"cab\"', got {caption!r}")
    return check_word(quoted[0], name)


def all_words() -> tuple[str, ...]:
    """Every consonant–vowel–consonant word, in alphabetical order (2205)."""
    return tuple(a + b + c for a in CONSONANTS for b in VOWELS for c in CONSONANTS)


@dataclass(frozen=True)
class WordSplit:
    """Training words and held-out words (disjoint); every held-out letter occurs at its position in training."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]

    def captions(self, n: int, generator: torch.Generator | None = None, held_out: bool = True) -> list[str]:
        """``n`` captions of words drawn uniformly (with replacement) from the held-out or training words."""
        words = self.held_out if held_out else self.train
        idx = torch.randint(len(words), (check_positive_int(n, "n"),), generator=generator)
        return [caption_of(words[int(i)]) for i in idx]


def split_words(seed: int = 0, n_train: int = 600, n_held_out: int = 100) -> WordSplit:
    """A seeded split of :func:`all_words` into ``n_train`` training and ``n_held_out`` held-out words.

    Raises ValueError when the two do not fit in 2205 words, or when a held-out word has a letter
    at a position where no training word has it (possible only for very small ``n_train``).
    """
    words = all_words()
    check_positive_int(n_train, "n_train")
    check_positive_int(n_held_out, "n_held_out")
    if n_train + n_held_out > len(words):
        raise ValueError(f"n_train + n_held_out: expected at most {len(words)} words, got {n_train + n_held_out}")
    order = torch.randperm(len(words), generator=make_generator(seed)).tolist()
    train = tuple(sorted(words[i] for i in order[:n_train]))
    held_out = tuple(sorted(words[i] for i in order[n_train:n_train + n_held_out]))
    seen = [{w[i] for w in train} for i in range(MAX_LETTERS)]
    for word in held_out:
        missing = [i for i, c in enumerate(word) if c not in seen[i]]
        if missing:
            raise ValueError(f"n_train: {n_train} training words leave letter {word[missing[0]]!r} at position "
                             f"{missing[0]} of the held-out word {word!r} unseen; expected more training words")
    return WordSplit(train, held_out)


def sample_glyphs(n: int, generator: torch.Generator | None = None,
                  words: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """``n`` renderings (n, 1, 24, 24) and their captions, words drawn uniformly from ``words``
    (default: the training words of :func:`split_words`)."""
    words = tuple(words) if words is not None else split_words().train
    if not words:
        raise ValueError("words: expected at least one word, got none")
    idx = torch.randint(len(words), (check_positive_int(n, "n"),), generator=generator).tolist()
    chosen = [words[i] for i in idx]
    return torch.stack([render_word(w) for w in chosen]), [caption_of(w) for w in chosen]
