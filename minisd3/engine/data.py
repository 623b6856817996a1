"""The data sets the engine trains on, and how each is read: the one list of names and one dispatch.

    shapes        generated scenes (:mod:`minisd3.shapes`), captions from its grammar, endless
    glyphs        rendered words (:mod:`minisd3.glyphs`), captions 'the word "cab"', endless
    digits        scikit-learn's 8×8 digits, captions "zero" … "nine"
    cifar10       CIFAR-10 train (downloaded through torchvision on request), captions are the class names
    imagefolder   any root with one sub-folder of images per class (ImageNet's train/): each image
                  resized (shorter side) and centre-cropped to S×S; caption = folder name with
                  underscores as spaces ("great_white_shark" → "great white shark")

All images are (C, S, S) in [−1, 1]. :func:`load_images` reads a set into memory;
:func:`image_batches` streams it (an ImageFolder through a DataLoader, never whole).
Training batches drawn from these sets are in :mod:`minisd3.engine.sources`.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..digits import load_digits_tensor
from ..glyphs import sample_glyphs, split_words
from ..seeding import make_generator
from ..shapes import sample_shapes, split_prompts
from ..validation import check_positive_int
from . import DATASETS

LABELLED = ("digits", "cifar10")
"""The finite labelled sets (class names as captions)."""
DEFAULT_IMAGE_SIZE = {"shapes": 32, "glyphs": 24, "digits": 8, "cifar10": 32, "imagefolder": 256}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Batches = Iterator[tuple[torch.Tensor, list[str]]]
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class MissingDatasetError(ValueError):
    """The data set is not on disk; the message says where to put it or how to download it."""


CIFAR10_FOLDER = "cifar-10-batches-py"


def load_cifar10(root: str | Path, download: bool = False, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as (images (N, 3, 32, 32) in [−1, 1], labels), from ``root/cifar-10-batches-py``.

    ``download`` fetches and verifies the archive with torchvision first. The batches are read in
    their published format: pickled dicts with b"data" (N, 3072) uint8 rows (R, G, B planes of
    32×32) and b"labels" (the data set's own format, which torchvision reads the same way).
    """
    folder = Path(root) / CIFAR10_FOLDER
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=train, download=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise MissingDatasetError(
            f"data_root: CIFAR-10 is not in {str(root)!r} (expected {folder} with {', '.join(missing)}). "
            "Download it with --set download=true for train (--download for autoencoder and encode-latents; "
            "about 170 MB), or put the extracted "
            f"'{CIFAR10_FOLDER}' folder there."
        )
    rows, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        rows.append(np.asarray(batch[b"data"], dtype=np.uint8))
        labels.extend(batch[b"labels"])
    images = torch.from_numpy(np.concatenate(rows).reshape(-1, 3, 32, 32)).float() / 127.5 - 1
    return images, torch.tensor(labels, dtype=torch.long)


def labelled_images(data: str, data_root: str | Path = "data/datasets", image_size: int = 32,
                    download: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """A labelled data set of :data:`LABELLED` in memory: (images (N, C, S, S) in [−1, 1], labels (N,), class names).

    Raises ValueError when ``image_size`` is not the set's own side (8 digits, 32 CIFAR-10), and
    :class:`MissingDatasetError` when CIFAR-10 is not under ``data_root``.
    """
    side = DEFAULT_IMAGE_SIZE[data]
    if image_size != side:
        raise ValueError(f"image_size: {data} images are {side}×{side}, got {image_size}")
    if data == "digits":
        images, labels = load_digits_tensor()
        return images, labels, DIGIT_WORDS
    images, labels = load_cifar10(data_root, download)
    return images, labels, CIFAR10_CLASSES


def caption_from_folder(name: str) -> str:
    """A class folder name as a caption, underscores as spaces: "Great_White_Shark" → "great white shark"."""
    return " ".join(name.replace("_", " ").lower().split())


def words_of(captions: Sequence[str]) -> list[str]:
    """The sorted distinct words of ``captions`` (the vocabulary of a word-level tokenizer)."""
    return sorted({word for caption in captions for word in caption.lower().replace(",", " ").split()})


def is_image_file(path: str) -> bool:
    """True for the image files an ImageFolder reads (module level, so DataLoader workers can pickle it)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def image_folder(root: str | Path, image_size: int):
    """A torchvision ImageFolder over ``root``: RGB, shorter side resized to S, centre crop S×S, in [−1, 1]."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    check_positive_int(image_size, "image_size")
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise MissingDatasetError(
            f"data_root: expected an ImageFolder root with one sub-folder of images per class at {str(root)!r}, "
            f"got {'no such folder' if not root.is_dir() else 'a folder without class sub-folders'}. For ImageNet, "
            "point it at the extracted train/ folder (class folders n01440764, …, or renamed to class names).")
    transform = transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])
    return ImageFolder(str(root), transform=transform, is_valid_file=is_image_file)


def load_images(data: str, data_root: str | Path = "data/datasets", image_size: int = 32, count: int = 10_000,
                seed: int = 0, download: bool = False) -> tuple[torch.Tensor, list[str], tuple[str, ...]]:
    """A data set in memory: (images (N, C, S, S) in [−1, 1], one caption per image, class names).

    shapes: ``count`` scenes drawn from the training (colour, shape) pairs of ``split_prompts(seed)``
    (class names empty); glyphs: ``count`` renderings of the training words of ``split_words(seed)``
    (24×24 whatever ``image_size``; class names empty); digits: the 1797 8×8 digits; cifar10: the 50 000 training images;
    imagefolder: every image under ``data_root`` (small folders only; large ones are streamed by
    :func:`image_batches`).
    """
    if data == "shapes":
        generator = make_generator(seed)
        images, captions = sample_shapes(count, generator, image_size=image_size, pairs=split_prompts(seed).train_pairs)
        return images, captions, ()
    if data == "glyphs":
        images, captions = sample_glyphs(count, make_generator(seed), split_words(seed).train)
        return images, captions, ()
    if data in LABELLED:
        images, labels, names = labelled_images(data, data_root, image_size, download)
        return images, [names[int(i)] for i in labels], names
    if data == "imagefolder":
        folder = image_folder(data_root, image_size)
        names = tuple(caption_from_folder(c) for c in folder.classes)
        pairs = [folder[i] for i in range(len(folder))]
        return torch.stack([p[0] for p in pairs]), [names[p[1]] for p in pairs], names
    raise ValueError(f"data: expected one of {DATASETS}, got {data!r}")


def image_batches(data: str, data_root: str | Path = "data/datasets", image_size: int = 32, batch: int = 64,
                  count: int = 10_000, seed: int = 0, download: bool = False, num_workers: int = 0
                  ) -> tuple[Batches, int, tuple[str, ...]]:
    """(batches of (images, captions) in data-set order, number of images, class names).

    An ImageFolder is read by a DataLoader with ``num_workers`` processes, never whole into memory;
    the other data sets come from :func:`load_images`.
    """
    check_positive_int(batch, "batch")
    if data != "imagefolder":
        images, captions, names = load_images(data, data_root, image_size, count, seed, download)
        chunks = ((images[i:i + batch], captions[i:i + batch]) for i in range(0, len(images), batch))
        return chunks, len(images), names
    folder = image_folder(data_root, image_size)
    names = tuple(caption_from_folder(c) for c in folder.classes)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=False, num_workers=num_workers)
    return ((x, [names[int(i)] for i in y]) for x, y in loader), len(folder), names
