"""Captioned shapes: a small text-to-image dataset made on the fly, offline and from a seed.

Each image is an RGB canvas of H×W pixels (height × width; square S×S by default, S = 32) with a black
background and a few coloured circles, squares and triangles. Each image comes with a caption
from a small grammar, so the text carries counts, colours, shapes, sizes and where things are,
which no class label could replace.

Grammar (every caption, and only these, can be written and parsed)::

    caption  := group | group relation group
    group    := count size colour noun
    count    := one | two | three        ("one" takes the singular noun, "two"/"three" the plural)
    size     := small | large
    colour   := red | green | blue | yellow | magenta | cyan | white
    noun     := circle | square | triangle | circles | squares | triangles
    relation := above | below | left of | right of

    "three small green triangles"
    "two large red circles above one small blue square"

A relation joins two groups of one or two objects each, and the two groups differ in colour or in
shape (so every object says which group it belongs to). :data:`VOCABULARY` lists every word;
a caption has at most :data:`MAX_CAPTION_WORDS` words.

Canvases. ``image_size`` is an int S for a square S×S canvas, or a pair (H, W), height and width
as torch orders (rows, columns), for a rectangular one: each side in :data:`SUPPORTED_SIZES` and
the longer side at most twice the shorter (:data:`SUPPORTED_CANVASES`, checked by
:func:`check_canvas`), e.g. (32, 64) or (48, 32), as SD3 fine-tunes on aspect-ratio buckets.
Objects keep the size they have on the square of the *shorter* side, so a scene on 32×64 shows
the 32×32 objects on a wider frame: the same content scale, another frame.

Scenes. A :class:`Scene` is a list of :class:`SceneObject` (shape, colour, size, centre) on a
canvas. An object is stamped from a fixed bitmap whose bounding box is e×e pixels, e odd
(:data:`OBJECT_EXTENTS`: small and large e for each side; a rectangular canvas takes those of its
shorter side, :func:`object_extents`), centred on an integer pixel (row, column), row 0 at the top:

    square    every pixel of the box
    circle    pixels whose centre lies within e/2 of the box centre       (fill ≈ π/4 of the box)
    triangle  apex up: pixel centres with |x − x_c| ≤ y/2, y measured from the top edge  (fill ≈ 1/2)

Boxes of different objects keep at least :data:`MIN_GAP` background pixels between them. Canvases
below 24 px are not offered: three shapes of 3–4 px cannot be told apart, nor four objects fitted.

Relation rule (the one rule used by captions, rendering and the detector). With Δ = mean centre
of the second group − mean centre of the first group, as (Δrow, Δcol):

    |Δrow| ≥ |Δcol|  →  "above" if Δrow > 0, else "below"
    |Δrow| < |Δcol|  →  "left of" if Δcol > 0, else "right of"

in pixels, on every canvas (a wide canvas does not stretch either axis).

:func:`render_prompt` places the objects one at a time, each at a centre drawn uniformly among
those where it keeps :data:`MIN_GAP` from the objects already placed. For a relation, a random
split line (a row for above/below, a column for left/right, drawn across that axis of the
canvas) puts every object of the first group strictly on the named side of every object of
the second, and a layout is kept only if |Δ along the relation| ≥ 2·|Δ across it|, so that the
rule reads the relation back without doubt (rejection sampling: otherwise it draws again).

Generalisation. :func:`split_prompts` holds out a few (colour, shape) pairs, e.g. "red circle":
training captions (``pairs=split.train_pairs``) never contain them although every colour and
every shape still occurs, so a model tested on ``pairs=split.held_out_pairs`` must compose.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .seeding import make_generator
from .validation import check_positive_int

COUNT_WORDS: dict[str, int] = {"one": 1, "two": 2, "three": 3}
SIZES: tuple[str, ...] = ("small", "large")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "magenta": (1.0, -1.0, 1.0),
    "cyan": (-1.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
"""RGB in [−1, 1]: the corners of the colour cube, at least 2 apart from each other and the background."""
BACKGROUND: tuple[float, float, float] = (-1.0, -1.0, -1.0)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
MAX_COUNT_IN_RELATION = 2
"""Each group joined by a relation has one or two objects; three appear only in one-group captions."""

VOCABULARY: tuple[str, ...] = (
    *COUNT_WORDS, *SIZES, *COLOURS, *SHAPES, *PLURALS.values(), "above", "below", "left", "right", "of",
)
"""Every word the grammar uses, in a fixed order (for a word-level tokenizer)."""
MAX_CAPTION_WORDS = 10
"""The longest caption: two groups of four words and a two-word relation ("left of")."""

OBJECT_EXTENTS: dict[int, dict[str, int]] = {
    24: {"small": 5, "large": 7},
    32: {"small": 7, "large": 11},
    48: {"small": 9, "large": 15},
    64: {"small": 13, "large": 21},
}
"""Side e of an object's bounding box (pixels, odd) for each supported canvas side (the shorter side
of a rectangular canvas)."""
SUPPORTED_SIZES: tuple[int, ...] = tuple(OBJECT_EXTENTS)
MAX_ASPECT_RATIO = 2
"""The longer side of a canvas is at most this many times the shorter."""
SUPPORTED_CANVASES: tuple[tuple[int, int], ...] = tuple(
    (height, width) for height in SUPPORTED_SIZES for width in SUPPORTED_SIZES
    if max(height, width) <= MAX_ASPECT_RATIO * min(height, width))
"""Every (height, width) a canvas may have, square ones included."""
MIN_GAP = 2
"""Background pixels kept between the bounding boxes of any two objects."""

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
"""Every (colour, shape) combination."""


def check_image_size(image_size, name: str = "image_size") -> int:
    """Check a square canvas side is one of :data:`SUPPORTED_SIZES` (an int; a pair is refused).

    For callers that need a square canvas; :func:`check_canvas` also takes (H, W).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size not in OBJECT_EXTENTS:
        raise ValueError(f"{name}: expected one of {SUPPORTED_SIZES} pixels, got {image_size!r}")
    return image_size


def check_canvas(image_size, name: str = "image_size") -> tuple[int, int]:
    """Check a canvas and return it as (height, width).

    ``image_size`` is an int S in :data:`SUPPORTED_SIZES` (the square S×S) or a pair (H, W), a tuple
    or list (a ``torch.Size`` too), with H and W in :data:`SUPPORTED_SIZES` and the longer side at
    most :data:`MAX_ASPECT_RATIO` times the shorter (:data:`SUPPORTED_CANVASES`). Anything else
    raises a one-line ValueError naming ``name``, what is expected and what came.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        canvas = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 \
            and all(isinstance(side, int) and not isinstance(side, bool) for side in image_size):
        canvas = (int(image_size[0]), int(image_size[1]))
    else:
        canvas = None
    if canvas not in SUPPORTED_CANVASES:
        raise ValueError(f"{name}: expected one of {SUPPORTED_SIZES} pixels, or (height, width) with both sides among "
                         f"them and the longer at most {MAX_ASPECT_RATIO}× the shorter, got {image_size!r}")
    return canvas


def object_extents(image_size) -> dict[str, int]:
    """Bounding-box sides {"small": e, "large": e} of objects on a canvas: those of its shorter side.

    ``image_size`` as :func:`check_canvas` takes it; (32, 64) gives ``OBJECT_EXTENTS[32]``.
    """
    return OBJECT_EXTENTS[min(check_canvas(image_size))]


def _canvas_text(canvas: tuple[int, int]) -> str:
    return f"{canvas[0]}×{canvas[1]}"


def _check_word(value, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {tuple(allowed)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- prompts and captions


@dataclass(frozen=True)
class Group:
    """``count`` objects of one size, colour and shape, e.g. Group(2, "large", "red", "circle")."""

    count: int
    size: str
    colour: str
    shape: str

    def __post_init__(self):
        if isinstance(self.count, bool) or self.count not in COUNT_WORDS.values():
            raise ValueError(f"count: expected one of {tuple(COUNT_WORDS.values())}, got {self.count!r}")
        _check_word(self.size, "size", SIZES)
        _check_word(self.colour, "colour", tuple(COLOURS))
        _check_word(self.shape, "shape", SHAPES)

    @property
    def pair(self) -> tuple[str, str]:
        """(colour, shape), the combination that :func:`split_prompts` holds out."""
        return self.colour, self.shape


@dataclass(frozen=True)
class Prompt:
    """What a caption says: one group, or two groups and the relation of the first to the second."""

    groups: tuple[Group, ...]
    relation: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(self.groups))
        if len(self.groups) not in (1, 2) or not all(isinstance(g, Group) for g in self.groups):
            raise ValueError(f"groups: expected one or two Group objects, got {self.groups!r}")
        if len(self.groups) == 1:
            if self.relation is not None:
                raise ValueError(f"relation: expected None for a one-group prompt, got {self.relation!r}")
            return
        _check_word(self.relation, "relation", RELATIONS)
        for group in self.groups:
            if group.count > MAX_COUNT_IN_RELATION:
                raise ValueError(
                    f"groups: expected at most {MAX_COUNT_IN_RELATION} objects per group in a relation, "
                    f"got {group.count} in {group}"
                )
        if self.groups[0].pair == self.groups[1].pair:
            raise ValueError(
                f"groups: expected two groups that differ in colour or shape, got {self.groups[0].pair} twice"
            )


def _group_words(group: Group) -> list[str]:
    count_word = next(word for word, n in COUNT_WORDS.items() if n == group.count)
    noun = group.shape if group.count == 1 else PLURALS[group.shape]
    return [count_word, group.size, group.colour, noun]


def format_prompt(prompt: Prompt) -> str:
    """The caption of a prompt, e.g. "two large red circles above one small blue square".

    The inverse of :func:`parse_caption`.
    """
    if not isinstance(prompt, Prompt):
        raise ValueError(f"prompt: expected a Prompt, got {type(prompt).__name__}")
    words = _group_words(prompt.groups[0])
    if prompt.relation is not None:
        words += [prompt.relation, *_group_words(prompt.groups[1])]
    return " ".join(words)


def _unknown_word_error(word: str) -> ValueError:
    return ValueError(f"caption: unknown word {word!r}; the vocabulary is {' '.join(VOCABULARY)}")


def parse_caption(text: str) -> Prompt:
    """Read a caption of the grammar (any letter case, any spacing) back into a :class:`Prompt`.

    An unknown word raises a ValueError naming it and listing :data:`VOCABULARY`; known words in a
    wrong place raise one that says what was expected there.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption: expected a string, got {type(text).__name__}")
    words = text.lower().split()
    for word in words:
        if word not in VOCABULARY:
            raise _unknown_word_error(word)
    position = 0

    def take(kind: str, allowed: Sequence[str]) -> str:
        nonlocal position
        if position >= len(words):
            raise ValueError(f"caption {text!r}: expected {kind} ({', '.join(allowed)}) after the last word")
        word = words[position]
        if word not in allowed:
            raise ValueError(
                f"caption {text!r}: expected {kind} ({', '.join(allowed)}) at word {position + 1}, got {word!r}"
            )
        position += 1
        return word

    def group() -> Group:
        count = COUNT_WORDS[take("a count", tuple(COUNT_WORDS))]
        size = take("a size", SIZES)
        colour = take("a colour", tuple(COLOURS))
        nouns = SHAPES if count == 1 else tuple(PLURALS.values())
        noun = take("a singular noun" if count == 1 else "a plural noun", nouns)
        return Group(count, size, colour, noun if count == 1 else noun[:-1])

    first = group()
    if position == len(words):
        return Prompt((first,))
    relation = take("a relation", ("above", "below", "left", "right"))
    if relation in ("left", "right"):
        relation += " " + take("'of'", ("of",))
    second = group()
    if position != len(words):
        raise ValueError(f"caption {text!r}: expected the end after word {position}, got {words[position]!r}")
    return Prompt((first, second), relation)


# --------------------------------------------------------------------------- scenes and rendering


@dataclass(frozen=True)
class SceneObject:
    """One shape on the canvas; ``centre`` is (row, column) in pixels, row 0 at the top."""

    shape: str
    colour: str
    size: str
    centre: tuple[int, int]

    def __post_init__(self):
        _check_word(self.shape, "shape", SHAPES)
        _check_word(self.colour, "colour", tuple(COLOURS))
        _check_word(self.size, "size", SIZES)


@dataclass(frozen=True)
class Scene:
    """Objects on a canvas. Groups are named in the order their objects first appear.

    ``image_size`` is an int S (S×S) or a pair (H, W), as :func:`check_canvas` takes it (a list is
    kept as a tuple); :attr:`canvas` is always (H, W). Every object's box must lie on the canvas.
    """

    objects: tuple[SceneObject, ...]
    image_size: int | tuple[int, int] = 32

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        height, width = check_canvas(self.image_size)
        if not isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (height, width))
        extents = OBJECT_EXTENTS[min(height, width)]
        for obj in self.objects:
            half = (extents[obj.size] - 1) // 2
            row, col = obj.centre
            if not (half <= row < height - half and half <= col < width - half):
                raise ValueError(
                    f"objects: expected centres (row, column) in [{half}, {height - 1 - half}] × "
                    f"[{half}, {width - 1 - half}] so a {obj.size} {obj.shape} fits on the "
                    f"{_canvas_text((height, width))} canvas, got {obj.centre}"
                )

    @property
    def canvas(self) -> tuple[int, int]:
        """(height, width) of the canvas in pixels."""
        return check_canvas(self.image_size)


@lru_cache(maxsize=None)
def shape_mask(shape: str, extent: int) -> np.ndarray:
    """The e×e boolean bitmap of a shape (see the module docstring); e must be odd."""
    _check_word(shape, "shape", SHAPES)
    if extent < 3 or extent % 2 == 0:
        raise ValueError(f"extent: expected an odd number of pixels ≥ 3, got {extent!r}")
    y, x = np.mgrid[0:extent, 0:extent] + 0.5  # pixel centres, from the top-left corner of the box
    middle = extent / 2
    if shape == "square":
        mask = np.ones((extent, extent), dtype=bool)
    elif shape == "circle":
        mask = (x - middle) ** 2 + (y - middle) ** 2 <= middle**2
    else:
        mask = np.abs(x - middle) <= y / 2
    mask.setflags(write=False)
    return mask


def render(scene: Scene) -> torch.Tensor:
    """Rasterise a scene: a (3, H, W) float32 tensor in [−1, 1] for its canvas (H, W), background
    :data:`BACKGROUND`, each object's bitmap stamped in its colour."""
    if not isinstance(scene, Scene):
        raise ValueError(f"scene: expected a Scene, got {type(scene).__name__}")
    height, width = scene.canvas
    extents = OBJECT_EXTENTS[min(height, width)]
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = BACKGROUND
    for obj in scene.objects:
        extent = extents[obj.size]
        half = (extent - 1) // 2
        row, col = obj.centre
        box = image[row - half: row + half + 1, col - half: col + half + 1]
        box[shape_mask(obj.shape, extent)] = COLOURS[obj.colour]
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def relation_between(centres_a: Sequence[Sequence[float]], centres_b: Sequence[Sequence[float]]) -> str | None:
    """Where group A is with respect to group B, by the relation rule of the module docstring.

    ``centres_*`` are (row, column) pairs; returns None when the two mean centres coincide.
    """
    if len(centres_a) == 0 or len(centres_b) == 0:
        raise ValueError(f"centres_a, centres_b: expected at least one centre each, got {len(centres_a)} and "
                         f"{len(centres_b)}")
    d_row, d_col = np.mean(np.asarray(centres_b, float), 0) - np.mean(np.asarray(centres_a, float), 0)
    if d_row == 0 and d_col == 0:
        return None
    if abs(d_row) >= abs(d_col):
        return "above" if d_row > 0 else "below"
    return "left of" if d_col > 0 else "right of"


def prompt_of_scene(scene: Scene) -> Prompt:
    """The prompt a scene shows: its objects grouped by (colour, shape), the relation by the rule.

    Raises a ValueError when the scene is not something the grammar can say (no objects, more
    than two groups, one group with mixed sizes, too many objects for a relation).
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"scene: expected a Scene, got {type(scene).__name__}")
    members: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in scene.objects:
        members.setdefault((obj.colour, obj.shape), []).append(obj)
    if len(members) not in (1, 2):
        raise ValueError(
            f"scene: expected objects of one or two (colour, shape) kinds, got {len(members)}: {list(members)}"
        )
    groups = []
    for (colour, shape), objs in members.items():
        sizes = {obj.size for obj in objs}
        if len(sizes) != 1:
            raise ValueError(f"scene: expected one size per group, got {sorted(sizes)} for {colour} {shape}s")
        groups.append(Group(len(objs), sizes.pop(), colour, shape))
    if len(groups) == 1:
        return Prompt(tuple(groups))
    centres = [[obj.centre for obj in objs] for objs in members.values()]
    return Prompt(tuple(groups), relation_between(*centres))


def caption(scene: Scene) -> str:
    """The caption of a scene: ``format_prompt(prompt_of_scene(scene))``."""
    return format_prompt(prompt_of_scene(scene))


def as_prompt(prompt, name: str = "prompt") -> Prompt:
    """A :class:`Prompt` as it is, or a caption string parsed with :func:`parse_caption`."""
    if isinstance(prompt, str):
        return parse_caption(prompt)
    if not isinstance(prompt, Prompt):
        raise ValueError(f"{name}: expected a Prompt or a caption string, got {type(prompt).__name__}")
    return prompt


def _uniform_index(count: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(count, (1,), generator=generator))


def _draw_layout(objects: list[tuple[Group, int]], first: list[bool], relation: str | None, canvas: tuple[int, int],
                 generator: torch.Generator | None) -> list[tuple[int, int]] | None:
    """One attempt at placing the objects on a (height, width) canvas; None when an object finds no
    room or the relation is unclear."""
    height, width = canvas
    rows, cols = np.mgrid[0:height, 0:width]
    if relation is not None:
        vertical = relation in ("above", "below")
        along = rows if vertical else cols
        split = 1 + _uniform_index((height if vertical else width) - 1, generator)  # a row or a column line
        near_side = along < split if relation in ("above", "left of") else along >= split
    centres: list[tuple[int, int]] = []
    for index, (_, extent) in enumerate(objects):
        half = (extent - 1) // 2
        allowed = (rows >= half) & (rows < height - half) & (cols >= half) & (cols < width - half)
        if relation is not None:
            allowed &= near_side if first[index] else ~near_side
        for (row, col), (_, placed_extent) in zip(centres, objects):
            reach = half + (placed_extent - 1) // 2 + 1 + MIN_GAP
            allowed &= (np.abs(rows - row) >= reach) | (np.abs(cols - col) >= reach)
        free = np.flatnonzero(allowed)
        if free.size == 0:
            return None
        centre = free[_uniform_index(free.size, generator)]
        centres.append((int(centre // width), int(centre % width)))
    if relation is not None:
        points = np.array(centres, dtype=float)
        mask = np.array(first)
        d_row, d_col = points[~mask].mean(0) - points[mask].mean(0)
        d_along, d_across = (d_row, d_col) if relation in ("above", "below") else (d_col, d_row)
        if abs(d_along) < 2 * abs(d_across):
            return None
    return centres


def render_prompt(prompt: Prompt | str, generator: torch.Generator | None = None,
                  image_size: int | tuple[int, int] = 32, max_tries: int = 1000) -> Scene:
    """A random scene that shows ``prompt`` (a Prompt or a caption), by rejection sampling.

    ``image_size`` is an int S (S×S) or (H, W) as :func:`check_canvas` takes it; the scene keeps
    it as given (a list as a tuple). Objects are placed one at a time, each at a centre drawn
    uniformly among those where its box fits on the canvas and keeps :data:`MIN_GAP` from the boxes
    already placed. For a relation, a split line drawn uniformly across the relation's axis (a row
    of the H rows for above/below, a column of the W columns for left/right) puts the first group
    on the named side and the second on the other, and a layout is redrawn unless |Δ along| ≥ 2·|Δ across| (module
    docstring). Objects are listed group by group, so ``prompt_of_scene(render_prompt(p)) == p``.

    Raises a ValueError naming the argument for a bad prompt, canvas or ``max_tries``, and a
    RuntimeError if no layout is found in ``max_tries`` draws (it does not happen for the grammar's
    prompts on the supported canvases).
    """
    prompt = as_prompt(prompt)
    canvas = check_canvas(image_size)
    check_positive_int(max_tries, "max_tries")
    extents = OBJECT_EXTENTS[min(canvas)]
    objects = [(g, extents[g.size]) for g in prompt.groups for _ in range(g.count)]
    first = [group is prompt.groups[0] for group, _ in objects]
    for _ in range(max_tries):
        centres = _draw_layout(objects, first, prompt.relation, canvas, generator)
        if centres is not None:
            return Scene(tuple(SceneObject(g.shape, g.colour, g.size, centre)
                               for (g, _), centre in zip(objects, centres)), image_size)
    raise RuntimeError(f"no layout for {format_prompt(prompt)!r} on a {_canvas_text(canvas)} canvas in {max_tries} tries")


# --------------------------------------------------------------------------- sampling and splits


def _choice(options: Sequence, generator: torch.Generator | None):
    return options[_uniform_index(len(options), generator)]


def _check_pairs(pairs, name: str = "pairs") -> tuple[tuple[str, str], ...]:
    if pairs is None:
        return ALL_PAIRS
    pairs = tuple(tuple(pair) for pair in pairs)
    if not pairs:
        raise ValueError(f"{name}: expected at least one (colour, shape) pair, got none")
    for pair in pairs:
        if pair not in ALL_PAIRS:
            raise ValueError(f"{name}: expected (colour, shape) pairs with colour in {tuple(COLOURS)} and shape in "
                             f"{SHAPES}, got {pair!r}")
    return tuple(dict.fromkeys(pairs))


def sample_prompt(generator: torch.Generator | None = None, pairs: Sequence[tuple[str, str]] | None = None,
                  relation_fraction: float = 0.5) -> Prompt:
    """A random prompt whose groups use only the (colour, shape) ``pairs`` (default: all).

    With probability ``relation_fraction`` two groups joined by a uniform relation (counts 1–2),
    otherwise one group (count 1–3); sizes uniform, pairs uniform and distinct.
    """
    pairs = _check_pairs(pairs)
    if not 0 <= relation_fraction <= 1:
        raise ValueError(f"relation_fraction: expected a number in [0, 1], got {relation_fraction!r}")
    if relation_fraction > 0 and len(pairs) < 2:
        raise ValueError(f"pairs: a relation needs two different (colour, shape) pairs, got only {pairs}; "
                         "pass relation_fraction=0 for one-group prompts")
    two_groups = float(torch.rand((), generator=generator)) < relation_fraction
    max_count = MAX_COUNT_IN_RELATION if two_groups else max(COUNT_WORDS.values())
    chosen = [_choice(pairs, generator)]
    if two_groups:
        chosen.append(_choice([p for p in pairs if p != chosen[0]], generator))
    groups = tuple(Group(1 + _uniform_index(max_count, generator), _choice(SIZES, generator), colour, shape)
                   for colour, shape in chosen)
    return Prompt(groups, _choice(RELATIONS, generator) if two_groups else None)


def sample_shapes(n: int, generator: torch.Generator | None = None, image_size: int | tuple[int, int] = 32,
                  pairs: Sequence[tuple[str, str]] | None = None,
                  relation_fraction: float = 0.5) -> tuple[torch.Tensor, list[str]]:
    """``n`` captioned images: ``(images (n, 3, H, W) in [−1, 1], captions)``, the same for the same seed.

    ``image_size`` is an int S (H = W = S) or (H, W) as :func:`check_canvas` takes it; all images
    of a call share the canvas (an aspect-ratio bucket: draw each bucket with its own call). Each
    image is ``render(render_prompt(sample_prompt(...)))``; ``pairs`` restricts the (colour, shape)
    combinations, e.g. to ``split_prompts(seed).train_pairs``.
    """
    check_positive_int(n, "n")
    check_canvas(image_size)
    images, captions = [], []
    for _ in range(n):
        prompt = sample_prompt(generator, pairs, relation_fraction)
        images.append(render(render_prompt(prompt, generator, image_size)))
        captions.append(format_prompt(prompt))
    return torch.stack(images), captions


@dataclass(frozen=True)
class PromptSplit:
    """(colour, shape) pairs for training and pairs held out to test generalisation to new combinations."""

    train_pairs: tuple[tuple[str, str], ...]
    held_out_pairs: tuple[tuple[str, str], ...]

    def is_held_out(self, prompt: Prompt | str) -> bool:
        """True when some group of the prompt uses a held-out (colour, shape) pair."""
        return any(group.pair in self.held_out_pairs for group in as_prompt(prompt).groups)

    def held_out_captions(self, n: int, generator: torch.Generator, image_size: int | tuple[int, int] = 32) -> list[str]:
        """``n`` captions made only of held-out pairs: a test of composition.

        Drawn as :func:`sample_shapes` draws whole scenes of ``image_size`` (an int S or (H, W)),
        so a seed gives the same captions as the scenes it would render.
        """
        return sample_shapes(n, generator, image_size=image_size, pairs=self.held_out_pairs)[1]

    def train_captions(self, n: int, generator: torch.Generator, image_size: int | tuple[int, int] = 32) -> list[str]:
        """``n`` captions made only of training pairs, drawn as the training batches draw theirs.

        The reference for :meth:`held_out_captions`: adherence on these is what the model learnt
        on combinations it has seen, so the gap to the held-out score is the cost of composing.
        """
        return sample_shapes(n, generator, image_size=image_size, pairs=self.train_pairs)[1]


def split_prompts(seed: int = 0, n_held_out: int = 3) -> PromptSplit:
    """Hold out ``n_held_out`` (colour, shape) pairs, chosen from ``seed``.

    Held-out pairs have different colours and their shapes cycle through all three, so every
    colour and every shape still appears in training, only never in these combinations. Train with
    ``sample_shapes(..., pairs=split.train_pairs)``; test with ``pairs=split.held_out_pairs``.
    """
    if isinstance(n_held_out, bool) or not isinstance(n_held_out, int) or not 1 <= n_held_out <= len(COLOURS):
        raise ValueError(f"n_held_out: expected an int in [1, {len(COLOURS)}], got {n_held_out!r}")
    generator = make_generator(seed)
    colours = [list(COLOURS)[i] for i in torch.randperm(len(COLOURS), generator=generator)]
    shapes = [SHAPES[i] for i in torch.randperm(len(SHAPES), generator=generator)]
    held_out = tuple((colours[k], shapes[k % len(SHAPES)]) for k in range(n_held_out))
    return PromptSplit(tuple(p for p in ALL_PAIRS if p not in held_out), held_out)
