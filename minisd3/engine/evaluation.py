"""Evaluating a text-to-image checkpoint: offline metrics that need no download, and FID.

    shapes          prompt adherence (mini GenEval, :mod:`minisd3.adherence`) on prompts of held-out
                    (colour, shape) pairs and, as the reference, of training pairs; each beside
                    its chance rate (the same images scored against other images' prompts)
    glyphs          spelling (:mod:`minisd3.spelling`): character and exact-word accuracy on held-out
                    words and on training words, each beside its chance rate
    every data set  sliced Wasserstein distance between generated and real images (pixels)
    validation loss shapes: SD3's protocol (:mod:`minisd3.validation_loss`) on scenes of held-out pairs, fixed t
                    levels and fixed noise, so checkpoints and model sizes are compared on the same problems
    FID             Fréchet Inception Distance against the real training images, through
                    torch-fidelity; needs the Inception weights file on disk (never downloaded here)
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..adherence import ATTRIBUTES, average_scores, chance_report, prompt_scores
from ..digits import to_uint8
from ..files import write_text_atomic
from ..metrics import sliced_wasserstein
from ..seeding import make_generator
from ..spelling import chance_spelling, read_words, score_spelling
from ..text_to_image import TextToImage
from ..validation_loss import validation_loss
from .grids import HELD_OUT_HEADER, TRAIN_HEADER, WORD_HEADERS, save_labelled_grid

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
ADHERENCE_KEYS = ("adherence", "chance", "adherence_train_pairs", "chance_train_pairs")
"""The adherence reports :func:`evaluate` gives for shapes: held-out pairs, their chance, training pairs, theirs."""
SETTING_COLUMNS = ("steps", "method", "cfg", "shift", "samples", "sliced_wasserstein")


SPELLING_KEYS = ("spelling", "spelling_chance", "spelling_train_words", "spelling_train_words_chance")
"""The spelling reports :func:`evaluate` gives for glyphs: held-out words, their chance, training words, theirs."""
SPELLING_METRICS = ("characters", "words")


def spelling_columns() -> tuple[str, ...]:
    """``spelling_characters``, ``spelling_words``, … one column per metric of each of :data:`SPELLING_KEYS`."""
    return tuple(f"{key}_{m}" for key in SPELLING_KEYS for m in SPELLING_METRICS)


def adherence_columns() -> tuple[str, ...]:
    """One column per attribute (and overall) of each report of :data:`ADHERENCE_KEYS`:
    ``adherence_colour`` … on held-out pairs, ``chance_colour`` … their chance rate,
    ``adherence_train_pairs_colour`` … on training pairs, ``chance_train_pairs_colour`` … theirs."""
    return tuple(f"{key}_{a}" for key in ADHERENCE_KEYS for a in (*ATTRIBUTES, "overall"))


def flatten_scores(result: dict) -> dict[str, float]:
    """The adherence (shapes) and spelling (glyphs) reports of an :func:`evaluate` result as ``{column: value}``
    (:func:`adherence_columns`, :func:`spelling_columns`), and its ``validation_loss`` when measured."""
    scores = {f"{key}_{a}": v for key in (*ADHERENCE_KEYS, *SPELLING_KEYS) for a, v in result.get(key, {}).items()}
    if "validation_loss" in result:
        scores["validation_loss"] = result["validation_loss"]
    return scores


def score_columns(result: dict) -> tuple[str, ...]:
    """The score columns a result has: adherence columns for shapes, spelling columns for glyphs, then
    ``validation_loss`` where it was measured."""
    return ((adherence_columns() if "adherence" in result else ()) + (spelling_columns() if "spelling" in result else ())
            + (("validation_loss",) if "validation_loss" in result else ()))


def eval_columns() -> tuple[str, ...]:
    """The eval CSV's columns: the setting, then every metric (adherence for shapes, spelling for glyphs, the
    validation loss, FID)."""
    return (*SETTING_COLUMNS, *adherence_columns(), *spelling_columns(), "validation_loss", "fid")


def eval_table(results: list[dict]) -> str:
    """A short text table of :func:`evaluate` results, one line per setting: held-out and training-pair
    adherence (all attributes at once) each with its chance rate, per-attribute held-out adherence,
    sliced Wasserstein distance (and the validation loss and FID when measured)."""
    shapes = any("adherence" in r for r in results)
    val = all("validation_loss" in r for r in results)
    glyphs = any("spelling" in r for r in results)
    fid = any("fid" in r for r in results)
    head = f"{'steps':>5} {'cfg':>5}"
    if glyphs:
        head += (f" {'held-out words':>14} {'(chance)':>8} {'characters':>10} {'(chance)':>8}"
                 f" {'train words':>11} {'(chance)':>8}")
    if shapes:
        head += f" {'held-out all':>13} {'(chance)':>8} {'train-pairs all':>15} {'(chance)':>8} " + " ".join(
            f"{a:>8}" for a in ATTRIBUTES)
    head += f" {'sliced W':>9}" + (f" {'val loss':>8}" if val else "") + (f" {'FID':>7}" if fid else "")
    lines = [head]
    for r in results:
        line = f"{r['steps']:>5} {r['cfg']:>5g}"
        if glyphs:
            line += (f" {r['spelling']['words']:>14.2f} {r['spelling_chance']['words']:>8.2f}"
                     f" {r['spelling']['characters']:>10.2f} {r['spelling_chance']['characters']:>8.2f}"
                     f" {r['spelling_train_words']['words']:>11.2f} {r['spelling_train_words_chance']['words']:>8.2f}")
        if shapes:
            line += (f" {r['adherence']['overall']:>13.2f} {r['chance']['overall']:>8.2f}"
                     f" {r['adherence_train_pairs']['overall']:>15.2f} {r['chance_train_pairs']['overall']:>8.2f} "
                     + " ".join(f"{r['adherence'].get(a, float('nan')):>8.2f}" for a in ATTRIBUTES))
        line += (f" {r['sliced_wasserstein']:>9.4f}" + (f" {r['validation_loss']:>8.4f}" if val else "")
                 + (f" {r['fid']:>7.2f}" if fid else ""))
        lines.append(line)
    if shapes:
        lines.append("adherence: fraction of prompts whose attribute the detector reads in the image; held-out = "
                     "colour–shape pairs never trained on; chance = the same images scored against other prompts")
    if glyphs:
        lines.append("spelling: exact words and characters the reader finds; held-out = words never trained on; "
                     "chance = the same images read against other prompts")
    if val:
        lines.append("val loss: the rectified-flow loss on held-out scenes at t = 0, 1/7 … 6/7 with fixed noise "
                     "(SD3's validation loss; lower is better)")
    return "\n".join(lines)


def write_eval_results(results: list[dict], path: str | Path, checkpoint: str | Path) -> None:
    """:func:`evaluate` results to ``path``, atomically: a CSV (:func:`write_eval_csv`) for a ``.csv`` name,
    else JSON ``{"checkpoint": …, "results": [...]}`` with every number (non-finite ones as null)."""
    if Path(path).suffix.lower() == ".csv":
        write_eval_csv(results, path)
    else:
        write_text_atomic(path, json.dumps({"checkpoint": str(checkpoint), "results": json_safe(results)}, indent=1,
                                           allow_nan=False))


def write_eval_csv(results: list[dict], path: str | Path) -> None:
    """One row per evaluated setting (step count, guidance scale) of :func:`evaluate` results, written atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    columns = eval_columns()
    writer.writerow(columns)
    for result in results:
        row = {**result, **flatten_scores(result)}
        writer.writerow([row.get(column, "") for column in columns])
    write_text_atomic(path, text.getvalue())


@torch.no_grad()
def generate(model: TextToImage, prompts: list[str], steps: int, cfg: float, shift: float, seed: int,
             batch: int = 64, method: str = "euler", to_images: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> torch.Tensor:
    """Images in [−1, 1] for ``prompts``, in batches, reproducible from ``seed``.

    ``to_images`` turns the model's samples into images (a latent model's decoder, ``source.to_images``).
    """
    generator = make_generator(seed)
    decode = to_images or (lambda x: x)
    chunks = [decode(model.sample(prompts[i:i + batch], steps=steps, cfg=cfg, shift=shift, method=method,
                                  generator=generator)).float().cpu() for i in range(0, len(prompts), batch)]
    return torch.cat(chunks).clamp(-1, 1)


def evaluate(model: TextToImage, source, n: int, steps: int, cfg: float, shift: float, seed: int,
             method: str = "euler", fid_reference: FIDReference | None = None) -> dict:
    """Metrics of ``n`` samples for the source's evaluation prompts (held-out ones for shapes).

    Always the offline metrics, which need no download: sliced Wasserstein to ``n`` real images
    and, for shapes, prompt adherence (attribute → fraction in [0, 1]) with its chance rate, and the
    overall verdict of each prompt in order (0 or 1: all attributes right), for paired comparisons:

        adherence, chance, verdicts                n prompts of held-out (colour, shape) pairs
        adherence_train_pairs, chance_train_pairs, verdicts_train_pairs
                                                   n more samples, prompts of training pairs

    (the training-pair samples start from the same noise, so the two sets differ only in their
    prompts), and the validation loss on ``n`` scenes of held-out pairs (:mod:`minisd3.validation_loss`,
    noise fixed by ``seed``). With a ``fid_reference`` (:func:`fid_reference_for`) also FID of the first samples
    against the real image set. For a latent source the real side is the autoencoder's
    reconstruction of the data, so distances measure the diffusion model alone.
    """
    device = next(model.parameters()).device
    prompts = source.eval_prompts(n, make_generator(seed + 1))
    images = generate(model, prompts, steps, cfg, shift, seed, method=method, to_images=source.to_images)
    real, _ = getattr(source, "eval_batch", source.batch)(10_000_000 + seed, n, make_generator(seed + 2))
    real = source.to_images(real.to(device)).float().cpu().clamp(-1, 1)
    result = {"samples": n, "steps": steps, "method": method, "cfg": cfg, "shift": shift,
              "sliced_wasserstein": sliced_wasserstein(images, real)}
    split = getattr(source, "split", None)
    if split is not None:  # shapes: prompts the detector can score
        verdicts = prompt_scores(images, prompts)
        result["adherence"] = average_scores(verdicts)
        result["verdicts"] = [int(v["overall"]) for v in verdicts]
        result["chance"] = chance_report(images, prompts, make_generator(seed + 3))
        train_prompts = split.train_captions(n, make_generator(seed + 4), images.shape[-1])
        train_images = generate(model, train_prompts, steps, cfg, shift, seed, method=method,
                                to_images=source.to_images)
        verdicts = prompt_scores(train_images, train_prompts)
        result["adherence_train_pairs"] = average_scores(verdicts)
        result["verdicts_train_pairs"] = [int(v["overall"]) for v in verdicts]
        result["chance_train_pairs"] = chance_report(train_images, train_prompts, make_generator(seed + 5))
    if hasattr(source, "held_out_batch"):  # shapes drawn on the fly: scenes of held-out pairs
        x0, captions = source.held_out_batch(n, make_generator(seed + 6))
        result["validation_loss"] = validation_loss(model, x0, captions, seed=seed + 7)["loss"]
    words = getattr(source, "words", None)
    if words is not None:  # glyphs: prompts the reader can score
        result["spelling"] = score_spelling(images, prompts)
        result["spelling_chance"] = chance_spelling(images, prompts, make_generator(seed + 3))
        train_prompts = words.captions(n, make_generator(seed + 4), held_out=False)
        train_images = generate(model, train_prompts, steps, cfg, shift, seed, method=method)
        result["spelling_train_words"] = score_spelling(train_images, train_prompts)
        result["spelling_train_words_chance"] = chance_spelling(train_images, train_prompts, make_generator(seed + 5))
    if fid_reference is not None:
        result["fid"] = fid_reference.score(images)
        result["fid_reference"] = fid_reference.count
    return result


def inception_weights(path: str | None = None) -> Path:
    """The Inception weights torch-fidelity needs: ``path``, or its file in torch hub's cache."""
    candidate = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not candidate.is_file():
        raise FileNotFoundError(
            f"inception_weights: expected torch-fidelity's Inception weights at {candidate}. FID needs them and "
            f"they are not downloaded here: fetch {INCEPTION_FILE} from torch-fidelity's releases once on a "
            "machine with internet and pass --inception-weights PATH (or place it in that cache folder)."
        )
    return candidate


class _Uint8Images(torch.utils.data.Dataset):
    """Images in [−1, 1] as the uint8 RGB tensors torch-fidelity reads (grey repeated on three channels)."""

    def __init__(self, images: torch.Tensor):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected (N, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
        self.images = to_uint8(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


class FIDReference:
    """The real set's Inception statistics (μ_r, Σ_r), computed once; :meth:`score` gives FID of a sample set.

    FID = ‖μ_g − μ_r‖² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^½) over torch-fidelity's Inception-v3 pool
    features (2048 channels; it resizes images to 299² itself). ``weights``: the Inception file
    (see :func:`inception_weights`). Images are in [−1, 1], (N, 1 or 3, H, W).
    """

    def __init__(self, real: torch.Tensor, weights: str | None = None, cuda: bool = False, batch: int = 64):
        from torch_fidelity.utils import create_feature_extractor

        real_uint8 = _Uint8Images(real)
        self.cuda, self.batch, self.count = cuda, batch, len(real)
        self.extractor = create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda, verbose=False,
                                                  feature_extractor_weights_path=str(inception_weights(weights)))
        self.statistics = self._statistics(real_uint8)

    def _statistics(self, images: _Uint8Images) -> dict:
        from torch_fidelity.metric_fid import fid_features_to_statistics
        from torch_fidelity.utils import get_featuresdict_from_dataset

        features = get_featuresdict_from_dataset(images, self.extractor, self.batch, self.cuda, save_cpu_ram=True,
                                                 verbose=False)
        return fid_features_to_statistics(features["2048"])

    def score(self, generated: torch.Tensor) -> float:
        """FID between ``generated`` and the reference set."""
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

        statistics = self._statistics(_Uint8Images(generated))
        return float(fid_statistics_to_metric(statistics, self.statistics, verbose=False)[KEY_METRIC_FID])


def fid(generated: torch.Tensor, real: torch.Tensor, weights: str | None = None, cuda: bool = False) -> float:
    """Fréchet Inception Distance between two image sets in [−1, 1] (see :class:`FIDReference`)."""
    return FIDReference(real, weights, cuda).score(generated)


def fid_reference_for(source, weights: str | None = None, limit: int | None = None,
                      device: torch.device | str = "cpu") -> FIDReference:
    """The FID reference of a data source: its first ``limit`` images (all by default) in a fixed random order.

    For a latent source these are decoded, so FID compares decoded samples with decoded data.
    """
    if not hasattr(source, "images"):
        raise ValueError("fid: FID compares with a real image set; shapes are generated on the fly, "
                         "use the offline metrics (sliced Wasserstein, adherence)")
    device = torch.device(device)
    order = torch.randperm(len(source.images), generator=make_generator(0))[:limit]
    real = torch.cat([source.to_images(source.images[order[i:i + 256]].float().to(device)).float().cpu()
                      for i in range(0, len(order), 256)]).clamp(-1, 1)
    return FIDReference(real, weights, cuda=device.type == "cuda")


@torch.no_grad()
def save_sample_grid(model: TextToImage, source, path: str | Path, steps: int, cfg: float, shift: float, seed: int,
                     n: int = 16) -> list[str]:
    """Sample ``n`` prompts with the EMA model into a labelled PNG grid (:mod:`minisd3.engine.grids`, latents
    decoded) and write the prompts, one a line, to the ``.txt`` beside it; returns the prompts.

    For shapes (a source with a ``split``) the first ⌈n/2⌉ prompts use held-out (colour, shape)
    pairs and the rest training pairs, each half under its own header, every image with the
    detector's verdict; glyphs likewise with held-out and training words, each image with what the
    reader reads in it; other sources sample ``n`` evaluation prompts (captions only).
    """
    split, words = getattr(source, "split", None), getattr(source, "words", None)
    generator = make_generator(seed + 17)
    n_train = n // 2
    if split is not None:
        prompts = source.eval_prompts(n - n_train, generator) + split.train_captions(n_train, generator)
    elif words is not None:
        prompts = source.eval_prompts(n - n_train, generator) + words.captions(n_train, generator, held_out=False)
    else:
        prompts, n_train = source.eval_prompts(n, generator), 0
    held_out = [True] * (n - n_train) + [False] * n_train if n_train else None
    images = source.to_images(model.sample(prompts, steps=steps, cfg=cfg, shift=shift,
                                           generator=make_generator(seed + 23)))
    save_labelled_grid(path, images, prompts, held_out, verdicts=split is not None,
                       notes=reading_notes(images, prompts) if words is not None else None,
                       headers=WORD_HEADERS if words is not None else (HELD_OUT_HEADER, TRAIN_HEADER),
                       title=f"{Path(path).stem}: EMA samples, {steps} steps, cfg {cfg}")
    write_text_atomic(Path(path).with_suffix(".txt"), "\n".join(prompts))
    return prompts


def reading_notes(images: torch.Tensor, prompts: list[str]) -> list[str]:
    """One line per glyph image for a grid: what the reader reads, ✔ when it is the prompt's word."""
    marks = [score_spelling(image[None], [prompt])["words"] == 1.0 for image, prompt in zip(images, prompts)]
    return [f"read: {word or '(blank)'} {'✔' if ok else '✘'}" for word, ok in zip(read_words(images), marks)]


def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
