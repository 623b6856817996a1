"""Captioned shapes: seeded, captions round-trip, scenes show their prompts, held-out pairs stay out;
square and rectangular canvases."""
import hashlib
import itertools
import math

import numpy as np
import pytest
import torch

from minisd3.seeding import make_generator
from minisd3.shapes import (
    ALL_PAIRS,
    BACKGROUND,
    COLOURS,
    COUNT_WORDS,
    MAX_ASPECT_RATIO,
    MAX_CAPTION_WORDS,
    MAX_COUNT_IN_RELATION,
    MIN_GAP,
    OBJECT_EXTENTS,
    RELATIONS,
    SHAPES,
    SIZES,
    SUPPORTED_CANVASES,
    SUPPORTED_SIZES,
    VOCABULARY,
    Group,
    Prompt,
    PromptSplit,
    Scene,
    SceneObject,
    caption,
    check_canvas,
    check_image_size,
    format_prompt,
    object_extents,
    parse_caption,
    prompt_of_scene,
    relation_between,
    render,
    render_prompt,
    sample_prompt,
    sample_shapes,
    shape_mask,
    split_prompts,
)

RECTANGLES = [(24, 48), (48, 24), (32, 48), (48, 32), (32, 64), (64, 32)]
"""Rectangular canvases (height, width) the tests cover: both orientations, ratios 1.5 and 2."""


def all_prompts():
    """Every prompt the grammar can say."""
    def groups(max_count):
        return [Group(n, size, colour, shape) for n in range(1, max_count + 1) for size in SIZES
                for colour, shape in ALL_PAIRS]

    yield from (Prompt((g,)) for g in groups(3))
    for a, b in itertools.product(groups(MAX_COUNT_IN_RELATION), repeat=2):
        if a.pair != b.pair:
            yield from (Prompt((a, b), relation) for relation in RELATIONS)


def test_same_seed_same_images_and_captions():
    images, captions = sample_shapes(48, make_generator(0))
    again, captions_again = sample_shapes(48, make_generator(0))
    other, captions_other = sample_shapes(48, make_generator(1))
    assert images.shape == (48, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images, again) and captions == captions_again
    assert not torch.equal(images, other) and captions != captions_other
    # every pixel is the background or one of the palette colours
    palette = torch.tensor([BACKGROUND, *COLOURS.values()])
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (pixels[:, None, :] == palette).all(-1).any(-1).all()


@pytest.mark.parametrize("image_size", SUPPORTED_SIZES)
def test_every_supported_size_renders(image_size):
    images, captions = sample_shapes(8, make_generator(2), image_size=image_size)
    assert images.shape == (8, 3, image_size, image_size)
    assert images.min() == -1 and images.max() == 1 and len(captions) == 8


def test_every_prompt_round_trips_through_its_caption():
    words_used = set()
    longest = 0
    prompts = list(all_prompts())
    assert len(prompts) == 3 * 2 * 21 + 4 * (2 * 2 * 21) * (2 * 2 * 20)
    for prompt in prompts:
        text = format_prompt(prompt)
        assert parse_caption(text) == prompt, text
        words_used.update(text.split())
        longest = max(longest, len(text.split()))
    assert words_used == set(VOCABULARY) and len(VOCABULARY) == len(set(VOCABULARY))
    assert longest == MAX_CAPTION_WORDS


def test_parse_caption_reads_the_example_and_ignores_case_and_spacing():
    prompt = parse_caption("  Two LARGE red circles   above one small blue square ")
    assert prompt == Prompt((Group(2, "large", "red", "circle"), Group(1, "small", "blue", "square")), "above")
    assert parse_caption("three small green triangles") == Prompt((Group(3, "small", "green", "triangle"),))
    assert parse_caption("one large cyan square right of two small white circles").relation == "right of"


def canvas_seed(image_size):
    """A seed per canvas: the side for a square (as before rectangles existed), 100·H + W for (H, W)."""
    return image_size if isinstance(image_size, int) else 100 * image_size[0] + image_size[1]


@pytest.mark.parametrize("image_size", [24, 32, *RECTANGLES], ids=str)
def test_rendered_scenes_show_their_prompt(image_size):
    generator = make_generator(canvas_seed(image_size))
    height, width = check_canvas(image_size)
    for _ in range(150):
        prompt = sample_prompt(generator)
        scene = render_prompt(prompt, generator, image_size)
        assert scene.canvas == (height, width)
        # the relation rule reads back the named relation (prompt_of_scene applies relation_between)
        assert prompt_of_scene(scene) == prompt and caption(scene) == format_prompt(prompt)
        centres = np.array([obj.centre for obj in scene.objects])
        extents = np.array([object_extents(image_size)[obj.size] for obj in scene.objects])
        # boxes keep MIN_GAP background pixels between them
        for i, j in itertools.combinations(range(len(centres)), 2):
            reach = (extents[i] + extents[j]) // 2 + MIN_GAP
            assert (np.abs(centres[i] - centres[j]) >= reach).any()
        # each first-group object lies strictly on the named side of each second-group object
        if prompt.relation is not None:
            first = np.arange(len(centres)) < prompt.groups[0].count
            axis = 0 if prompt.relation in ("above", "below") else 1
            a, b = centres[first, axis], centres[~first, axis]
            if prompt.relation in ("above", "left of"):
                assert a.max() < b.min()
            else:
                assert a.min() > b.max()
        # nothing overlaps: the coloured pixels are exactly the bitmaps' pixels
        image = render(scene)
        assert image.shape == (3, height, width)
        coloured = (image != -1).any(0).sum().item()
        assert coloured == sum(int(shape_mask(o.shape, object_extents(image_size)[o.size]).sum())
                               for o in scene.objects)


@pytest.mark.parametrize("image_size", RECTANGLES, ids=str)
def test_rectangular_canvases_render_height_by_width(image_size):
    height, width = image_size
    images, captions = sample_shapes(8, make_generator(2), image_size=image_size)
    assert images.shape == (8, 3, height, width) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1 and len(captions) == 8
    again, captions_again = sample_shapes(8, make_generator(2), image_size=list(image_size))  # a list works too
    assert torch.equal(images, again) and captions == captions_again
    # objects use the whole canvas, along the long side too: centres reach both ends of each axis
    generator = make_generator(3)
    scenes = [render_prompt(sample_prompt(generator), generator, image_size) for _ in range(200)]
    centres = np.array([obj.centre for scene in scenes for obj in scene.objects])
    half_large = (object_extents(image_size)["large"] - 1) // 2
    for axis, side in enumerate(image_size):
        assert centres[:, axis].min() <= half_large and centres[:, axis].max() >= side - 1 - half_large, (axis, side)


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("image_size", [(32, 64), (64, 32)], ids=str)
def test_relations_split_along_the_right_side_of_a_rectangle(image_size, relation):
    """Left/right splits across the width and above/below across the height: on the long axis the
    groups spread over all of it, and the named relation always reads back."""
    generator = make_generator(canvas_seed(image_size))
    prompt = Prompt((Group(1, "small", "red", "circle"), Group(1, "small", "blue", "square")), relation)
    axis = 0 if relation in ("above", "below") else 1
    low, high = [], []  # positions along the axis of the object on the low (top, left) and the high side
    for _ in range(100):
        scene = render_prompt(prompt, generator, image_size)
        a, b = (obj.centre for obj in scene.objects)
        assert relation_between([a], [b]) == relation
        first_low = relation in ("above", "left of")
        low.append((a if first_low else b)[axis])
        high.append((b if first_low else a)[axis])
    long_side, short_side = max(image_size), min(image_size)
    if image_size[axis] == long_side:
        # the split line ranges over the whole long side: each side's object goes past the short side's length
        assert max(low) > short_side and min(high) < long_side - short_side, (max(low), min(high))
        assert max(high) >= long_side - 8 and min(low) <= 7


@pytest.mark.parametrize("image_size, short", [((32, 64), 32), ((64, 32), 32), ((24, 48), 24), ((48, 32), 32)],
                         ids=str)
def test_objects_on_a_rectangle_are_drawn_as_on_the_square_of_its_shorter_side(image_size, short):
    assert object_extents(image_size) == OBJECT_EXTENTS[short] == object_extents(short)
    generator = make_generator(4)
    for _ in range(30):
        square = render_prompt(sample_prompt(generator), generator, short)
        # the same objects moved onto the rectangle: the square's picture sits in it, the rest is background
        shift = (int(torch.randint(image_size[0] - short + 1, (1,), generator=generator)),
                 int(torch.randint(image_size[1] - short + 1, (1,), generator=generator)))
        moved = Scene(tuple(SceneObject(o.shape, o.colour, o.size, (o.centre[0] + shift[0], o.centre[1] + shift[1]))
                            for o in square.objects), image_size)
        image = render(moved)
        window = image[:, shift[0]: shift[0] + short, shift[1]: shift[1] + short]
        assert torch.equal(window, render(square))
        assert (image != -1).any(0).sum() == (window != -1).any(0).sum()
        # and a prompt rendered on the rectangle stamps the square's bitmaps
        scene = render_prompt(prompt_of_scene(square), generator, image_size)
        rendered = render(scene)
        for obj in scene.objects:
            extent = OBJECT_EXTENTS[short][obj.size]
            half = (extent - 1) // 2
            row, col = obj.centre
            box = rendered[:, row - half: row + half + 1, col - half: col + half + 1]
            drawn = (box == torch.tensor(COLOURS[obj.colour])[:, None, None]).all(0).numpy()
            assert (drawn == shape_mask(obj.shape, extent)).all()


def test_supported_canvases_and_check_canvas():
    assert set(RECTANGLES) < set(SUPPORTED_CANVASES)
    assert {(s, s) for s in SUPPORTED_SIZES} < set(SUPPORTED_CANVASES)
    assert all(max(c) <= MAX_ASPECT_RATIO * min(c) for c in SUPPORTED_CANVASES)
    assert (24, 64) not in SUPPORTED_CANVASES and (64, 24) not in SUPPORTED_CANVASES
    assert check_canvas(32) == (32, 32) and check_canvas((32, 64)) == (32, 64) and check_canvas([64, 32]) == (64, 32)
    assert check_canvas(torch.Size([48, 24])) == (48, 24)
    assert Scene((), (32, 64)).canvas == (32, 64) and Scene((), 24).canvas == (24, 24)
    assert Scene((), [32, 64]) == Scene((), (32, 64))  # a list is kept as a tuple: scenes stay hashable
    assert check_image_size(32) == 32  # the square-only check is unchanged
    with pytest.raises(ValueError, match=r"image_size: expected one of \(24, 32, 48, 64\) pixels, got \(32, 64\)"):
        check_image_size((32, 64))


@pytest.mark.parametrize("bad", [(32, 96), (30, 32), (64, 24), "32x64", (32,), 16, (32.0, 64), (True, 32)], ids=str)
def test_bad_canvases_get_a_one_line_error_naming_image_size(bad):
    calls = [
        lambda: check_canvas(bad),
        lambda: sample_shapes(2, make_generator(0), image_size=bad),
        lambda: render_prompt("one small red circle", make_generator(0), image_size=bad),
        lambda: Scene((), image_size=bad),
        lambda: split_prompts(0).held_out_captions(2, make_generator(0), image_size=bad),
        lambda: object_extents(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and message.startswith("image_size: expected one of (24, 32, 48, 64) pixels")
        assert "(height, width)" in message and "2× the shorter" in message and message.endswith(f"got {bad!r}")
    with pytest.raises(ValueError, match="^canvas: expected"):
        check_canvas(bad, "canvas")


def test_rectangular_scene_centres_must_fit_both_sides():
    Scene((SceneObject("circle", "red", "large", (16, 58)),), (32, 64))  # large is 11 px: columns 5 … 58
    for centre in [(16, 59), (27, 30), (4, 30)]:
        with pytest.raises(ValueError, match=r"objects: expected centres .*\[5, 26\] × \[5, 58\].*32×64 canvas"):
            Scene((SceneObject("circle", "red", "large", centre),), (32, 64))


def _digest(images, captions):
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update("|".join(captions).encode())
    return digest.hexdigest()[:16]


def test_square_canvases_draw_what_they_drew_before_rectangles():
    """An int S and the pair (S, S) draw the same, and the draws are those of the code before
    rectangular canvases (digests recorded from it, commit 56c1806; they depend on torch's CPU
    generator, so a torch that changed it would need them recorded again from that commit)."""
    for side in SUPPORTED_SIZES:
        images, captions = sample_shapes(6, make_generator(side), image_size=side)
        pair_images, pair_captions = sample_shapes(6, make_generator(side), image_size=(side, side))
        assert torch.equal(images, pair_images) and captions == pair_captions
    assert _digest(*sample_shapes(4, make_generator(24), image_size=24)) == "19bfc6baceb35d58"
    assert _digest(*sample_shapes(4, make_generator(32), image_size=32)) == "f74593ec669abb7b"


def test_render_stamps_the_bitmap_at_the_centre():
    scene = Scene((SceneObject("square", "red", "small", (10, 12)),
                   SceneObject("triangle", "blue", "large", (20, 20))), image_size=32)
    image = render(scene)
    red = torch.tensor(COLOURS["red"])[:, None, None]
    assert (image[:, 7:14, 9:16] == red).all()  # 7×7 box centred on (10, 12)
    blue = (image == torch.tensor(COLOURS["blue"])[:, None, None]).all(0)
    rows, cols = torch.nonzero(blue, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (15, 25, 15, 25)  # 11×11 box around (20, 20)
    assert blue[15].sum() == 1 and blue[15, 20] and blue[25].sum() == 11  # apex on top, base at the bottom
    assert (image == -1).all(0).sum() == 32 * 32 - 49 - blue.sum()


@pytest.mark.parametrize("extent", sorted({e for sizes in OBJECT_EXTENTS.values() for e in sizes.values()}))
def test_shape_masks_fill_their_boxes_as_documented(extent):
    fills = {shape: shape_mask(shape, extent).mean() for shape in SHAPES}
    assert fills["square"] == 1
    assert abs(fills["circle"] - math.pi / 4) < 0.07
    assert abs(fills["triangle"] - 0.5) < 0.03
    for shape in SHAPES:
        mask = shape_mask(shape, extent)
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()  # fills its e×e box
        assert (mask == mask[:, ::-1]).all()  # left-right symmetric
    assert (shape_mask("circle", extent) == shape_mask("circle", extent).T).all()


def test_relation_rule_takes_the_longer_axis():
    assert relation_between([(2, 10)], [(20, 14)]) == "above"
    assert relation_between([(20, 14)], [(2, 10)]) == "below"
    assert relation_between([(10, 2), (12, 4)], [(15, 20)]) == "left of"
    assert relation_between([(15, 20)], [(10, 2), (12, 4)]) == "right of"
    assert relation_between([(0, 0)], [(5, 5)]) == "above"  # a tie goes to the vertical axis
    assert relation_between([(3, 3)], [(3, 3)]) is None


def test_sampled_prompts_cover_the_grammar():
    generator = make_generator(5)
    prompts = [sample_prompt(generator) for _ in range(2000)]
    groups = [g for p in prompts for g in p.groups]
    assert {g.count for g in groups} == set(COUNT_WORDS.values())
    assert {g.size for g in groups} == set(SIZES)
    assert {g.pair for g in groups} == set(ALL_PAIRS)
    assert {p.relation for p in prompts} == {None, *RELATIONS}
    assert abs(sum(p.relation is not None for p in prompts) / 2000 - 0.5) < 0.05
    assert all(p.relation is None for p in (sample_prompt(generator, relation_fraction=0) for _ in range(50)))


def test_held_out_pairs_never_appear_in_training():
    split = split_prompts(seed=0)
    assert isinstance(split, PromptSplit) and len(split.held_out_pairs) == 3
    assert set(split.train_pairs) | set(split.held_out_pairs) == set(ALL_PAIRS)
    assert not set(split.train_pairs) & set(split.held_out_pairs)
    # every word is still seen in training, only not in these combinations
    assert {c for c, _ in split.train_pairs} == set(COLOURS) and {s for _, s in split.train_pairs} == set(SHAPES)
    _, captions = sample_shapes(400, make_generator(1), pairs=split.train_pairs)
    for text in captions:
        assert not split.is_held_out(text), text
        for colour, shape in split.held_out_pairs:
            assert f"{colour} {shape}" not in text
    _, held_out = sample_shapes(50, make_generator(2), pairs=split.held_out_pairs)
    for text in held_out:
        assert all(g.pair in split.held_out_pairs for g in parse_caption(text).groups), text


def test_split_is_seeded():
    assert split_prompts(3) == split_prompts(3)
    assert len({split_prompts(seed).held_out_pairs for seed in range(10)}) > 1
    big = split_prompts(1, n_held_out=len(COLOURS))
    assert len({c for c, _ in big.held_out_pairs}) == len(COLOURS)
    assert {s for _, s in big.train_pairs} == set(SHAPES)


def test_unknown_word_names_it_and_lists_the_vocabulary():
    with pytest.raises(ValueError, match="unknown word 'purple'") as err:
        parse_caption("one small purple circle")
    assert "vocabulary" in str(err.value) and all(word in str(err.value) for word in VOCABULARY)


@pytest.mark.parametrize("text, expected", [
    ("small red circle", "expected a count"),
    ("one red circle", "expected a size"),
    ("one small circle red", "expected a colour"),
    ("one small red circles", "expected a singular noun"),
    ("two small red circle", "expected a plural noun"),
    ("one small red circle left one blue square", "expected 'of'"),
    ("one small red circle above", "after the last word"),
    ("one small red circle one small blue square", "expected a relation"),
    ("one small red circle above one small blue square above", "expected the end"),
    ("", "expected a count"),
])
def test_grammar_errors_say_what_was_expected(text, expected):
    with pytest.raises(ValueError, match=expected):
        parse_caption(text)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"image_size: expected one of \(24, 32"):
        sample_shapes(2, make_generator(0), image_size=16)
    with pytest.raises(ValueError, match="image_size"):
        render_prompt("one small red circle", make_generator(0), image_size=30)
    with pytest.raises(ValueError, match="colour: expected one of .*'red'.*got 'purple'"):
        Group(1, "small", "purple", "circle")
    with pytest.raises(ValueError, match="shape: expected one of .*'circle'.*got 'star'"):
        Group(1, "small", "red", "star")
    with pytest.raises(ValueError, match="count"):
        Group(4, "small", "red", "circle")
    with pytest.raises(ValueError, match="size"):
        Group(1, "huge", "red", "circle")
    with pytest.raises(ValueError, match="at most 2 objects per group"):
        Prompt((Group(3, "small", "red", "circle"), Group(1, "small", "blue", "square")), "above")
    with pytest.raises(ValueError, match="differ in colour or shape"):
        Prompt((Group(1, "small", "red", "circle"), Group(1, "large", "red", "circle")), "above")
    with pytest.raises(ValueError, match="relation"):
        Prompt((Group(1, "small", "red", "circle"), Group(1, "small", "blue", "square")), "beside")
    with pytest.raises(ValueError, match="relation: expected None"):
        Prompt((Group(1, "small", "red", "circle"),), "above")
    with pytest.raises(ValueError, match="pairs: a relation needs two"):
        sample_prompt(make_generator(0), pairs=[("red", "circle")])
    with pytest.raises(ValueError, match="pairs: expected"):
        sample_prompt(make_generator(0), pairs=[("red", "star")])
    with pytest.raises(ValueError, match="n_held_out"):
        split_prompts(0, n_held_out=0)
    with pytest.raises(ValueError, match="objects: expected centres"):
        Scene((SceneObject("circle", "red", "large", (2, 16)),), image_size=32)
    with pytest.raises(ValueError, match="one or two"):
        prompt_of_scene(Scene((SceneObject("circle", "red", "small", (5, 5)),
                               SceneObject("circle", "blue", "small", (5, 20)),
                               SceneObject("square", "blue", "small", (20, 20)))))
    with pytest.raises(ValueError, match="one size per group"):
        prompt_of_scene(Scene((SceneObject("circle", "red", "small", (5, 5)),
                               SceneObject("circle", "red", "large", (20, 20)))))
