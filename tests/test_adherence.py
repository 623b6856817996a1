"""The mini GenEval: the detector reads ground-truth renderings back exactly, and the metric can fail."""
import math

import pytest
import torch

from minisd3.adherence import (
    ATTRIBUTES,
    SQUARE_MIN_FILL,
    TRIANGLE_MIN_DROP,
    adherence_report,
    classify_pixels,
    detect_objects,
    score_detections,
    score_prompt,
)
from minisd3.seeding import make_generator
from minisd3.shapes import (
    COLOURS,
    Group,
    Prompt,
    Scene,
    SceneObject,
    caption,
    render,
    render_prompt,
    sample_prompt,
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


@pytest.mark.parametrize("image_size, n", [(24, 200), (32, 200), (48, 40), (64, 40)])
def test_detector_reads_ground_truth_renderings(image_size, n):
    scenes = random_scenes(n, image_size, seed=image_size)
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
