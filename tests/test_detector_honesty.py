"""A detector that cannot flatter: it reads true renderings, rejects near misses, gives noise nothing,
and every score has a chance rate (the same images against other images' prompts), well below it
for true renderings and drawn beside it in figures; on every square canvas size and on rectangular
canvases of both orientations."""
import dataclasses

import matplotlib.pyplot as plt
import pytest
import torch

from minisd3.adherence import (
    ATTRIBUTES,
    adherence_report,
    chance_report,
    derangement,
    detect_objects,
    score_prompt,
)
from minisd3.course.plotting import plot_adherence
from minisd3.seeding import make_generator
from minisd3.shapes import (
    COLOURS,
    COUNT_WORDS,
    MAX_COUNT_IN_RELATION,
    RELATIONS,
    SHAPES,
    SIZES,
    Prompt,
    Scene,
    SceneObject,
    render,
    render_prompt,
    sample_prompt,
)

# prompts per canvas: a few hundred where the course trains (24, 32), fewer where it is slower;
# rectangles (height, width) in both orientations, ratios 2 and 1.5, fewer where a side is 48 or more
SIZES_AND_COUNTS = [(24, 300), (32, 300), (48, 100), (64, 100),
                    ((24, 48), 300), ((48, 24), 300), ((32, 48), 150), ((48, 32), 150), ((32, 64), 150), ((64, 32), 150)]


def canvas_seed(image_size) -> int:
    """A seed per canvas: the side for a square (as before rectangles existed), 100·H + W for (H, W)."""
    return image_size if isinstance(image_size, int) else 100 * image_size[0] + image_size[1]


def canvas_id(image_size) -> str:
    return f"{image_size}px" if isinstance(image_size, int) else f"{image_size[0]}x{image_size[1]}px"


def _pick(options, generator):
    options = list(options)
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def mutate(prompt: Prompt, attribute: str, generator: torch.Generator) -> Prompt:
    """A valid prompt that differs from ``prompt`` in ``attribute`` only, in one group chosen at random.

    count, size, colour, shape take another value allowed there (counts 1–2 in a relation, two
    groups keep different (colour, shape) pairs); relation needs a two-group prompt.
    """
    if attribute == "relation":
        if prompt.relation is None:
            raise ValueError("attribute: a one-group prompt has no relation to change")
        return Prompt(prompt.groups, _pick([r for r in RELATIONS if r != prompt.relation], generator))
    index = _pick(range(len(prompt.groups)), generator)
    group = prompt.groups[index]
    taken = [other.pair for j, other in enumerate(prompt.groups) if j != index]  # the other group's pair
    if attribute == "count":
        most = MAX_COUNT_IN_RELATION if prompt.relation else max(COUNT_WORDS.values())
        new = dataclasses.replace(group, count=_pick([c for c in range(1, most + 1) if c != group.count], generator))
    elif attribute == "size":
        new = dataclasses.replace(group, size=_pick([s for s in SIZES if s != group.size], generator))
    elif attribute == "colour":
        new = dataclasses.replace(group, colour=_pick(
            [c for c in COLOURS if c != group.colour and (c, group.shape) not in taken], generator))
    elif attribute == "shape":
        new = dataclasses.replace(group, shape=_pick(
            [s for s in SHAPES if s != group.shape and (group.colour, s) not in taken], generator))
    else:
        raise ValueError(f"attribute: expected one of {ATTRIBUTES}, got {attribute!r}")
    groups = list(prompt.groups)
    groups[index] = new
    return Prompt(tuple(groups), prompt.relation)


def renderings(prompts, image_size, generator):
    return torch.stack([render(render_prompt(p, generator, image_size)) for p in prompts])


@pytest.fixture(scope="module", params=SIZES_AND_COUNTS, ids=lambda p: canvas_id(p[0]))
def matched(request):
    """(image_size, prompts, their renderings) for one canvas: an int S or (H, W)."""
    image_size, n = request.param
    generator = make_generator(canvas_seed(image_size))
    prompts = [sample_prompt(generator) for _ in range(n)]
    return image_size, prompts, renderings(prompts, image_size, generator)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_mutate_changes_exactly_that_attribute(attribute):
    generator = make_generator(0)
    for _ in range(200):
        prompt = sample_prompt(generator, relation_fraction=1.0 if attribute == "relation" else 0.5)
        changed = mutate(prompt, attribute, generator)
        assert changed != prompt
        if attribute == "relation":
            assert changed.groups == prompt.groups
            continue
        assert changed.relation == prompt.relation
        diffs = [(a, b) for a, b in zip(prompt.groups, changed.groups) if a != b]
        assert len(diffs) == 1
        before, after = diffs[0]
        assert [f.name for f in dataclasses.fields(before)
                if getattr(before, f.name) != getattr(after, f.name)] == [attribute]


def test_renderings_of_a_prompt_read_right_on_every_attribute(matched):
    _, prompts, images = matched
    report = adherence_report(images, prompts)
    assert set(report) == {*ATTRIBUTES, "overall"}
    assert all(value >= 0.99 for value in report.values()), report


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_a_rendering_with_one_attribute_changed_fails_that_attribute(matched, attribute):
    image_size, prompts, _ = matched
    generator = make_generator(1000 + canvas_seed(image_size))
    if attribute == "relation":
        prompts = [p for p in prompts if p.relation is not None]
    images = renderings([mutate(p, attribute, generator) for p in prompts], image_size, generator)
    report = adherence_report(images, prompts)
    assert report[attribute] <= 0.05, report
    assert report["overall"] <= 0.05, report


@pytest.mark.parametrize("noise", ["randn clamped", "uniform"])
def test_noise_scores_nothing_overall(matched, noise):
    image_size, prompts, images = matched
    generator = make_generator(7)
    if noise == "uniform":
        pixels = torch.rand(images.shape, generator=generator) * 2 - 1
    else:
        pixels = torch.randn(images.shape, generator=generator).clamp(-1, 1)
    report = adherence_report(pixels, prompts)
    assert report["overall"] == 0, report
    assert all(value == 0 for value in report.values()), report  # noise shows no objects at all


def test_another_groups_object_does_not_vouch_for_a_colour():
    prompt = "one small red circle above one small red square"
    wrong = Scene((SceneObject("circle", "blue", "small", (5, 12)), SceneObject("square", "red", "small", (18, 12))),
                  image_size=24)
    scores = score_prompt(render(wrong), prompt)
    assert not scores["colour"] and not scores["shape"]
    right = Scene((SceneObject("circle", "red", "small", (5, 12)), SceneObject("square", "red", "small", (18, 12))),
                  image_size=24)
    assert all(score_prompt(render(right), prompt).values())


def test_an_object_must_stand_on_background():
    scene = Scene((SceneObject("circle", "red", "large", (12, 12)),), image_size=24)
    image = render(scene)
    assert [o.colour for o in detect_objects(image)] == ["red"]
    grey = torch.zeros_like(image)  # no palette colour within COLOUR_TOLERANCE of mid-grey
    surrounded = grey.clone()
    surrounded[:, 9:16, 9:16] = image[:, 9:16, 9:16]  # the 7×7 box: circle and background corners
    assert detect_objects(surrounded) == []
    one_side = image.clone()
    one_side[:, :, :9] = grey[:, :, :9]  # grey touches the circle on its left side only
    assert [o.colour for o in detect_objects(one_side)] == ["red"]


def test_chance_of_renderings_is_well_below_their_adherence(matched):
    _, prompts, images = matched
    matched_report = adherence_report(images, prompts)
    chance = chance_report(images, prompts, make_generator(3))
    assert set(chance) == set(matched_report)
    assert chance["overall"] <= 0.03, chance
    for attribute, value in chance.items():
        assert value <= matched_report[attribute] - 0.8, (attribute, value)


def test_chance_report_is_reproducible_and_averages_rounds(matched):
    _, prompts, images = matched
    images, prompts = images[:40], prompts[:40]
    assert chance_report(images, prompts, make_generator(5)) == chance_report(images, prompts, make_generator(5))
    # one round is adherence_report against the deranged prompts
    order = derangement(40, make_generator(6))
    assert chance_report(images, prompts, make_generator(6), repeats=1) == \
           adherence_report(images, [prompts[int(j)] for j in order])


def test_derangement_moves_every_element_and_covers_them_all():
    generator = make_generator(0)
    seen = set()
    for _ in range(200):
        order = derangement(4, generator)
        assert sorted(order.tolist()) == [0, 1, 2, 3] and all(order[i] != i for i in range(4))
        seen.add(tuple(order.tolist()))
    assert len(seen) == 9  # every derangement of 4 elements turns up
    assert derangement(2, generator).tolist() == [1, 0]


def test_bad_input_is_named():
    image = torch.zeros(1, 3, 24, 24)
    with pytest.raises(ValueError, match="images: expected at least 2 images"):
        chance_report(image, ["one small red circle"])
    with pytest.raises(ValueError, match="repeats"):
        chance_report(image.expand(2, -1, -1, -1), ["one small red circle"] * 2, repeats=0)
    with pytest.raises(ValueError, match="prompts: expected a list of 2"):
        chance_report(image.expand(2, -1, -1, -1), ["one small red circle"])
    with pytest.raises(ValueError, match=r"n: expected an int ≥ 2"):
        derangement(1)


def test_adherence_figure_draws_chance_dashed_in_the_attributes_colour():
    one_group = {"colour": 0.9, "shape": 0.5, "count": 0.4, "size": 0.6, "overall": 0.2}
    reports = [one_group, {**one_group, "overall": 0.3}]
    chance = [dict.fromkeys(one_group, 0.1)] * 2
    fig, ax = plt.subplots()
    plot_adherence(ax, [1, 2], reports, chance, title="adherence against steps", xlabel="steps", logx=True)
    solid = {line.get_label(): line for line in ax.lines if line.get_linestyle() == "-"}
    dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert list(solid) == ["colour", "shape", "count", "size", "overall"]  # no relation in these reports
    assert [line.get_color() for line in dashed] == [line.get_color() for line in solid.values()]
    assert list(dashed[0].get_ydata()) == [0.1, 0.1] and list(solid["overall"].get_ydata()) == [0.2, 0.3]
    assert ax.get_title() and ax.get_xlabel() == "steps" and ax.get_ylabel()
    assert "chance (dashed, same colour)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    with pytest.raises(ValueError, match="one report per setting"):
        plot_adherence(ax, [1, 2, 3], reports, chance, title="t", xlabel="x")
