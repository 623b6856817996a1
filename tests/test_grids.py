"""Sample grids a person can read: large sharp cells on a grey gutter, prompts under them, the
detector's ✔/✘ per attribute for shapes, held-out and training pairs in their own sections."""
import numpy as np
import pytest
import torch
from PIL import Image

from minisd3.engine.grids import GUTTER, GUTTER_RGB, labelled_grid, save_labelled_grid
from minisd3.seeding import make_generator
from minisd3.shapes import format_prompt, render, render_prompt, sample_prompt


def scenes(n, image_size=24, seed=0):
    """``n`` renderings and their captions."""
    generator = make_generator(seed)
    prompts = [sample_prompt(generator) for _ in range(n)]
    images = torch.stack([render(render_prompt(p, generator, image_size)) for p in prompts])
    return images, [format_prompt(p) for p in prompts]


def upscaled(image, scale):
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).numpy()
    return np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))


def find(grid, cell):
    """(row, column) of the top-left corner where ``cell`` sits in the grid, or None."""
    h, w, _ = cell.shape
    for y in range(grid.shape[0] - h + 1):
        for x in range(GUTTER, grid.shape[1] - w + 1, w + GUTTER):
            if np.array_equal(grid[y:y + h, x:x + w], cell):
                return y, x
    return None


def reddish(pixels):
    return int(((pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).sum())


def greenish(pixels):
    return int(((pixels[..., 1] > 90) & (pixels[..., 0] < 60) & (pixels[..., 2] < 90)).sum())


@pytest.mark.parametrize("image_size, min_side, scale", [(24, 96, 4), (24, 128, 6), (32, 128, 4), (64, 128, 2)])
def test_cells_are_nearest_neighbour_upscaled_to_at_least_min_side(image_size, min_side, scale):
    images, captions = scenes(3, image_size)
    grid = np.asarray(labelled_grid(images, captions, columns=2, min_side=min_side))
    side = image_size * scale
    assert side >= min_side and grid.shape[1] == 2 * (side + GUTTER) + GUTTER
    assert find(grid, upscaled(images[0], scale)) == (GUTTER, GUTTER)  # no title, no section header
    assert find(grid, upscaled(images[1], scale)) == (GUTTER, 2 * GUTTER + side)
    y, x = find(grid, upscaled(images[2], scale))
    assert x == GUTTER and y > GUTTER + side
    assert (grid[GUTTER:GUTTER + side, GUTTER + side:2 * GUTTER + side] == GUTTER_RGB).all()  # gutter between
    assert (grid[:GUTTER] == GUTTER_RGB).all()


def test_grid_height_grows_by_one_row_of_cells_per_row_of_images():
    images, captions = scenes(12)
    heights = [labelled_grid(images[:n], captions[:n], columns=4, verdicts=True).height for n in (4, 8, 12)]
    assert heights[2] - heights[1] == heights[1] - heights[0] > 24 * 6
    assert labelled_grid(images[:3], captions[:3], columns=4).width == 3 * (144 + GUTTER) + GUTTER  # fewer columns


def test_a_larger_font_keeps_the_cells_and_makes_the_text_taller():
    # a grid shown shrunk in a figure panel (lesson 07's explorer) gets larger text, same images
    images, captions = scenes(4)
    small, large = (np.asarray(labelled_grid(images, captions, columns=4, verdicts=True, font_size=size))
                    for size in (12, 16))
    assert small.shape[1] == large.shape[1] and large.shape[0] > small.shape[0]
    assert find(large, upscaled(images[0], 6)) == (GUTTER, GUTTER)

    def ink_rows(grid):  # rows of dark text in the first cell's panel, under its image
        panel = grid[GUTTER + 144:, GUTTER:GUTTER + 144]
        return int(((panel < 100).all(axis=2)).any(axis=1).sum())

    assert ink_rows(large) > ink_rows(small)


def test_held_out_and_training_images_go_to_their_own_sections():
    images, captions = scenes(5)
    flags = [True, False, True, False, False]
    grid = np.asarray(labelled_grid(images, captions, held_out=flags, verdicts=True, title="a title"))
    assert grid.shape[1] == 3 * (144 + GUTTER) + GUTTER  # the larger section has three images
    where = [find(grid, upscaled(image, 6)) for image in images]
    assert where[0][0] == where[2][0] < where[1][0] == where[3][0] == where[4][0]
    assert [where[i][1] for i in (0, 2)] == [where[i][1] for i in (1, 3)]  # each section starts a new row
    assert where[0][0] > GUTTER + 2 * 15  # below the title and the section header


def test_verdicts_mark_wrong_attributes_in_red_and_right_ones_in_green():
    images, captions = scenes(2, seed=1)
    wrong = [captions[0], "three large white circles"]
    grid = np.asarray(labelled_grid(images, wrong, verdicts=True, columns=2))
    panels = [grid[GUTTER + 144:, x:x + 144] for x in (GUTTER, 2 * GUTTER + 144)]
    assert reddish(panels[0]) == 0 and greenish(panels[0]) > 0
    assert reddish(panels[1]) > 0
    plain = np.asarray(labelled_grid(images, wrong, columns=2))
    assert reddish(plain) == 0 and greenish(plain) == 0


def test_grey_images_without_a_detector_get_prompts_only():
    digits = torch.rand(10, 1, 8, 8, generator=make_generator(0)) * 2 - 1
    grid = labelled_grid(digits, ["seven"] * 10)
    assert grid.width == 8 * (128 + GUTTER) + GUTTER and grid.mode == "RGB"
    assert find(np.asarray(grid), upscaled(digits[0], 16)) == (GUTTER, GUTTER)


def test_save_writes_the_file_atomically(tmp_path):
    images, captions = scenes(4)
    path = save_labelled_grid(tmp_path / "nested" / "grid.png", images, captions, verdicts=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
    before = path.read_bytes()
    with pytest.raises(ValueError, match="prompts"):
        save_labelled_grid(path, images, captions[:3])
    assert path.read_bytes() == before  # a failed write leaves the old grid in place
    jpeg = save_labelled_grid(tmp_path / "grid.jpg", images, captions)
    assert Image.open(jpeg).format == "JPEG"
    with pytest.raises(ValueError, match="path: expected an image file name"):
        save_labelled_grid(tmp_path / "grid.txt", images, captions)


def test_bad_input_is_named():
    images, captions = scenes(2)
    with pytest.raises(ValueError, match=r"prompts: expected 2 captions"):
        labelled_grid(images, captions[0])
    with pytest.raises(ValueError, match=r"held_out: expected 2 flags"):
        labelled_grid(images, captions, held_out=[True])
    with pytest.raises(ValueError, match=r"min_side: expected an int ≥ 96"):
        labelled_grid(images, captions, min_side=64)
    with pytest.raises(ValueError, match=r"font_size: expected an int from 10 to 32 pixels, got 6"):
        labelled_grid(images, captions, font_size=6)
    with pytest.raises(ValueError, match=r"images: expected \(N ≥ 1, 1 or 3, H, W\)"):
        labelled_grid(images[:, :2], captions)
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        labelled_grid(images, ["one small purple circle"] * 2, verdicts=True)
