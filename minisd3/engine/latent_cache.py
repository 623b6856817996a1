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

The word-level tokenizer's vocabulary of an ImageFolder cache is made of the words of its class
names (:mod:`minisd3.engine.data`).

The two jobs behind ``python -m minisd3 autoencoder`` and ``encode-latents``:
:func:`train_autoencoder_on` (a small autoencoder for a data set) and :func:`encode_latents`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..autoencoder import STORED_AUTOENCODERS, describe, load_autoencoder
from ..env import progress_bar
from ..files import atomic_folder
from ..shapes import VOCABULARY
from ..validation import check_positive_int
from .data import DEFAULT_IMAGE_SIZE, Batches, MissingDatasetError, image_batches, load_images, words_of

META_FILE, LATENTS_FILE, LABELS_FILE = "latents.json", "latents.npy", "labels.npy"


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
        bar = progress_bar(total=count, desc="encoding", disable=not progress, mininterval=2.0)
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


def train_autoencoder_on(data: str, out: str | Path, *, data_root: str | Path = "data/datasets",
                         image_size: int | None = None, count: int = 10_000, channels: int = 4, factor: int = 4,
                         width: int = 32, steps: int = 3000, batch: int = 64, lr: float = 2e-3, beta: float = 1e-4,
                         loss: str = "mse", seed: int = 0, device: str = "auto", download: bool = False,
                         progress: bool = True, held_out: int = 256) -> dict:
    """Train a small autoencoder (:mod:`minisd3.autoencoder`) on ``data``, fit its latent scale and
    shift, measure reconstructions on ``held_out`` images it never saw, and save it to ``out``.

    Returns the fitted statistics and the held-out report (PSNR, SSIM, …) with ``out``. Raises
    ValueError when fewer than ``held_out`` + 1 images are available.
    """
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

    image_size = image_size or DEFAULT_IMAGE_SIZE[data]
    images, _, _ = load_images(data, data_root, image_size, count + held_out, seed, download)
    if len(images) <= held_out:
        raise ValueError(f"count: expected more than {held_out} images to train on, got {len(images)}")
    target = get_device(device)
    train_images, test_images = images[:-held_out].to(target), images[-held_out:].to(target)
    torch.manual_seed(seed)
    model = SmallAutoencoder(AutoencoderConfig(images.shape[1], channels, factor, width)).to(target)
    losses = train_autoencoder(model, row_sampler(train_images), steps, batch, lr, beta, loss, seed, progress=progress)
    statistics = fit_latent_statistics(model, train_images[:2048])
    report = reconstruction_report(model, test_images)
    extra = {"training": {"data": data, "image_size": image_size, "steps": steps, "batch": batch, "lr": lr,
                          "beta": beta, "loss": loss, "seed": seed, "final_loss": losses[-1]},
             "held_out": {"images": held_out, **report}}
    save_autoencoder(model, out, extra)
    return {"out": str(out), **statistics, **report}


def encode_latents(data: str, autoencoder: str | Path, out: str | Path, *, data_root: str | Path = "data/datasets",
                   image_size: int | None = None, count: int = 10_000, batch: int = 64, workers: int = 0,
                   dtype: str = "float32", seed: int = 0, device: str = "auto", download: bool = False,
                   progress: bool = True) -> dict:
    """Encode ``data`` once with ``autoencoder`` into the cache folder ``out`` (:func:`encode_dataset`).

    Returns the cache's count, shape, dtype, scale, shift and latent statistics with ``out``.
    """
    from ..env import get_device

    codec = load_autoencoder(autoencoder, get_device(device))
    image_size = image_size or DEFAULT_IMAGE_SIZE[data]
    batches, total, names = image_batches(data, data_root, image_size, batch, count, seed, download, workers)
    vocabulary = list(VOCABULARY) if data == "shapes" else words_of(names)
    meta = {"data": data, "data_root": str(data_root), "image_size": image_size, "seed": seed}
    folder = encode_dataset(codec, batches, total, out, names, vocabulary, meta, autoencoder, dtype, progress=progress)
    written = json.loads((folder / META_FILE).read_text())
    return {k: written[k] for k in ("count", "shape", "dtype", "scale", "shift", "latent_mean", "latent_std")} | {
        "out": str(folder)}
