"""Training batches for the engine, drawn deterministically from (seed, step): one protocol, one dispatch.

A source has ``batch(step, size, generator)`` → (x (size, C, S, S), captions), ``eval_prompts(n,
generator)``, ``to_images(samples)`` (identity for pixels, the decoder for latents), ``channels``,
``image_size`` and ``vocabulary``; shapes sources also have ``split`` (held-out colour–shape pairs) and
``held_out_batch(n, generator)`` (scenes of those pairs, for the validation loss), the glyphs source ``words``
(held-out words).
Shapes drawn on the fly can train on web-style captions (``captions`` "original" or "mix",
:mod:`minisd3.recaption`): only the batches' captions change, never the images, the held-out
evaluation prompts or the held-out batches, which keep full captions.
Every source returns the *global* batch of a step from a generator seeded by the step, so a
resumed run sees exactly the batches it would have seen, and each of N processes takes its own
contiguous slice of the same global batch (data sharding without a sampler's state).

    shapes    generated on the fly, training (colour, shape) pairs only; with an ``autoencoder``
              (and no latent cache) each batch is encoded on the fly by it, frozen, so the model
              trains on latents of endless fresh scenes, as SD3 trains on its VAE's
    glyphs    rendered words (:mod:`minisd3.glyphs`), training words only, endless
    digits, cifar10   finite labelled sets (:mod:`minisd3.engine.data`), class names as captions,
              visited in a fresh random permutation each epoch
    latents   any data set encoded once by an autoencoder (:mod:`minisd3.engine.latent_cache`),
              memory-mapped; samples are decoded to images by ``source.to_images``
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..autoencoder import load_autoencoder
from ..glyphs import IMAGE_SIZE as GLYPH_SIZE
from ..glyphs import sample_glyphs, split_words
from ..recaption import ALT_TEXT_WORDS, SYNTHETIC_FRACTIONS, mix_captions
from ..seeding import make_generator
from ..shapes import VOCABULARY, check_canvas, check_image_size, sample_shapes, split_prompts
from . import DATASETS
from .data import LABELLED, labelled_images
from .latent_cache import read_latent_cache


class PixelSource:
    """A source whose samples are images already; a latent source decodes them instead.

    ``factor``: image pixels per sample unit along a side (1 here; a latent source's autoencoder factor f).
    """

    factor = 1

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        return samples


def caption_generator(generator: torch.Generator) -> torch.Generator:
    """A generator for a batch's caption draws, seeded from a hash of ``generator``'s state, which it does not advance.

    So a run with captions "original" or "mix" draws the same images, times, noise and drop masks
    as the same run with full captions: only the words differ between the runs compared.
    """
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    return make_generator(int.from_bytes(digest, "little") >> 1)


@dataclass
class ShapesSource(PixelSource):
    """Generated shapes scenes; training uses the split's training (colour, shape) pairs only.

    ``captions`` ("full", "original" or "mix") chooses the training captions, with the fraction of
    full ones in :data:`~minisd3.recaption.SYNTHETIC_FRACTIONS`; other than "full", the vocabulary
    gains :data:`~minisd3.recaption.ALT_TEXT_WORDS`.

    ``buckets`` (canvases (H, W) in pixels, :func:`~minisd3.shapes.check_canvas`): each training batch is
    drawn on one of them, chosen uniformly by the step's generator, as SD3 trains on aspect-ratio buckets;
    evaluation stays on the ``image_size``² canvas.
    """

    image_size: int = 24
    seed: int = 0
    channels: int = 3
    vocabulary: tuple[str, ...] = tuple(VOCABULARY)
    captions: str = "full"
    buckets: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        self.buckets = tuple(check_canvas(b, "buckets") for b in self.buckets)
        self.split = split_prompts(self.seed)
        if self.captions not in SYNTHETIC_FRACTIONS:
            raise ValueError(f"captions: expected one of {tuple(SYNTHETIC_FRACTIONS)}, got {self.captions!r}")
        if self.captions != "full":
            self.vocabulary = tuple(dict.fromkeys((*self.vocabulary, *ALT_TEXT_WORDS)))

    def canvas(self, generator: torch.Generator) -> int | tuple[int, int]:
        """The canvas of a training batch: a bucket drawn with ``generator``, or ``image_size`` without buckets."""
        if not self.buckets:
            return self.image_size
        return self.buckets[int(torch.randint(len(self.buckets), (1,), generator=generator))]

    def batch(self, step: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        return self.draw(size, generator, self.canvas(generator))

    def eval_batch(self, step: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Real images for the metrics: a batch of training pairs on the ``image_size``² canvas, buckets or not."""
        return self.draw(size, generator, self.image_size)

    def draw(self, size: int, generator: torch.Generator, canvas) -> tuple[torch.Tensor, list[str]]:
        """``size`` scenes of training pairs on ``canvas`` with their training captions."""
        images, captions = sample_shapes(size, generator, image_size=canvas, pairs=self.split.train_pairs)
        if self.captions != "full":
            captions = mix_captions(captions, caption_generator(generator), SYNTHETIC_FRACTIONS[self.captions])
        return images, captions

    def eval_prompts(self, n: int, generator: torch.Generator) -> list[str]:
        return self.split.held_out_captions(n, generator, self.image_size)

    def held_out_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``n`` scenes of held-out (colour, shape) pairs with their full captions: data no training batch holds
        (the validation loss, :mod:`minisd3.validation_loss`)."""
        return sample_shapes(n, generator, image_size=self.image_size, pairs=self.split.held_out_pairs)


@dataclass
class GlyphSource(PixelSource):
    """Rendered three-letter words, 24×24 grey; training uses the training words only, evaluation the held-out ones."""

    seed: int = 0
    image_size: int = GLYPH_SIZE
    channels: int = 1
    split = None  # no shapes split: the words below are what is held out

    def __post_init__(self):
        self.words = split_words(self.seed)
        self.vocabulary = ("the", "word", *self.words.train)

    def batch(self, step: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        return sample_glyphs(size, generator, self.words.train)

    def eval_prompts(self, n: int, generator: torch.Generator) -> list[str]:
        return self.words.captions(n, generator, held_out=True)


class ShapesLatentSource(ShapesSource):
    """Shapes drawn on the fly and encoded by a frozen autoencoder: batches are normalised latents z′.

    ``latent_size`` is the side the diffusion model sees; the canvas is ``latent_size·f`` pixels
    (f the autoencoder's downsampling factor) and must be one the shapes generator draws.
    ``to_images`` decodes samples, x = decode(z′/scale + shift), on the samples' device.
    """

    def __init__(self, autoencoder: str | Path, latent_size: int, seed: int = 0, captions: str = "full",
                 buckets: tuple[tuple[int, int], ...] = ()):
        self.codec = load_autoencoder(autoencoder)
        super().__init__(check_image_size(latent_size * self.codec.factor, "image_size × the autoencoder's factor"), seed,
                         captions=captions, buckets=buckets)
        self.channels = self.codec.latent_channels
        self.factor = self.codec.factor

    def draw(self, size: int, generator: torch.Generator, canvas) -> tuple[torch.Tensor, list[str]]:
        images, captions = super().draw(size, generator, canvas)
        return self.codec.images_to_latents(images, batch=size), captions

    def held_out_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        images, captions = super().held_out_batch(n, generator)
        return self.codec.images_to_latents(images), captions

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        return self.codec.to(samples.device).latents_to_images(samples)


class TensorSource(PixelSource):
    """A finite labelled image set in [−1, 1], with class names as captions."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...], seed: int = 0):
        self.images, self.labels, self.class_names, self.seed = images, labels, class_names, seed
        self.channels, self.image_size = images.shape[1], images.shape[-1]
        self.vocabulary = class_names
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = make_generator(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.images), generator=g)}  # one epoch kept
        return self._perms[epoch]

    def indices(self, step: int, size: int) -> torch.Tensor:
        """Positions step·size … (step+1)·size − 1 of the epoch-wise permuted order."""
        n = len(self.images)
        positions = torch.arange(step * size, (step + 1) * size)
        return torch.stack([self._permutation(int(p) // n)[int(p) % n] for p in positions])

    def batch(self, step: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        idx = self.indices(step, size)
        return self.images[idx], [self.class_names[int(i)] for i in self.labels[idx]]

    def eval_prompts(self, n: int, generator: torch.Generator) -> list[str]:
        return [self.class_names[i % len(self.class_names)] for i in range(n)]


class LatentSource(TensorSource):
    """Cached latents z′ of an autoencoder (:mod:`minisd3.engine.latent_cache`), memory-mapped, with the cache's captions.

    Rows are read from disk only when a batch asks for them; ``to_images`` decodes samples with
    the autoencoder that made the cache (``autoencoder`` overrides its recorded path).
    """

    def __init__(self, cache: str | Path, seed: int = 0, autoencoder: str = "", data: str = "DATA"):
        self.cache = read_latent_cache(cache, autoencoder, data)
        with warnings.catch_warnings():  # read-only mmap: the tensor shares it and is never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            latents = torch.from_numpy(self.cache.latents)
        super().__init__(latents, torch.from_numpy(self.cache.labels), tuple(self.cache.captions), seed)
        self.vocabulary = tuple(self.cache.vocabulary)
        # a shapes cache is evaluated on held-out prompts with adherence, like pixel shapes
        self.split = split_prompts(self.cache.meta["data"].get("seed", 0)) if self.cache.data == "shapes" else None

    def eval_prompts(self, n: int, generator: torch.Generator) -> list[str]:
        if self.split is not None:
            return self.split.held_out_captions(n, generator, self.cache.meta["data"].get("image_size", 32))
        return super().eval_prompts(n, generator)

    def batch(self, step: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        latents, captions = super().batch(step, size, generator)
        return latents.float(), captions

    @property
    def factor(self) -> int:
        return self.cache.autoencoder().factor

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        return self.cache.to_images(samples)


def make_source(config):
    """The data source a :class:`~minisd3.engine.config.TrainConfig` asks for (a latent cache when ``latents`` is set)."""
    if config.latents:
        source = LatentSource(config.latents, config.seed, config.autoencoder, config.data)
        if source.cache.data != config.data:
            raise ValueError(f"data: the latent cache {config.latents!r} was encoded from {source.cache.data!r}, "
                             f"got {config.data!r}")
        if source.image_size != config.image_size:
            raise ValueError(f"image_size: the latent cache holds {source.image_size}×{source.image_size} latents "
                             f"(image_size is the side the model sees), got {config.image_size}")
        return source
    if config.data == "glyphs":
        return GlyphSource(config.seed)
    if config.data == "shapes":
        buckets = config.bucket_canvases
        if config.autoencoder:
            source = ShapesLatentSource(config.autoencoder, config.image_size, config.seed, config.captions, buckets)
        else:
            source = ShapesSource(config.image_size, config.seed, captions=config.captions, buckets=buckets)
        step = source.factor * config.patch_size
        for height, width in buckets:
            if height % step or width % step:
                raise ValueError(f"buckets: expected canvases whose sides are multiples of {step} pixels (autoencoder "
                                 f"factor {source.factor} × patch_size {config.patch_size}), got {height}x{width}")
        return source
    if config.data in LABELLED:
        return TensorSource(*labelled_images(config.data, config.data_root, config.image_size, config.download),
                            config.seed)
    raise ValueError(f"data: expected 'shapes', {' or '.join(map(repr, LABELLED))} (or any of {DATASETS} with "
                     f"latents=CACHE), got {config.data!r}")
