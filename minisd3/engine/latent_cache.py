"""Latent caches: a data set encoded once by an autoencoder, kept on disk and memory-mapped.

Diffusion in latent space trains on z′ = (z − shift)·scale, z = encode(x) (:mod:`minisd3.autoencoder`).
The encoder is frozen, so each image is encoded once; training then reads rows of

    CACHE/latents.npy    (N, c, h, w) normalised latents z′, float32 or float16, opened with mmap_mode="r"
    CACHE/labels.npy     (N,) int64: the index of each item's caption in the JSON's "captions"
    CACHE/latents.json   count, shape, dtype, scale, shift, the autoencoder (path and config), the data
                         it came from, the distinct "captions" and the tokenizer's "vocabulary"

so a data set larger than memory stays on disk. The cache is written in a temporary folder and
renamed when complete: a folder with latents.json is always whole. Decoding a sample reverses the
normalisation with the cache's own scale and shift: x = decode(z′/scale + shift).

ImageFolder (any root with one sub-folder of images per class, as ImageNet's train/): each image
is resized (shorter side) and centre-cropped to S×S, in [−1, 1]; its caption is the folder name with
underscores as spaces ("great_white_shark" → "great white shark"), and the word-level tokenizer's
vocabulary is made of the words of these names.

Commands (``python -m minisd3``):

    autoencoder --data shapes|digits|cifar10 --channels 4 --factor 4 --out DIR       train a small autoencoder
    encode-latents --data shapes|digits|cifar10|imagefolder --autoencoder DIR --out CACHE [--data-root ROOT]
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..autoencoder import STORED_AUTOENCODERS, describe, load_autoencoder
from ..digits import load_digits_tensor
from ..files import atomic_folder
from ..shapes import VOCABULARY, sample_shapes, split_prompts
from ..validation import check_positive_int
from .data import CIFAR10_CLASSES, DIGIT_WORDS, MissingDatasetError, load_cifar10

META_FILE, LATENTS_FILE, LABELS_FILE = "latents.json", "latents.npy", "labels.npy"
IMAGE_DATA = ("shapes", "digits", "cifar10", "imagefolder")
DEFAULT_IMAGE_SIZE = {"shapes": 32, "digits": 8, "cifar10": 32, "imagefolder": 256}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Batches = Iterator[tuple[torch.Tensor, list[str]]]


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
    (class names empty); digits: the 1797 8×8 digits; cifar10: the 50 000 training images;
    imagefolder: every image under ``data_root`` (small folders only; large ones are streamed by
    :func:`image_batches`).
    """
    if data == "shapes":
        generator = torch.Generator().manual_seed(seed)
        images, captions = sample_shapes(count, generator, image_size=image_size, pairs=split_prompts(seed).train_pairs)
        return images, captions, ()
    if data == "digits":
        if image_size != 8:
            raise ValueError(f"image_size: digits are 8×8, got {image_size}")
        images, labels = load_digits_tensor()
        return images, [DIGIT_WORDS[int(i)] for i in labels], DIGIT_WORDS
    if data == "cifar10":
        if image_size != 32:
            raise ValueError(f"image_size: CIFAR-10 images are 32×32, got {image_size}")
        images, labels = load_cifar10(data_root, download)
        return images, [CIFAR10_CLASSES[int(i)] for i in labels], CIFAR10_CLASSES
    if data == "imagefolder":
        folder = image_folder(data_root, image_size)
        names = tuple(caption_from_folder(c) for c in folder.classes)
        pairs = [folder[i] for i in range(len(folder))]
        return torch.stack([p[0] for p in pairs]), [names[p[1]] for p in pairs], names
    raise ValueError(f"data: expected one of {IMAGE_DATA}, got {data!r}")


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


def encode_dataset(autoencoder, batches: Batches, count: int, out: str | Path, class_names: Sequence[str] = (),
                   vocabulary: Sequence[str] | None = None, data: dict | None = None,
                   autoencoder_path: str | Path | None = None, dtype: str = "float32", progress: bool = True) -> Path:
    """Encode every batch to normalised latents z′ and write the cache folder ``out`` (module docstring).

    ``class_names`` fixes the order of the first captions (label k = class k); other captions are
    numbered as they come. ``vocabulary`` defaults to the words of all captions.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected 'float32' or 'float16', got {dtype!r}")
    check_positive_int(count, "count")
    out = Path(out)
    if (out / META_FILE).exists():
        raise ValueError(f"out: {str(out)!r} already holds a latent cache; delete it or choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out: expected a new or empty folder for the latent cache, got {str(out)!r} with files in it")
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros(count, dtype=np.int64)
    latents, done, total, squares = None, 0, 0.0, 0.0
    with atomic_folder(out) as tmp:
        bar = tqdm(total=count, desc="encoding", disable=not progress, mininterval=2.0)
        for images, captions in batches:
            z = autoencoder.images_to_latents(images, batch=len(images)).cpu().numpy()
            if latents is None:
                latents = np.lib.format.open_memmap(tmp / LATENTS_FILE, mode="w+", dtype=dtype,
                                                    shape=(count, *z.shape[1:]))
            take = min(len(z), count - done)
            latents[done:done + take] = z[:take]
            kept = z[:take].astype(np.float64)
            total, squares = total + float(kept.sum()), squares + float((kept**2).sum())
            labels[done:done + take] = [index.setdefault(c, len(index)) for c in captions[:take]]
            done += take
            bar.update(take)
            if done == count:
                break
        bar.close()
        if done != count:
            raise ValueError(f"count: expected {count} images from the data, got {done}")
        latents.flush()
        captions_list = list(index)
        n = latents.size
        mean = total / n
        np.save(tmp / LABELS_FILE, labels)
        meta = {
            "format": 1, "count": count, "shape": list(latents.shape), "dtype": dtype,
            "scale": float(autoencoder.scaling_factor), "shift": float(autoencoder.shift_factor),
            "autoencoder": {"path": str(Path(autoencoder_path).resolve()) if autoencoder_path else None,
                            **describe(autoencoder)},
            "data": data or {}, "captions": captions_list,
            "vocabulary": list(vocabulary) if vocabulary is not None else words_of(captions_list),
            "latent_mean": mean, "latent_std": max(squares / n - mean**2, 0.0) ** 0.5,
        }
        del latents
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return out


@dataclass
class LatentCache:
    """A latent cache opened for reading: memory-mapped latents, labels, captions and the decoder."""

    path: Path
    meta: dict
    latents: np.ndarray
    labels: np.ndarray
    autoencoder_path: str
    _decoder: object = field(default=None, repr=False)

    @property
    def captions(self) -> list[str]:
        return self.meta["captions"]

    @property
    def vocabulary(self) -> list[str]:
        return self.meta["vocabulary"]

    @property
    def data(self) -> str:
        return self.meta["data"].get("data", "")

    def autoencoder(self, device=None):
        """The autoencoder that made the cache, loaded on first use and moved to ``device``."""
        if self._decoder is None:
            self._decoder = load_autoencoder(self.autoencoder_path)
        return self._decoder.to(device or "cpu")

    @torch.no_grad()
    def to_images(self, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Images decode(z′/scale + shift) with the cache's scale and shift, on the latents' device."""
        decoder = self.autoencoder(latents.device)
        z = latents.float() / self.meta["scale"] + self.meta["shift"]
        return decoder.latents_to_images(z, batch, normalized=False)


def read_latent_cache(path: str | Path, autoencoder: str | Path = "", data: str = "DATA") -> LatentCache:
    """Open the cache at ``path`` (mmap, nothing read yet). ``autoencoder`` overrides the recorded
    decoder path; ``data`` only fills in the command suggested when the cache is missing."""
    folder = Path(path)
    if not (folder / META_FILE).is_file():
        raise MissingDatasetError(
            f"latents: no latent cache at {str(path)!r} (expected {folder / META_FILE}). Encode the data set once: "
            f"python -m minisd3 encode-latents --data {data} --autoencoder AUTOENCODER_DIR --out {path}"
            + (" --data-root ROOT" if data in ("cifar10", "imagefolder") else ""))
    meta = json.loads((folder / META_FILE).read_text())
    latents = np.load(folder / LATENTS_FILE, mmap_mode="r")
    labels = np.load(folder / LABELS_FILE)
    if list(latents.shape) != meta["shape"] or len(labels) != meta["count"]:
        raise MissingDatasetError(f"latents: the cache at {str(path)!r} is incomplete: {LATENTS_FILE} has shape "
                                  f"{list(latents.shape)}, expected {meta['shape']}")
    decoder_path = str(autoencoder) if autoencoder else meta["autoencoder"].get("path")
    if not decoder_path or not (Path(decoder_path).is_dir() or (STORED_AUTOENCODERS / decoder_path).is_dir()):
        raise MissingDatasetError(
            f"autoencoder: the latent cache {str(path)!r} decodes with the autoencoder at {decoder_path!r}, which is "
            "not on this machine; pass its folder with --set autoencoder=DIR")
    return LatentCache(folder, meta, latents, labels, decoder_path)


def autoencoder_command(args) -> int:
    """``python -m minisd3 autoencoder``: train a small autoencoder, fit scale and shift, report PSNR/SSIM, save."""
    from ..autoencoder import (
        AutoencoderConfig,
        SmallAutoencoder,
        fit_latent_statistics,
        reconstruction_report,
        save_autoencoder,
        train_autoencoder,
    )
    from ..env import get_device
    from ..training import row_sampler

    held_out = 256
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.data]
    images, _, _ = load_images(args.data, args.data_root, image_size, args.count + held_out, args.seed, args.download)
    if len(images) <= held_out:
        raise ValueError(f"count: expected more than {held_out} images to train on, got {len(images)}")
    device = get_device(args.device)
    train_images, test_images = images[:-held_out].to(device), images[-held_out:].to(device)
    torch.manual_seed(args.seed)
    config = AutoencoderConfig(images.shape[1], args.channels, args.factor, args.width)
    model = SmallAutoencoder(config).to(device)
    losses = train_autoencoder(model, row_sampler(train_images), args.steps, args.batch, args.lr, args.beta, args.loss,
                               args.seed, progress=not args.quiet)
    statistics = fit_latent_statistics(model, train_images[:2048])
    report = reconstruction_report(model, test_images)
    extra = {"training": {"data": args.data, "image_size": image_size, "steps": args.steps, "batch": args.batch,
                          "lr": args.lr, "beta": args.beta, "loss": args.loss, "seed": args.seed,
                          "final_loss": losses[-1]}, "held_out": {"images": held_out, **report}}
    save_autoencoder(model, args.out, extra)
    print(json.dumps({"out": str(args.out), **statistics, **report}, indent=1))
    return 0


def encode_latents_command(args) -> int:
    """``python -m minisd3 encode-latents``: encode a data set once into a latent cache."""
    from ..env import get_device

    autoencoder = load_autoencoder(args.autoencoder, get_device(args.device))
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.data]
    batches, count, names = image_batches(args.data, args.data_root, image_size, args.batch, args.count, args.seed,
                                          args.download, args.workers)
    vocabulary = list(VOCABULARY) if args.data == "shapes" else words_of(names)
    data = {"data": args.data, "data_root": str(args.data_root), "image_size": image_size, "seed": args.seed}
    out = encode_dataset(autoencoder, batches, count, args.out, names, vocabulary, data, args.autoencoder, args.dtype,
                         progress=not args.quiet)
    meta = json.loads((out / META_FILE).read_text())
    print(json.dumps({k: meta[k] for k in ("count", "shape", "dtype", "scale", "shift", "latent_mean", "latent_std")}
                     | {"out": str(out)}, indent=1))
    return 0
