"""Prompt adherence on the captioned shapes: a mini GenEval.

A fixed detector reads an image back into objects, and each attribute of the prompt is checked
against what it found. On the dataset's own renderings the detector is exact, so whatever a
generated image scores below 100 % is the model's doing.

Detector rules, for an H×W image in [−1, 1] on a canvas of :data:`minisd3.shapes.SUPPORTED_CANVASES`
(square S×S, or rectangular such as 32×64; "the canvas size" below is its shorter side, whose
object extents a rectangular canvas uses, as :func:`minisd3.shapes.object_extents` says):

1. colour: clip to [−1, 1]; a pixel takes the nearest palette colour (background included) when
   its Euclidean RGB distance to it is at most :data:`COLOUR_TOLERANCE` = 0.9, and no colour
   otherwise (palette colours are 2 or more apart, so a pixel halfway between two takes neither);
2. objects: 8-connected components of each colour (``scipy.ndimage.label``); a component with
   fewer pixels than half the smallest shape at this canvas size is a speck and is ignored, and so
   is one that does not stand on background: fewer than :data:`MIN_BACKGROUND_AROUND` = 1/2 of
   the pixels that touch it (8-neighbours outside it) read as background. Rendered objects keep
   :data:`minisd3.shapes.MIN_GAP` background pixels around them, so they always pass; a clump of
   one colour in noise is surrounded by noise (at 24 px, without this rule about 1 in 7 clamped
   Gaussian noise images showed such a clump, and 1 in 300 matched a prompt by it);
3. position: the centre of the component's bounding box, as (row, column);
4. size: the longer side of the bounding box, "large" when it is at least halfway between the
   small and the large extent of :data:`minisd3.shapes.OBJECT_EXTENTS`;
5. shape, from two numbers of the component,

       fill = pixels / bounding-box area               square 1, circle π/4, triangle 1/2
       drop = (mean pixel row − box middle row) / (box height / 2)
                                                       square 0, circle 0,   triangle 1/3

   (the centroid of an apex-up triangle lies a third of the half-height below the middle):
   a triangle when drop ≥ :data:`TRIANGLE_MIN_DROP` = 1/8, otherwise a square when
   fill ≥ :data:`SQUARE_MIN_FILL` = (1 + π/4)/2 ≈ 0.89, otherwise a circle. The drop threshold
   sits below the midpoint 1/6 because blur eats a triangle's thin apex first, which lowers its
   drop (to about 0.2 for a 7-pixel triangle) while circles and squares stay near 0.

Scoring a prompt (:func:`score_prompt`): the objects of a group are the detected objects with the
group's colour and shape, and each attribute is True when it holds for every group of the prompt:

    colour    some object has the group's colour, not counting the objects that show another group
              of the prompt (in "one red circle above one red square" the red square does not vouch
              for the circle's colour; a blue circle above a red square fails colour)
    shape     some object has the group's colour and shape (shape bound to colour)
    count     the group has exactly the named number of objects
    size      the group has objects and all have the named size
    relation  (two groups) both groups have objects and the relation rule of
              :mod:`minisd3.shapes` applied to their centres gives the named relation

Objects that the prompt does not name are not penalised, as in GenEval. ``overall`` is True when
every attribute is. :func:`adherence_report` averages these over a batch.

Chance rate (:func:`chance_report`): the same images scored against the prompts of *other* images
(a derangement of the prompts, averaged over a few draws): what a model that ignores the text
would score. Every adherence number is reported beside it; only the gap above it is the text's doing.

Honesty, pinned by ``tests/test_detector_honesty.py`` at every square canvas size and on
rectangular canvases (24×48, 48×24, 32×48, 48×32, 32×64, 64×32): renderings of a prompt
read correctly on every attribute (≥ 99 %); a rendering of the prompt with one attribute changed
(count, size, colour, shape or relation) fails that attribute (≥ 95 %); noise scores 0 overall.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .shapes import (
    BACKGROUND,
    COLOURS,
    MAX_ASPECT_RATIO,
    OBJECT_EXTENTS,
    SHAPES,
    SUPPORTED_SIZES,
    Prompt,
    as_prompt,
    check_canvas,
    relation_between,
    shape_mask,
)
from .validation import check_positive_int, check_tensor

COLOUR_TOLERANCE = 0.9
"""Largest RGB distance (in [−1, 1] units) at which a pixel still takes a palette colour."""
TRIANGLE_MIN_DROP = 1 / 8
"""A component whose mass sits this low in its box (in half-heights) is a triangle."""
SQUARE_MIN_FILL = (1 + math.pi / 4) / 2
"""Halfway between the fill of a square (1) and of a circle (π/4)."""
MIN_BACKGROUND_AROUND = 0.5
"""An object stands on background: at least this fraction of the pixels touching it read as background."""
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "count", "size", "relation")

_PALETTE_NAMES = ("background", *COLOURS)
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class DetectedObject:
    """One object read off an image: its attributes and the numbers they were decided from."""

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (row, column) of the bounding-box centre
    area: int
    fill: float
    drop: float


def _check_images(images, name: str) -> torch.Tensor:
    """A (3, H, W) image or an (N, 3, H, W) batch on one supported canvas, else a one-line ValueError."""
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, torch.Tensor) for i in images):
        shapes = sorted({tuple(i.shape) for i in images})
        raise ValueError(f"{name}: expected one tensor, a (3, H, W) image or an (N, 3, H, W) batch, got a "
                         f"{type(images).__name__} of {len(images)} tensors of shapes {shapes}; a batch holds one "
                         "canvas: stack the images of each canvas and score each batch separately")
    check_tensor(images, name, min_ndim=3)
    try:
        ok = images.ndim in (3, 4) and images.shape[-3] == 3 and bool(check_canvas(tuple(images.shape[-2:])))
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a (3, H, W) image or an (N, 3, H, W) batch, H and W each a side S in "
                         f"{SUPPORTED_SIZES} and the longer at most {MAX_ASPECT_RATIO}× the shorter, "
                         f"got shape {tuple(images.shape)}")
    return images


def classify_pixels(image: torch.Tensor) -> np.ndarray:
    """Palette index of every pixel of a (3, H, W) image: 0 background, k ≥ 1 the k-th colour of
    :data:`minisd3.shapes.COLOURS`, −1 when no palette colour is within :data:`COLOUR_TOLERANCE`."""
    check_tensor(image, "image", ndim=3)
    pixels = image.detach().float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy()
    distances = np.linalg.norm(pixels[:, :, None, :] - _PALETTE, axis=-1)
    labels = distances.argmin(-1)
    labels[distances.min(-1) > COLOUR_TOLERANCE] = -1
    return labels


def _shape_from(fill: float, drop: float) -> str:
    if drop >= TRIANGLE_MIN_DROP:
        return "triangle"
    return "square" if fill >= SQUARE_MIN_FILL else "circle"


def _background_around(components: np.ndarray, number: int, box: tuple[slice, slice], labels: np.ndarray) -> float:
    """Fraction of the pixels 8-touching component ``number`` (outside it) that read as background."""
    rows = slice(max(box[0].start - 1, 0), box[0].stop + 1)
    cols = slice(max(box[1].start - 1, 0), box[1].stop + 1)
    inside = components[rows, cols] == number
    ring = ndimage.binary_dilation(inside, structure=_EIGHT_NEIGHBOURS) & ~inside
    return float((labels[rows, cols][ring] == 0).mean()) if ring.any() else 0.0


def _detect_one(image: torch.Tensor) -> list[DetectedObject]:
    extents = OBJECT_EXTENTS[min(image.shape[-2], image.shape[-1])]  # a rectangle draws its shorter side's objects
    min_area = min(int(shape_mask(shape, extents["small"]).sum()) for shape in SHAPES) / 2
    large_from = (extents["small"] + extents["large"]) / 2
    labels = classify_pixels(image)
    found = []
    for index, colour in enumerate(_PALETTE_NAMES[1:], start=1):
        components, _ = ndimage.label(labels == index, structure=_EIGHT_NEIGHBOURS)
        for number, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == number
            area = int(mask.sum())
            if area < min_area or _background_around(components, number, box, labels) < MIN_BACKGROUND_AROUND:
                continue
            height, width = mask.shape
            fill = area / (height * width)
            drop = (np.nonzero(mask)[0].mean() + 0.5 - height / 2) / (height / 2)
            centre = ((box[0].start + box[0].stop - 1) / 2, (box[1].start + box[1].stop - 1) / 2)
            found.append(DetectedObject(_shape_from(fill, drop), colour,
                                        "large" if max(height, width) >= large_from else "small",
                                        centre, area, float(fill), float(drop)))
    return found


def detect_objects(images: torch.Tensor) -> list[DetectedObject] | list[list[DetectedObject]]:
    """The objects in a (3, H, W) image, or a list of them for each image of an (N, 3, H, W) batch.

    H × W is a supported canvas (square or rectangular, module docstring); images of different
    canvases go in separate calls.

    Objects come colour by colour (in the order of :data:`minisd3.shapes.COLOURS`), then in
    reading order of their top rows.
    """
    images = _check_images(images, "images")
    if images.ndim == 3:
        return _detect_one(images)
    return [_detect_one(image) for image in images]


def score_detections(objects: Sequence[DetectedObject], prompt: Prompt | str) -> dict[str, bool]:
    """Per-attribute booleans (module docstring) for objects already detected; ``relation`` only for
    two-group prompts; ``overall`` is all of them."""
    prompt = as_prompt(prompt, "prompt")
    pairs = [group.pair for group in prompt.groups]
    members = [[o for o in objects if (o.colour, o.shape) == pair] for pair in pairs]
    scores = {
        # an object that shows another group of the prompt does not count for this group's colour
        "colour": all(any(o.colour == group.colour and (o.shape == group.shape or (o.colour, o.shape) not in pairs)
                          for o in objects) for group in prompt.groups),
        "shape": all(len(found) > 0 for found in members),
        "count": all(len(found) == group.count for found, group in zip(members, prompt.groups)),
        "size": all(found and all(o.size == group.size for o in found) for found, group in zip(members, prompt.groups)),
    }
    if prompt.relation is not None:
        scores["relation"] = all(members) and relation_between(
            [o.centre for o in members[0]], [o.centre for o in members[1]]) == prompt.relation
    scores["overall"] = all(scores.values())
    return scores


def score_prompt(image: torch.Tensor, prompt: Prompt | str) -> dict[str, bool]:
    """How a (3, H, W) image in [−1, 1] follows a prompt (a Prompt or a caption): attribute → bool."""
    image = _check_images(image, "image")
    if image.ndim != 3:
        raise ValueError(f"image: expected one (3, H, W) image, got shape {tuple(image.shape)}; "
                         "use adherence_report for a batch")
    return score_detections(_detect_one(image), prompt)


def _check_batch(images, prompts) -> tuple[torch.Tensor, list[Prompt]]:
    images = _check_images(images, "images")
    if images.ndim != 4:
        raise ValueError(f"images: expected an (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    if isinstance(prompts, str) or len(prompts) != images.shape[0]:
        raise ValueError(f"prompts: expected a list of {images.shape[0]} prompts, one per image, "
                         f"got {'a single string' if isinstance(prompts, str) else len(prompts)}")
    return images, [as_prompt(prompt, "prompts") for prompt in prompts]


def average_scores(scores: Sequence[dict[str, bool]]) -> dict[str, float]:
    """Fraction of True per attribute, over the scores (from :func:`prompt_scores`) that have it."""
    report = {}
    for attribute in (*ATTRIBUTES, "overall"):
        values = [s[attribute] for s in scores if attribute in s]
        if values:
            report[attribute] = sum(values) / len(values)
    return report


def adherence_report(images: torch.Tensor, prompts: Sequence[Prompt | str]) -> dict[str, float]:
    """Fraction of images that get each attribute right, and ``overall`` (all attributes right).

    ``images`` is (N, 3, H, W) in [−1, 1], one supported canvas (square or not), and ``prompts`` N
    prompts or captions. ``relation`` is
    averaged over the two-group prompts only, and is absent when there are none. Read it beside
    :func:`chance_report`, what the same images score against prompts they were not made for.
    """
    return average_scores(prompt_scores(images, prompts))


def prompt_scores(images: torch.Tensor, prompts: Sequence[Prompt | str]) -> list[dict[str, bool]]:
    """Each image's verdicts (:func:`score_prompt`: attribute → bool, with ``overall``), in order.

    ``images`` (N, 3, H, W) in [−1, 1] and N ``prompts``, as :func:`adherence_report`, which
    averages them; kept per prompt, two models sampled on the same prompts and noise can be
    compared pair by pair (the paired standard error of a difference).
    """
    images, prompts = _check_batch(images, prompts)
    return [score_detections(_detect_one(image), prompt) for image, prompt in zip(images, prompts)]


def paired_difference(after: Sequence[int | bool], before: Sequence[int | bool]) -> tuple[float, float]:
    """(mean of after − before, its standard error) for two models' verdicts on the same prompts and noise.

    ``after`` and ``before`` are N ≥ 2 verdicts each (0/1 or bool, e.g. ``verdicts`` of
    :func:`minisd3.engine.evaluation.evaluate`), prompt i of one paired with prompt i of the other;
    the error is s_d/√N with s_d the sample standard deviation of the N differences (the paired
    standard error; the normal form of McNemar's test). Two models that share prompts and noise
    mostly agree, so this is smaller than the √2·√(p(1 − p)/N) of two independent scores.
    Raises a ValueError naming ``before`` (another length) or ``after`` (fewer than 2 verdicts).
    """
    if len(after) < 2:
        raise ValueError(f"after: expected at least 2 verdicts, got {len(after)}")
    if len(before) != len(after):
        raise ValueError(f"before: expected {len(after)} verdicts (one per prompt of after), got {len(before)}")
    differences = torch.tensor([float(a) - float(b) for a, b in zip(after, before)])
    return float(differences.mean()), float(differences.std() / len(differences) ** 0.5)


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of 0 … n − 1 that moves every element (σ(i) ≠ i for all i).

    Drawn by redrawing ``torch.randperm`` until no element stays in place (about e ≈ 2.7 draws on
    average). Raises a ValueError for n < 2, where no such permutation exists.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: expected an int ≥ 2 (one element cannot be moved), got {n!r}")
    while True:
        order = torch.randperm(n, generator=generator)
        if not (order == torch.arange(n)).any():
            return order


def chance_report(images: torch.Tensor, prompts: Sequence[Prompt | str], generator: torch.Generator | None = None,
                  repeats: int = 5) -> dict[str, float]:
    """The adherence of a model that ignores the text: the same images scored against other images' prompts.

    Each of ``repeats`` rounds draws a :func:`derangement` σ of the N images and scores image i
    against prompt σ(i); the report is the mean over rounds of what :func:`adherence_report`
    would give (same keys). The images keep everything but the match to their own text (how
    often a colour or a count turns up anyway), so adherence − chance is what the text did.

    ``images`` is (N, 3, H, W) in [−1, 1] (one supported canvas) with N ≥ 2, ``prompts`` N prompts or captions,
    ``repeats`` ≥ 1. Raises a ValueError naming the argument otherwise.
    """
    images, prompts = _check_batch(images, prompts)
    check_positive_int(repeats, "repeats")
    if len(prompts) < 2:
        raise ValueError(f"images: expected at least 2 images to shuffle prompts across, got {len(prompts)}")
    detections = [_detect_one(image) for image in images]
    scores = []
    for _ in range(repeats):
        order = derangement(len(prompts), generator)
        scores += [score_detections(found, prompts[int(j)]) for found, j in zip(detections, order)]
    return average_scores(scores)
