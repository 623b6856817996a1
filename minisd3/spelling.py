"""A reader for glyph images, independent of any model: template matching per character cell.

A glyph canvas (:mod:`minisd3.glyphs`) puts letter i in a fixed 12×8 cell, drawn in a fixed font,
so each cell can be compared with the 26 letter templates and the blank cell:

    d_k(x)  = ‖x − T_k‖₂                      (x the cell, clipped to [−1, 1]; T_k letter k or blank)
    k*      = argmin_k d_k(x)
    read k* if d_k*(x) < ½ · min_{j≠k*} ‖T_k* − T_j‖₂,   else "?" (unreadable)

The acceptance radius is half the distance to the nearest other template, so no cell can be read
as two letters, a clean rendering is read exactly (d = 0), and noise — far from every template —
is read as "?", never as a lucky letter. A reading is the word of the cells, blanks at the end
dropped ("cab", "c?b").

Scores: character accuracy (the fraction of the :data:`~minisd3.glyphs.MAX_LETTERS` cells read as
the target's letter or blank) and exact-word accuracy. :func:`chance_spelling` gives their chance
level: the same readings scored against the captions of other images in the batch, which is
what a model that draws legible words but ignores its prompt would get.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from .adherence import derangement
from .glyphs import ALPHABET, BAND_TOP, CELL, IMAGE_SIZE, MAX_LETTERS, letter_cell, word_of

UNREADABLE = "?"
SYMBOLS = ALPHABET + " "
"""What a cell can be read as: a letter or blank (" ")."""


@lru_cache(maxsize=1)
def templates() -> tuple[np.ndarray, np.ndarray]:
    """(T (27, 96) flattened letter and blank cells, radius (27,) the acceptance radius of each)."""
    table = np.stack([letter_cell(s).ravel() for s in SYMBOLS]).astype(np.float64)
    gaps = np.linalg.norm(table[:, None] - table[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    return table, 0.5 * gaps.min(axis=1)


def _cells(images: torch.Tensor) -> np.ndarray:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) of glyph canvases, got {shape}")
    rows, cols = CELL
    band = images[:, 0, BAND_TOP:BAND_TOP + rows].detach().float().clamp(-1, 1).cpu().numpy()
    cells = band.reshape(len(images), rows, MAX_LETTERS, cols).transpose(0, 2, 1, 3)
    return cells.reshape(len(images), MAX_LETTERS, rows * cols).astype(np.float64)


def read_cells(images: torch.Tensor) -> list[list[str]]:
    """Each image's cells as symbols: a letter, " " (blank) or "?" (unreadable). images (N, 1, 24, 24) in [−1, 1]."""
    table, radius = templates()
    cells = _cells(images)
    dist = np.linalg.norm(cells[:, :, None, :] - table[None, None], axis=-1)  # (N, cells, 27)
    best = dist.argmin(-1)
    accepted = np.take_along_axis(dist, best[..., None], -1)[..., 0] < radius[best]
    return [[SYMBOLS[b] if ok else UNREADABLE for b, ok in zip(row_b, row_ok)] for row_b, row_ok in zip(best, accepted)]


def read_words(images: torch.Tensor) -> list[str]:
    """The word each image shows, blank cells at the end dropped ("cab", "c?b", "" for a blank canvas)."""
    return ["".join(cells).rstrip(" ") for cells in read_cells(images)]


def _targets(prompts: Sequence[str]) -> list[str]:
    return [p if '"' not in p else word_of(p, "prompts") for p in prompts]


def score_spelling(images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
    """{"characters": …, "words": …}: character and exact-word accuracy of ``images`` against ``prompts``.

    ``prompts`` are captions ('the word "cab"') or bare words, one per image. Characters are
    scored over every cell (a target shorter than the canvas expects blanks after it).
    """
    targets = _targets(prompts)
    if len(targets) != len(images):
        raise ValueError(f"prompts: expected {len(images)} prompts (one per image), got {len(targets)}")
    cells = read_cells(images)
    chars = [sum(a == b for a, b in zip(row, target.ljust(MAX_LETTERS))) / MAX_LETTERS
             for row, target in zip(cells, targets)]
    words = ["".join(row).rstrip(" ") == target for row, target in zip(cells, targets)]
    return {"characters": float(np.mean(chars)), "words": float(np.mean(words))}


def chance_spelling(images: torch.Tensor, prompts: Sequence[str],
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """:func:`score_spelling` against a derangement of ``prompts`` (no image keeps its own): the score
    of a model that ignores its prompt but draws words like these."""
    order = derangement(len(prompts), generator)
    return score_spelling(images, [prompts[int(i)] for i in order])


def spelling_report(images: torch.Tensor, prompts: Sequence[str],
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """Scores and their chance levels: {"characters", "words", "characters_chance", "words_chance"}."""
    score = score_spelling(images, prompts)
    chance = chance_spelling(images, prompts, generator)
    return {**score, **{f"{k}_chance": v for k, v in chance.items()}}


def unreadable_fraction(images: torch.Tensor) -> float:
    """The fraction of cells the reader refuses ("?")."""
    cells = read_cells(images)
    return float(np.mean([[c == UNREADABLE for c in row] for row in cells])) if cells else 0.0

