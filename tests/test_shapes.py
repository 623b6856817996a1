"""Captioned shapes: seeded, captions round-trip, scenes show their prompts, held-out pairs stay out."""
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
    MAX_CAPTION_WORDS,
    MAX_COUNT_IN_RELATION,
    MIN_GAP,
    OBJECT_EXTENTS,
    RELATIONS,
    SHAPES,
    SIZES,
    SUPPORTED_SIZES,
    VOCABULARY,
    Group,
    Prompt,
    PromptSplit,
    Scene,
    SceneObject,
    caption,
    format_prompt,
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


@pytest.mark.parametrize("image_size", [24, 32])
def test_rendered_scenes_show_their_prompt(image_size):
    generator = make_generator(image_size)
    for _ in range(150):
        prompt = sample_prompt(generator)
        scene = render_prompt(prompt, generator, image_size)
        assert prompt_of_scene(scene) == prompt and caption(scene) == format_prompt(prompt)
        centres = np.array([obj.centre for obj in scene.objects])
        extents = np.array([OBJECT_EXTENTS[image_size][obj.size] for obj in scene.objects])
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
        coloured = (image != -1).any(0).sum().item()
        assert coloured == sum(int(shape_mask(o.shape, OBJECT_EXTENTS[image_size][o.size]).sum())
                               for o in scene.objects)


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
