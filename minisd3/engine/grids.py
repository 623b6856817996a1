"""Sample grids a person can read: every image large and sharp, its prompt under it, and for
captioned shapes the detector's verdict on each attribute.

One cell per image, on a grey gutter, ``columns`` cells a row::

    +------------------+
    |      image       |   upscaled k× by nearest neighbour, k = ⌈min_side / S⌉, so pixels stay
    |                  |   sharp squares and a cell is at least ``min_side`` (≥ 96) pixels wide
    +------------------+
    | two small red    |   the prompt, wrapped to the cell width (DejaVu Sans, bundled with
    | circles          |   matplotlib, so it works offline)
    | col✔ shp✘ cnt✔   |   shapes only: the verdict of :func:`minisd3.adherence.score_prompt` per
    | siz✔ rel✘        |   attribute, green ✔ when the detector agrees with the prompt, red ✘ when not
    +------------------+

With a per-image ``held_out`` flag the images form two sections, "held-out pairs" (prompts with a
(colour, shape) pair never seen in training) and then "training pairs", each under its own header
and starting on a new row. :func:`save_labelled_grid` writes it (PNG) atomically (a temporary file
renamed over the target), so a reader never sees half a grid.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from ..adherence import ATTRIBUTES, score_prompt
from ..digits import to_uint8
from ..files import atomic_file
from ..validation import check_positive_int, check_tensor

VERDICT_LABELS: dict[str, str] = {"colour": "col", "shape": "shp", "count": "cnt", "size": "siz", "relation": "rel"}
"""Short names of the attributes in a cell's verdict line."""
HELD_OUT_HEADER = "held-out pairs: (colour, shape) combinations never seen in training"
TRAIN_HEADER = "training pairs: combinations seen in training"
WORD_HEADERS = ("held-out words: never seen in training", "training words")
"""The section headers of a glyphs grid."""
VERDICT_LEGEND = ("✔ the detector finds this attribute of the prompt in the image, ✘ it does not: "
                  + " ".join(f"{short}={name}" for name, short in VERDICT_LABELS.items()))
"""The line under a grid with verdicts."""
GUTTER = 6  # grey pixels between cells and around the grid
PAD = 4  # pixels between the edge of a text panel and its text
FONT_SIZE = 12  # pixels, the default of ``font_size``; a line of text is ``font_size + 3`` pixels high
GUTTER_RGB = (128, 128, 128)
PANEL_RGB = (255, 255, 255)
TEXT_RGB = (20, 20, 20)
YES_RGB = (0, 120, 40)
NO_RGB = (200, 0, 0)
YES_MARK, NO_MARK = "✔", "✘"  # the heavy check and ballot marks: the light ✓ ✗ are hard to see at 12 px


@lru_cache(maxsize=None)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    weight = "bold" if bold else "normal"
    return ImageFont.truetype(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight=weight)),
                              size)


def _wrap(words: Sequence[str], font: ImageFont.FreeTypeFont, width: int) -> list[list[str]]:
    """Words in lines no wider than ``width`` pixels (a longer single word gets a line of its own)."""
    lines: list[list[str]] = []
    for word in words:
        if lines and font.getlength(" ".join(lines[-1] + [word])) <= width:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def _write_panel(draw: ImageDraw.ImageDraw, corner: tuple[int, int], prompt_lines: list[list[str]],
                 verdict_lines: list[list[str]], font: ImageFont.FreeTypeFont, line_height: int) -> None:
    """The prompt's lines, then the verdict's, each token green (✔) or red (✘), from ``corner`` down; a
    token without a mark takes the colour of the next marked one in its line ("read: cab ✔")."""
    x, y = corner
    for line in prompt_lines:
        draw.text((x, y), " ".join(line), font=font, fill=TEXT_RGB)
        y += line_height
    for line in verdict_lines:
        colours, colour = [], TEXT_RGB
        for token in reversed(line):
            if token.endswith((YES_MARK, NO_MARK)):
                colour = YES_RGB if token.endswith(YES_MARK) else NO_RGB
            colours.append(colour)
        token_x = x
        for token, fill in zip(line, reversed(colours)):
            draw.text((token_x, y), token, font=font, fill=fill)
            token_x += font.getlength(token + " ")
        y += line_height


def labelled_grid(images: torch.Tensor, prompts: Sequence[str], held_out: Sequence[bool] | None = None,
                  verdicts: bool = False, title: str | None = None, columns: int = 8,
                  min_side: int = 128, notes: Sequence[str] | None = None,
                  headers: tuple[str, str] = (HELD_OUT_HEADER, TRAIN_HEADER),
                  font_size: int = FONT_SIZE) -> Image.Image:
    """The grid of the module docstring as an RGB PIL image.

    ``images``: (N, C, H, W) in [−1, 1], C = 1 (grey) or 3; ``prompts``: N caption strings;
    ``held_out``: N flags (True for a prompt with a held-out pair), or None for one unlabelled
    section; ``verdicts``: score each image against its prompt with the shapes detector (needs
    shapes images, S in :data:`minisd3.shapes.SUPPORTED_SIZES`, and captions of its grammar);
    ``title``: a line above everything; ``columns``: cells per row (fewer when a section has
    fewer images); ``min_side``: the least width of an upscaled image in pixels, at least 96;
    ``notes``: N lines written under the prompts instead of verdicts (e.g. what a reader reads);
    ``headers``: the (held-out, training) section headers used with ``held_out``; ``font_size``: the
    text's height in pixels, 10 to 32 (larger for a grid shown shrunk, e.g. in a panel of a figure).
    Raises a ValueError naming the argument for wrong shapes, lengths or values.
    """
    check_tensor(images, "images", ndim=4)
    if images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images: expected (N ≥ 1, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
    n = images.shape[0]
    if isinstance(prompts, str) or len(prompts) != n:
        raise ValueError(f"prompts: expected {n} captions, one per image, got "
                         f"{'a single string' if isinstance(prompts, str) else len(prompts)}")
    if notes is not None and (isinstance(notes, str) or len(notes) != n):
        raise ValueError(f"notes: expected {n} lines, one per image, got "
                         f"{'a single string' if isinstance(notes, str) else len(notes)}")
    if held_out is not None and len(held_out) != n:
        raise ValueError(f"held_out: expected {n} flags, one per image, got {len(held_out)}")
    check_positive_int(columns, "columns")
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 96:
        raise ValueError(f"min_side: expected an int ≥ 96 pixels, got {min_side!r}")
    if isinstance(font_size, bool) or not isinstance(font_size, int) or not 10 <= font_size <= 32:
        raise ValueError(f"font_size: expected an int from 10 to 32 pixels, got {font_size!r}")
    line_height = font_size + 3

    scale = math.ceil(min_side / min(images.shape[-2:]))
    cell_h, cell_w = images.shape[-2] * scale, images.shape[-1] * scale
    font, bold = _font(font_size), _font(font_size, bold=True)
    prompt_lines = [_wrap(p.split(), font, cell_w - 2 * PAD) for p in prompts]
    verdict_lines: list[list[list[str]]] = [_wrap(note.split(), font, cell_w - 2 * PAD) for note in notes] if notes \
        else [[] for _ in range(n)]
    if verdicts:
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            scores = score_prompt(image, prompt)
            tokens = [VERDICT_LABELS[a] + (YES_MARK if scores[a] else NO_MARK) for a in ATTRIBUTES if a in scores]
            verdict_lines[i] = _wrap(tokens, font, cell_w - 2 * PAD)
    panel_h = 2 * PAD + line_height * (max(map(len, prompt_lines)) + max(map(len, verdict_lines)))
    if held_out is None:
        sections = [(None, list(range(n)))]
    else:
        sections = [(header, [i for i in range(n) if bool(held_out[i]) == flag])
                    for header, flag in zip(headers, (True, False))]
        sections = [(header, members) for header, members in sections if members]
    per_row = min(columns, max(len(members) for _, members in sections))
    width = per_row * (cell_w + GUTTER) + GUTTER

    def text_lines(text: str | None) -> list[str]:
        return [" ".join(line) for line in _wrap(text.split(), bold, width - 2 * GUTTER)] if text else []

    title_lines = text_lines(title)
    header_lines = [text_lines(header) for header, _ in sections]
    footer_lines = text_lines(VERDICT_LEGEND if verdicts else None)
    rows = sum(math.ceil(len(members) / per_row) for _, members in sections)
    height = GUTTER + sum(len(lines) * line_height + GUTTER for lines in [title_lines, *header_lines, footer_lines]
                          if lines) + rows * (cell_h + panel_h + GUTTER)

    canvas = Image.new("RGB", (width, height), GUTTER_RGB)
    draw = ImageDraw.Draw(canvas)

    def write(lines: list[str], y: int) -> int:
        for line in lines:
            draw.text((GUTTER, y), line, font=bold, fill=PANEL_RGB)
            y += line_height
        return y + GUTTER if lines else y

    pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
    y = write(title_lines, GUTTER)
    for (_, members), lines in zip(sections, header_lines):
        y = write(lines, y)
        for row_start in range(0, len(members), per_row):
            for column, i in enumerate(members[row_start:row_start + per_row]):
                x = GUTTER + column * (cell_w + GUTTER)
                canvas.paste(Image.fromarray(pixels[i]).resize((cell_w, cell_h), Image.NEAREST), (x, y))
                draw.rectangle((x, y + cell_h, x + cell_w - 1, y + cell_h + panel_h - 1), fill=PANEL_RGB)
                _write_panel(draw, (x + PAD, y + cell_h + PAD), prompt_lines[i], verdict_lines[i], font,
                             line_height)
            y += cell_h + panel_h + GUTTER
    write(footer_lines, y)
    return canvas


def save_labelled_grid(path: str | Path, images: torch.Tensor, prompts: Sequence[str],
                       held_out: Sequence[bool] | None = None, verdicts: bool = False, title: str | None = None,
                       columns: int = 8, min_side: int = 128, notes: Sequence[str] | None = None,
                       headers: tuple[str, str] = (HELD_OUT_HEADER, TRAIN_HEADER), font_size: int = FONT_SIZE) -> Path:
    """Write :func:`labelled_grid` (same arguments) to ``path``, atomically; returns the path.

    The format follows the file name's suffix (.png, the default of the training run, or any other
    that PIL writes, e.g. .jpg); an unknown suffix raises a ValueError naming ``path``.
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"path: expected an image file name such as grid.png, got {str(path)!r}")
    grid = labelled_grid(images, prompts, held_out, verdicts, title, columns, min_side, notes, headers, font_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        grid.save(tmp, format=image_format)
    return path


def save_images(images: torch.Tensor, folder: str | Path, stem: str = "sample") -> list[Path]:
    """Write each of ``images`` ((N, C, H, W) in [−1, 1]) as ``folder/{stem}_000.png`` … at its own
    resolution, atomically; returns the paths."""
    check_tensor(images, "images", ndim=4)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(to_uint8(images).permute(0, 2, 3, 1).numpy()):
        path = folder / f"{stem}_{index:03d}.png"
        with atomic_file(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        paths.append(path)
    return paths
