"""The mini GenEval: the detector reads ground-truth renderings back exactly, on square and rectangular
canvases, and the metric can fail."""
import math

import numpy as np
import pytest
import torch

from minisd3.adherence import (
    ATTRIBUTES,
    SQUARE_MIN_FILL,
    TRIANGLE_MIN_DROP,
    adherence_report,
    average_scores,
    classify_pixels,
    detect_objects,
    paired_difference,
    prompt_scores,
    score_detections,
    score_prompt,
)
from minisd3.seeding import make_generator
from minisd3.shapes import (
    COLOURS,
    OBJECT_EXTENTS,
    Group,
    Prompt,
    Scene,
    SceneObject,
    caption,
    render,
    render_prompt,
    sample_prompt,
    sample_shapes,
)


def random_scenes(n, image_size, seed):
    generator = make_generator(seed)
    return [render_prompt(sample_prompt(generator), generator, image_size) for _ in range(n)]


def as_detected(scene):
    return sorted((o.shape, o.colour, o.size, (float(o.centre[0]), float(o.centre[1]))) for o in scene.objects)


@pytest.fixture(scope="module")
def renderings():
    """200 random scenes at 32 px and their images and captions."""
    scenes = random_scenes(200, 32, seed=11)
    return scenes, torch.stack([render(s) for s in scenes]), [caption(s) for s in scenes]


@pytest.mark.parametrize("image_size, n", [
    (24, 200), (32, 200), (48, 40), (64, 40),
    ((24, 48), 200), ((48, 24), 200), ((32, 48), 100), ((48, 32), 100), ((32, 64), 100), ((64, 32), 100),
], ids=str)
def test_detector_reads_ground_truth_renderings(image_size, n):
    seed = image_size if isinstance(image_size, int) else 100 * image_size[0] + image_size[1]
    scenes = random_scenes(n, image_size, seed=seed)
    images = torch.stack([render(s) for s in scenes])
    detections = detect_objects(images)
    exact = sum(sorted((d.shape, d.colour, d.size, d.centre) for d in found) == as_detected(scene)
                for found, scene in zip(detections, scenes))
    assert exact / n >= 0.99
    report = adherence_report(images, [caption(s) for s in scenes])
    assert set(report) == {*ATTRIBUTES, "overall"}
    assert report["overall"] >= 0.99


IDEAL_FILL_AND_DROP = {"square": (1.0, 0.0), "circle": (math.pi / 4, 0.0), "triangle": (0.5, 1 / 3)}


def test_shape_features_sit_near_the_ideal_shapes(renderings):
    _, images, _ = renderings
    for found in detect_objects(images):
        for obj in found:
            fill, drop = IDEAL_FILL_AND_DROP[obj.shape]
            assert abs(obj.fill - fill) < 0.07 and abs(obj.drop - drop) < 0.05
    assert 0 < TRIANGLE_MIN_DROP < 1 / 3 and math.pi / 4 < SQUARE_MIN_FILL < 1


def test_detector_survives_blur_that_eats_triangle_tips(renderings):
    _, images, captions = renderings
    weights = torch.tensor([0.1065, 0.787, 0.1065])  # a 3-tap Gaussian of σ = 0.5 pixel
    kernel = (weights[:, None] * weights[None, :]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), kernel,
                                         groups=3)
    assert adherence_report(blurred, captions)["overall"] >= 0.97


def test_detector_tolerates_mild_pixel_noise(renderings):
    _, images, captions = renderings
    noisy = images + 0.2 * torch.randn(images.shape, generator=make_generator(0))
    assert adherence_report(noisy, captions)["overall"] >= 0.97


def test_pure_noise_scores_low(renderings):
    _, images, captions = renderings
    report = adherence_report(torch.randn(images.shape, generator=make_generator(1)), captions)
    assert report["overall"] <= 0.02
    assert all(value <= 0.05 for value in report.values()), report
    blank = adherence_report(torch.full_like(images, -1.0), captions)
    assert all(value == 0 for value in blank.values()), blank


def test_images_of_other_prompts_score_low(renderings):
    _, images, captions = renderings
    report = adherence_report(images, captions[1:] + captions[:1])
    assert report["overall"] <= 0.05
    assert report["count"] <= 0.1 and report["shape"] <= 0.15 and report["relation"] <= 0.1


PROMPT = Prompt((Group(2, "large", "red", "circle"), Group(1, "small", "blue", "square")), "above")


def scene_of(*objects):
    return Scene(tuple(SceneObject(*o) for o in objects), image_size=32)


GOOD = [("circle", "red", "large", (6, 6)), ("circle", "red", "large", (6, 24)), ("square", "blue", "small", (24, 16))]


@pytest.mark.parametrize("objects, failing", [
    (GOOD, set()),
    (GOOD + [("triangle", "green", "small", (24, 4))], set()),  # unnamed objects are not penalised
    (GOOD[:1] + GOOD[2:], {"count"}),
    (GOOD + [("circle", "red", "large", (24, 26))], {"count"}),
    (GOOD[:2] + [("square", "blue", "large", (24, 16))], {"size"}),
    (GOOD[:2] + [("triangle", "blue", "small", (24, 16))], {"shape", "count", "size", "relation"}),
    (GOOD[:2] + [("square", "green", "small", (24, 16))], {"colour", "shape", "count", "size", "relation"}),
    ([("circle", "red", "large", (24, 6)), ("circle", "red", "large", (24, 24)), ("square", "blue", "small", (6, 16))],
     {"relation"}),
    ([("circle", "red", "large", (6, 6)), ("circle", "red", "large", (20, 6)), ("square", "blue", "small", (14, 26))],
     {"relation"}),  # red is left of blue, not above it
])
def test_each_attribute_fails_on_its_own(objects, failing):
    image = render(scene_of(*objects))
    scores = score_prompt(image, PROMPT)
    assert set(scores) == {*ATTRIBUTES, "overall"}
    assert {name for name, ok in scores.items() if not ok} == (failing | {"overall"} if failing else set())
    assert scores == score_prompt(image, "two large red circles above one small blue square")


def test_one_group_prompts_have_no_relation():
    image = render(scene_of(("triangle", "yellow", "small", (10, 10))))
    assert score_prompt(image, "one small yellow triangle") == dict.fromkeys(("colour", "shape", "count", "size",
                                                                               "overall"), True)
    report = adherence_report(image[None], ["one large yellow triangle"])
    assert report == {"colour": 1.0, "shape": 1.0, "count": 1.0, "size": 0.0, "overall": 0.0}


def test_batch_and_single_detection_agree(renderings):
    _, images, captions = renderings
    batch = detect_objects(images[:10])
    assert [detect_objects(image) for image in images[:10]] == batch
    assert [score_detections(found, text) for found, text in zip(batch, captions)] == \
           [score_prompt(image, text) for image, text in zip(images[:10], captions)]


def test_pixel_colours_need_to_be_close_to_the_palette():
    image = torch.full((3, 24, 24), -1.0)
    image[:, 0, 0] = torch.tensor(COLOURS["red"]) * 1.3  # overshoot is clipped: still red
    image[:, 0, 1] = torch.tensor([1.0, 0.0, -1.0])  # halfway between red and yellow
    image[:, 0, 2] = torch.tensor([0.0, -1.0, -1.0])  # halfway between red and background
    labels = classify_pixels(image)
    assert labels[0, 0] == 1 + list(COLOURS).index("red")
    assert labels[0, 1] == -1 and labels[0, 2] == -1 and labels[1, 1] == 0


@pytest.mark.parametrize("image_size, short", [((32, 64), 32), ((64, 32), 32), ((24, 48), 24), ((48, 32), 32)],
                         ids=str)
def test_an_object_on_a_rectangle_reads_as_on_the_square_of_its_shorter_side(image_size, short):
    """The same objects on the square and moved onto the rectangle: the same detections, moved."""
    generator = make_generator(5)
    for _ in range(40):
        square = render_prompt(sample_prompt(generator), generator, short)
        shift = (image_size[0] - short, image_size[1] - short)  # to the far corner of the rectangle
        moved = Scene(tuple(SceneObject(o.shape, o.colour, o.size, (o.centre[0] + shift[0], o.centre[1] + shift[1]))
                            for o in square.objects), image_size)
        on_square, on_rectangle = detect_objects(render(square)), detect_objects(render(moved))
        assert [(o.shape, o.colour, o.size, o.area, o.fill, o.drop, (o.centre[0] + shift[0], o.centre[1] + shift[1]))
                for o in on_square] == [(o.shape, o.colour, o.size, o.area, o.fill, o.drop, o.centre)
                                        for o in on_rectangle]
    # a large object on 32×64 is large by the 32-pixel extents, not the 64-pixel ones
    wide = Scene((SceneObject("square", "red", "large", (16, 40)),), (32, 64))
    assert OBJECT_EXTENTS[32]["large"] < (OBJECT_EXTENTS[64]["small"] + OBJECT_EXTENTS[64]["large"]) / 2
    assert [o.size for o in detect_objects(render(wide))] == ["large"]


@pytest.mark.parametrize("image_size", [(32, 64), (64, 32)], ids=str)
def test_detector_on_a_rectangle_survives_blur_and_mild_noise(image_size):
    images, captions = sample_shapes(100, make_generator(12), image_size=image_size)
    weights = torch.tensor([0.1065, 0.787, 0.1065])  # as for the square: a 3-tap Gaussian of σ = 0.5 pixel
    kernel = (weights[:, None] * weights[None, :]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), kernel,
                                         groups=3)
    assert adherence_report(blurred, captions)["overall"] >= 0.97
    noisy = images + 0.2 * torch.randn(images.shape, generator=make_generator(0))
    assert adherence_report(noisy, captions)["overall"] >= 0.97
    one = score_prompt(images[0], captions[0])
    assert one["overall"] and score_prompt(images[0], captions[0]) == one


def test_bad_canvases_are_named():
    for shape in [(3, 32, 96), (2, 3, 64, 24), (3, 30, 32), (2, 3, 24, 64)]:
        with pytest.raises(ValueError) as err:
            detect_objects(torch.zeros(shape))
        message = str(err.value)
        assert "\n" not in message and message.startswith("images: expected a (3, H, W) image or an (N, 3, H, W) batch")
        assert "2× the shorter" in message and message.endswith(f"got shape {shape}")
    mixed = [torch.zeros(3, 32, 32), torch.zeros(3, 32, 64)]
    for call in (lambda: detect_objects(mixed), lambda: adherence_report(mixed, [PROMPT] * 2)):
        with pytest.raises(ValueError, match=r"^images: expected one tensor.*\[\(3, 32, 32\), \(3, 32, 64\)\].*"
                                             r"score each batch separately") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^image: expected one tensor"):
        score_prompt(mixed, PROMPT)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"images: expected .* S in \(24, 32"):
        detect_objects(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="images: expected"):
        detect_objects(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="image: expected one"):
        score_prompt(torch.zeros(2, 3, 32, 32), PROMPT)
    with pytest.raises(ValueError, match="torch.Tensor"):
        score_prompt([[0.0]], PROMPT)
    with pytest.raises(ValueError, match="prompts: expected a list of 2"):
        adherence_report(torch.zeros(2, 3, 32, 32), [PROMPT])
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        score_prompt(torch.zeros(3, 32, 32), "one small purple circle")
    with pytest.raises(ValueError, match="prompt: expected a Prompt or a caption"):
        score_prompt(torch.zeros(3, 32, 32), 3)


def test_prompt_scores_are_what_the_report_averages():
    prompts = ["one small red circle", "two large blue squares", "one small green triangle above one large red square"]
    images = torch.stack([render(render_prompt(p, make_generator(i), 32)) for i, p in enumerate(prompts)])
    images = torch.cat([images, images.flip(0)])
    prompts = prompts + prompts
    verdicts = prompt_scores(images, prompts)
    assert len(verdicts) == len(prompts) and all("overall" in v for v in verdicts)
    assert [v["overall"] for v in verdicts[:3]] == [True, True, True]  # ground truth reads right
    assert not verdicts[3]["overall"] and not verdicts[5]["overall"]  # swapped images fail their prompts
    assert average_scores(verdicts) == adherence_report(images, prompts)


def test_paired_difference_by_hand_and_its_errors():
    before = [1, 0, 1, 1, 0, 0, 1, 0]
    after = [1, 1, 1, 1, 0, 1, 1, 0]
    mean, se = paired_difference(after, before)
    d = np.array(after) - np.array(before)
    assert mean == pytest.approx(0.25)
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))
    assert paired_difference(before, before) == (0.0, 0.0)  # the same verdicts differ by nothing, surely
    with pytest.raises(ValueError, match="before: expected 8 verdicts"):
        paired_difference(after, before[:-1])
    with pytest.raises(ValueError, match="after: expected at least 2"):
        paired_difference([1], [0])
