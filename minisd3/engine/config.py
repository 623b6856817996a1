"""Training configurations: one dataclass, named presets, ``--set key=value`` overrides, and the
model a configuration describes (:func:`build_model`).

The same engine trains every preset; only these numbers change between a CPU toy and a GPU run.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields

from ..glyphs import IMAGE_SIZE as GLYPH_SIZE
from ..models import POSITION_LAYOUTS, MMDiTConfig
from ..multi_text import MultiTextEncoder
from ..recaption import SYNTHETIC_FRACTIONS
from ..shapes import check_canvas, check_image_size
from ..text import CharTokenizer, SmallTextEncoder, WordTokenizer
from ..text_to_image import TextToImage
from ..timesteps import make_time_sampler
from . import DATASETS


@dataclass
class TrainConfig:
    """Everything a run needs; saved in every checkpoint's state.json."""

    # data
    data: str = "shapes"  # shapes | glyphs | digits | cifar10 | imagefolder (imagefolder: in latents only)
    data_root: str = "data/datasets"
    # shapes (drawn on the fly) only: the training captions, "full" (the grammar's, as synthetic captions), "original"
    # (web-style alt-text made from them, minisd3.recaption) or "mix" (50/50, as SD3); evaluation uses full captions
    captions: str = "full"
    # shapes drawn on the fly only: aspect-ratio buckets, canvases "HxW" in pixels joined by ",", e.g.
    # "32x32,32x64,64x32"; each batch is drawn on one, chosen by the step (empty: every batch on image_size)
    buckets: str = ""
    download: bool = False
    image_size: int = 24  # the side the model sees: pixels, or latents when `latents` is set
    # latent space: a cache made by `python -m minisd3 encode-latents` (empty: train on pixels)
    latents: str = ""
    # the autoencoder: with a cache, its decoder (empty: the one the cache records); with data=shapes and no
    # cache, scenes are encoded on the fly by it (image_size is then the latent side, canvas = image_size·f)
    autoencoder: str = ""
    # model: an MM-DiT conditioned on captions by a small text encoder trained with it
    depth: int = 4
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 2
    qk_norm: bool = True
    # 2-D positions of a grid other than the base grid (position_base, in image_size units; 0: image_size):
    # "scaled" spans the base grid's range, "extended" continues beyond it (minisd3.models.PatchEmbedding)
    positions: str = "scaled"
    position_base: int = 0
    # fine-tuning: start from the weights (EMA) of another run or stored model, which may have another
    # image_size; the optimizer, learning-rate schedule and EMA start fresh (position_base 0 → that run's)
    init_from: str = ""
    text_dim: int = 64
    text_depth: int = 2
    text_length: int = 16  # tokens the text encoder reads, [BOS] included
    # glyphs only: the text encoders, "+"-joined from word (CLIP-like) and char (T5-like), each dropped
    # independently with probability p_uncond in training (other data: one word-level encoder, "word")
    text_encoders: str = "word"
    # objective
    time_sampler: str = "lognorm(0,1)"
    shift: float = 1.0
    p_uncond: float = 0.1  # CFG dropout: of the caption, or of each text encoder separately (text_encoders)
    # optimisation
    batch_size: int = 32  # global: summed over processes and accumulation steps
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_steps: int = 3000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    # system
    device: str = "auto"
    bf16: bool = False  # autocast the training step to bfloat16 (CUDA, and CPUs: AMX/AVX-512 units pay off)
    compile: bool = False
    data_workers: int = 0  # processes drawing batches ahead of the training step (0: drawn in the training process)
    # logging, sampling, checkpoints
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 1000
    ckpt_minutes: float = 5.0  # also a checkpoint whenever this much wall time passed since the last one (0: off)
    sample_steps: int = 20
    sample_cfg: float = 3.0
    eval_samples: int = 64

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming any field whose value cannot work."""
        positive = ["image_size", "depth", "heads", "head_dim", "patch_size", "text_dim", "text_depth", "text_length",
                    "batch_size", "grad_accum", "max_steps", "log_every", "sample_every", "ckpt_every", "sample_steps",
                    "eval_samples"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive value, got {getattr(self, name)}")
        if isinstance(self.data_workers, bool) or not isinstance(self.data_workers, int) or self.data_workers < 0:
            raise ValueError(f"data_workers: expected a whole number ≥ 0, got {self.data_workers!r}")
        if self.data not in DATASETS:
            raise ValueError(f"data: expected one of {DATASETS}, got {self.data!r}")
        if self.data == "imagefolder" and not self.latents:
            raise ValueError("latents: an ImageFolder is trained in latent space; expected the path of a latent cache "
                             "(python -m minisd3 encode-latents --data imagefolder ...), got ''")
        if self.captions not in SYNTHETIC_FRACTIONS:
            raise ValueError(f"captions: expected one of {tuple(SYNTHETIC_FRACTIONS)}, got {self.captions!r}")
        if self.captions != "full" and (self.data != "shapes" or self.latents):
            raise ValueError(f"captions: alt-text is made from shapes captions drawn on the fly; expected 'full' for "
                             f"{'a latent cache' if self.latents else repr(self.data)}, got {self.captions!r}")
        if self.buckets and (self.data != "shapes" or self.latents):
            raise ValueError(f"buckets: aspect-ratio buckets are drawn by the shapes generator; expected '' for "
                             f"{'a latent cache' if self.latents else repr(self.data)}, got {self.buckets!r}")
        if self.buckets and not self.bucket_canvases:  # parses them, or raises naming buckets
            raise ValueError(f"buckets: expected canvases HxW in pixels joined by ',', got {self.buckets!r}")
        names = self.text_encoder_names
        if self.data != "glyphs" and names != ("word",):
            raise ValueError(f"text_encoders: expected 'word' for {self.data!r} (several encoders: glyphs only), "
                             f"got {self.text_encoders!r}")
        if not names or len(set(names)) != len(names) or not set(names) <= set(TEXT_ENCODERS):
            raise ValueError(f"text_encoders: expected distinct names among {TEXT_ENCODERS} joined by '+', "
                             f"e.g. 'word+char', got {self.text_encoders!r}")
        if self.data == "glyphs" and (self.latents or self.autoencoder or self.image_size != GLYPH_SIZE):
            raise ValueError(f"image_size: glyphs are {GLYPH_SIZE}×{GLYPH_SIZE} pixels (no latents), got "
                             f"{self.image_size}" + (" with an autoencoder" if self.latents or self.autoencoder else ""))
        if self.data == "shapes" and not self.latents and not self.autoencoder:  # pixels: sizes the generator draws
            check_image_size(self.image_size)
        if self.positions not in POSITION_LAYOUTS:
            raise ValueError(f"positions: expected one of {POSITION_LAYOUTS}, got {self.positions!r}")
        if self.position_base < 0 or self.position_base % self.patch_size:
            raise ValueError(f"position_base: expected 0 (image_size) or a positive multiple of patch_size "
                             f"{self.patch_size}, got {self.position_base}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size: expected a multiple of patch_size {self.patch_size}, got {self.image_size}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size: expected a multiple of grad_accum {self.grad_accum}, got {self.batch_size}")
        if not 0 <= self.p_uncond <= 1:
            raise ValueError(f"p_uncond: expected a probability in [0, 1], got {self.p_uncond}")
        if not 0 <= self.ckpt_minutes < math.inf:
            raise ValueError(f"ckpt_minutes: expected a number of minutes ≥ 0 (0: by steps only), got {self.ckpt_minutes}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: expected a value in [0, 1), got {self.ema_decay}")
        if not (0 < self.shift < math.inf and 0 < self.lr < math.inf):
            raise ValueError(f"shift and lr: expected positive finite values, got shift {self.shift}, lr {self.lr}")
        try:
            make_time_sampler(self.time_sampler)
        except ValueError as err:
            raise ValueError(f"time_sampler: {err}") from err
        return self

    @property
    def bucket_canvases(self) -> tuple[tuple[int, int], ...]:
        """``buckets`` as (H, W) pairs: "32x32,32x64" → ((32, 32), (32, 64)); ValueError naming buckets."""
        canvases = []
        for item in filter(None, (part.strip() for part in self.buckets.split(","))):
            try:
                height, width = (int(side) for side in item.lower().split("x"))
            except ValueError:
                raise ValueError(f"buckets: expected canvases HxW in pixels joined by ',', e.g. '32x32,32x64', "
                                 f"got {self.buckets!r}") from None
            canvases.append(check_canvas((height, width), "buckets"))
        return tuple(canvases)

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        """The text encoders, in c_ctxt order: ``"word+char"`` → ("word", "char")."""
        return tuple(n.strip() for n in self.text_encoders.split("+") if n.strip())

    def drop_shape(self, batch: int) -> int | tuple[int, int]:
        """Shape of a step's CFG drop mask: (batch,) for one caption, (batch, encoders) for glyphs."""
        return (batch, len(self.text_encoder_names)) if self.data == "glyphs" else batch


TEXT_ENCODERS = ("word", "char")
"""The text encoders a glyphs model can read (:func:`build_model`)."""

PRESETS: dict[str, dict] = {
    # the README's main job: text-to-image on generated shapes in the latent space of the stored autoencoder
    # (data/autoencoders/shapes-32: f = 4, 8 channels, 32 px canvas → 8×8×8 latents), ≤ 10 min on 2 CPU cores;
    # how each value was chosen, with what it bought: docs/text_to_image_recipe.md
    "shapes": dict(autoencoder="shapes-32", image_size=8, patch_size=2, depth=4, heads=4, head_dim=32, text_length=11,
                   shift=3.0, batch_size=64, lr=3e-3, warmup_steps=100, max_steps=3000, bf16=True, data_workers=1,
                   sample_every=400, ckpt_every=400, eval_samples=64),
    # the stored course model (data/models/course): the main job's recipe without the shift (shift 1), trained
    # 22 000 steps (resumable: --resume); with shift 3 and 20 000 steps it learns faster early but ends lower on
    # count (docs/text_to_image_recipe.md)
    "shapes-course": dict(autoencoder="shapes-32", image_size=8, patch_size=2, depth=4, heads=4, head_dim=32,
                          text_length=11, batch_size=64, lr=3e-3, warmup_steps=100, max_steps=22_000, bf16=True,
                          data_workers=1, sample_every=2000, ckpt_every=500, eval_samples=128),
    # lesson 10: rendered words, read by a word-level (CLIP-like) and a character-level (T5-like) encoder,
    # each dropped with p = 0.3 (0.3² = 9 % of steps see no text; SD3: 0.463³ ≈ 10 % over three encoders)
    "glyphs": dict(data="glyphs", image_size=24, patch_size=4, depth=4, heads=4, head_dim=32, text_length=16,
                   text_encoders="word+char", p_uncond=0.3, batch_size=64, lr=2e-3, warmup_steps=100,
                   max_steps=3000, bf16=True, sample_every=500, ckpt_every=500, sample_steps=20, sample_cfg=3.0,
                   eval_samples=128),
    # class names as one-word captions ("zero" … "nine"), 8×8 digits from scikit-learn
    "digits": dict(data="digits", image_size=8, depth=3, heads=4, head_dim=32, batch_size=128, max_steps=3000,
                   sample_cfg=2.0),
    # CIFAR-10 pixels on one GPU: a B/2-class MM-DiT (size rule: hidden 64·depth, heads = depth)
    "cifar10": dict(data="cifar10", image_size=32, depth=12, heads=12, head_dim=64, batch_size=256, lr=2e-4,
                    warmup_steps=1000, max_steps=100_000, ema_decay=0.9999, log_every=100, sample_every=5000,
                    ckpt_every=5000, compile=True, bf16=True, sample_steps=50, sample_cfg=1.5, eval_samples=10_000),
    # any ImageFolder (ImageNet's train/) at 256², encoded once to 32×32 latents by an f = 8 autoencoder
    # (e.g. SD3's VAE: python -m minisd3 encode-latents --data imagefolder --data-root ROOT
    #  --autoencoder VAE_DIR --out data/latents/imagefolder-256 --dtype float16); captions = class folder names
    "imagenet-latents": dict(data="imagefolder", latents="data/latents/imagefolder-256", image_size=32, depth=12,
                             heads=12, head_dim=64, batch_size=256, lr=1e-4, warmup_steps=1000, max_steps=200_000,
                             ema_decay=0.9999, log_every=100, sample_every=5000, ckpt_every=5000, compile=True,
                             bf16=True, sample_steps=50, sample_cfg=3.0, eval_samples=10_000),
}


def preset_config(name: str) -> TrainConfig:
    """The config of a named preset, with the closest valid name suggested for a typo."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}{hint}")
    return TrainConfig(**PRESETS[name])


def _parse_value(name: str, kind: type, text: str):
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{name}: expected a boolean (true/false), got {text!r}")
    try:
        return kind(text)
    except ValueError as err:
        raise ValueError(f"{name}: expected {kind.__name__}, got {text!r}") from err


KEY_ALIASES = {"learning_rate": "lr", "steps": "max_steps", "batch": "batch_size", "cfg": "sample_cfg",
               "guidance_scale": "sample_cfg", "p_drop": "p_uncond", "ema": "ema_decay", "size": "image_size"}
"""Names other code bases use for a config key, answered with ours in the unknown-key message."""


def apply_overrides(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings; an unknown key gets the closest valid key suggested and the list of keys."""
    types = {f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type] for f in fields(TrainConfig)}
    changes = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set: expected key=value, got {assignment!r}")
        key, value = assignment.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in types:
            close = ([KEY_ALIASES[key]] if key in KEY_ALIASES else difflib.get_close_matches(key, types, n=1)
                     or [k for k in types if k in key or key in k][:1])
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"--set: unknown key {key!r}; {hint}the keys are {', '.join(types)}")
        changes[key] = _parse_value(key, types[key], value)
    return dataclasses.replace(config, **changes).validate()


GLYPH_WORD_TOKENS = 8
"""Tokens the word-level encoder of a glyphs model reads ([BOS] and up to seven words; captions have three)."""


def build_text_encoder(config: TrainConfig, vocabulary):
    """One word-level :class:`SmallTextEncoder`, or for glyphs a :class:`MultiTextEncoder` of the named
    encoders: "word" (vocabulary words, unknown ones → [UNK]; gives the pooled vector, as CLIP) and
    "char" (one token per character, as T5 on bytes: tokens only)."""
    heads = max(1, config.text_dim // 32)
    if config.data != "glyphs":
        return SmallTextEncoder(WordTokenizer(vocabulary, config.text_length), dim=config.text_dim,
                                depth=config.text_depth, heads=heads)
    tokenizers = {"word": WordTokenizer(vocabulary, GLYPH_WORD_TOKENS, unknown=True),
                  "char": CharTokenizer(max_length=config.text_length)}
    encoders = {name: SmallTextEncoder(tokenizers[name], dim=config.text_dim, depth=config.text_depth, heads=heads,
                                       gives_pooled=name == "word") for name in config.text_encoder_names}
    return MultiTextEncoder(encoders, width=config.text_dim)


def build_model(config: TrainConfig, vocabulary, channels: int) -> TextToImage:
    """The MM-DiT + small text encoder(s) a config describes."""
    encoder = build_text_encoder(config, vocabulary)
    mmdit = MMDiTConfig(input_size=config.image_size, in_channels=channels, patch_size=config.patch_size,
                        depth=config.depth, heads=config.heads, head_dim=config.head_dim,
                        context_dim=encoder.context_dim, pooled_dim=encoder.pooled_dim, qk_norm=config.qk_norm,
                        position_base=config.position_base // config.patch_size or None,
                        position_layout=config.positions)
    return TextToImage(mmdit, encoder)
