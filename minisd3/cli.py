"""The training-side commands of ``python -m minisd3``: train, sample, eval, bench.

    python -m minisd3 train --preset shapes --out runs/shapes [--set key=value ...] [--max-steps N] [--resume DIR]
    torchrun --nproc-per-node=N -m minisd3 train --preset cifar10 --out runs/c10
    python -m minisd3 sample --ckpt runs/shapes --prompt "two red circles above one blue square" --out a.png
    python -m minisd3 eval --ckpt runs/shapes --steps 5 10 20 50 --out sweep.csv [--fid --inception-weights PATH]

Latent space (lesson 08, :mod:`minisd3.engine.latent_cache`): train or bring an autoencoder, encode the data once, train on it

    python -m minisd3 autoencoder --data cifar10 --channels 4 --factor 4 --out runs/ae-c10
    python -m minisd3 encode-latents --data cifar10 --autoencoder runs/ae-c10 --out data/latents/c10
    python -m minisd3 train --preset cifar10 --set latents=data/latents/c10 --set image_size=8 --out runs/c10-latent
    python -m minisd3 encode-latents --data imagefolder --data-root ROOT --autoencoder VAE --out data/latents/imagefolder-256
    python -m minisd3 train --preset imagenet-latents --out runs/imagenet
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from .files import write_text_atomic


def _train(args: argparse.Namespace) -> int:
    from .engine.config import apply_overrides, preset_config
    from .engine.loop import train

    overrides = list(args.set or [])
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    config = apply_overrides(preset_config(args.preset), overrides)
    summary = train(config, args.out, resume=args.resume, progress=not args.quiet)
    if summary:
        print(json.dumps(summary, indent=1))
    return 0


def load_run(ckpt: str, weights: str = "ema", device: str = "cpu"):
    """(model, config, checkpoint folder) rebuilt from a checkpoint or stored model name, with its EMA (or raw) weights."""
    from .engine.checkpoints import load_state, load_tensors, resolve_checkpoint
    from .engine.config import TrainConfig
    from .engine.loop import build_model
    from .env import get_device
    from .files import load_weights_into

    folder = resolve_checkpoint(ckpt)
    state = load_state(folder)
    config = TrainConfig(**state["config"])
    model = build_model(config, state["vocabulary"], state["channels"])
    load_weights_into(model, load_tensors(folder, f"{weights}.safetensors"), weights)
    return model.to(get_device(device)).eval(), config, folder


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_sample_flags(args: argparse.Namespace) -> None:
    """Refuse flags of ``sample`` that cannot work, naming the flag, before the checkpoint is loaded."""
    if args.n < 1:
        raise ValueError(f"--n: expected a positive number of samples, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps: expected a positive number of steps, got {args.steps}")
    if args.cfg is not None and not math.isfinite(args.cfg):
        raise ValueError(f"--cfg: expected a finite guidance scale, got {args.cfg}")
    if args.shift is not None and not 0 < args.shift < math.inf:
        raise ValueError(f"--shift: expected a positive finite shift α, got {args.shift}")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out: expected an image file name, got {args.out!r}, an existing directory")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--out: expected a file name ending in one of {', '.join(IMAGE_SUFFIXES)}, got {args.out!r}")


def _sample(args: argparse.Namespace) -> int:
    from .engine.data import make_source
    from .engine.grids import save_labelled_grid
    from .seeding import make_generator

    check_sample_flags(args)
    model, config, _ = load_run(args.ckpt, "model" if args.no_ema else "ema", args.device)
    steps = config.sample_steps if args.steps is None else args.steps  # unset flags: the run's own settings
    cfg = config.sample_cfg if args.cfg is None else args.cfg
    shift = config.shift if args.shift is None else args.shift
    # the source gives class names, the latent decoder and the shapes split; CIFAR-10 is only read for --label
    source = make_source(config) if args.label is not None or config.latents or config.data == "shapes" else None
    if args.label is not None:
        names = getattr(source, "class_names", None)
        if names is None:
            raise ValueError(f"--label: the {config.data!r} model is conditioned on captions; use --prompt")
        if not 0 <= args.label < len(names):
            raise ValueError(f"--label: expected 0 … {len(names) - 1}, got {args.label}")
        prompt = names[args.label]
    else:
        prompt = args.prompt
    split = getattr(source, "split", None)  # shapes: tag the prompt's pairs, show the detector's verdicts
    held_out = [split.is_held_out(prompt)] * args.n if split is not None else None  # parses the caption first
    images = model.sample([prompt] * args.n, steps=steps, cfg=cfg, shift=shift, method=args.method,
                          generator=make_generator(args.seed))
    if source is not None:  # latents (a cache, or shapes encoded on the fly) are decoded; pixels pass through
        images = source.to_images(images)
    save_labelled_grid(args.out, images, [prompt] * args.n, held_out, verdicts=split is not None,
                       title=f"{prompt!r}: {steps} {args.method} steps, cfg {cfg}, shift {shift}, seed {args.seed}")
    print(f"{args.out}: {args.n} samples of {prompt!r} ({steps} {args.method} steps, cfg {cfg}, shift {shift})")
    return 0


def eval_columns() -> tuple[str, ...]:
    """The eval CSV's columns: the setting, then every metric.

    For shapes, one column per attribute (and overall) of each report of
    :data:`~minisd3.engine.evaluation.ADHERENCE_KEYS`: ``adherence_colour`` … on held-out pairs,
    ``chance_colour`` … their chance rate, ``adherence_train_pairs_colour`` … on training pairs,
    ``chance_train_pairs_colour`` … theirs.
    """
    from .adherence import ATTRIBUTES
    from .engine.evaluation import ADHERENCE_KEYS

    adherence = tuple(f"{key}_{a}" for key in ADHERENCE_KEYS for a in (*ATTRIBUTES, "overall"))
    return ("steps", "method", "cfg", "shift", "samples", "sliced_wasserstein", *adherence, "fid")


def write_eval_csv(results: list[dict], path: Path) -> None:
    """One row per evaluated setting (step count, guidance scale), written atomically (a temporary file renamed over ``path``)."""
    from .engine.evaluation import ADHERENCE_KEYS

    text = io.StringIO()
    writer = csv.writer(text)
    columns = eval_columns()
    writer.writerow(columns)
    for result in results:
        row = {**result, **{f"{key}_{k}": v for key in ADHERENCE_KEYS for k, v in result.get(key, {}).items()}}
        writer.writerow([row.get(column, "") for column in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text.getvalue())


def _eval(args: argparse.Namespace) -> int:
    from .engine.data import make_source
    from .engine.evaluation import evaluate, fid_reference_for

    model, config, folder = load_run(args.ckpt, "ema", args.device)
    source = make_source(config)
    device = next(model.parameters()).device
    reference = fid_reference_for(source, args.inception_weights, args.fid_real, device) if args.fid else None
    step_counts, scales = args.steps or [config.sample_steps], args.cfg or [config.sample_cfg]
    if min(step_counts) < 1:
        raise ValueError(f"--steps: expected positive step counts, got {min(step_counts)}")
    results = []
    for cfg in scales:
        for steps in step_counts:
            results.append(evaluate(model, source, args.samples, steps, cfg, config.shift, args.seed, args.method,
                                    reference))
            if args.out:  # rewritten after every setting: a long sweep keeps what it has measured
                write_eval_csv(results, Path(args.out))
    print(json.dumps({"checkpoint": str(folder), "results": results}, indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .engine.checkpoints import export_weights

    out = export_weights(args.ckpt, args.out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"{out}: EMA weights (float16) and state.json of {args.ckpt}, {size:.1f} MiB; sample with --ckpt {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .engine.benchmark import run_benchmark

    run_benchmark(device=args.device, steps=args.steps, batch=args.batch, compile_too=not args.no_compile,
                  diffusers_too=not args.no_diffusers)
    return 0


def add_commands(sub) -> None:
    """Register train, sample, eval, bench, autoencoder and encode-latents on an argparse sub-parser set."""
    from .engine.latent_cache import autoencoder_command, encode_latents_command

    p = sub.add_parser("train", help="train a text-conditioned MM-DiT from a preset")
    p.add_argument("--preset", default="shapes", help="shapes (default, CPU), digits, cifar10, imagenet-latents")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--max-steps", type=int, help="same as --set max_steps=N")
    p.add_argument("--out", required=True, help="run directory: metrics.csv, samples/, checkpoints/")
    p.add_argument("--resume", help="continue a run exactly from its latest checkpoint (a run directory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=lambda a, h=_train: run_guarded(h, a))

    p = sub.add_parser("sample", help="sample images from a checkpoint")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="a caption in the data set's vocabulary")
    what.add_argument("--label", type=int, help="a class index (digits, cifar10)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's sample_steps)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale w (default: the run's sample_cfg)")
    p.add_argument("--shift", type=float, help="resolution shift α of the time grid (default: the run's shift)")
    p.add_argument("--method", choices=["euler", "heun"], default="euler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=8, help="how many samples")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help=f"image file ({', '.join(IMAGE_SUFFIXES)})")
    p.set_defaults(handler=lambda a, h=_sample: run_guarded(h, a))

    p = sub.add_parser("eval", help="evaluate a checkpoint (offline metrics; FID with --fid)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, nargs="+", help="sampling steps; several give a sweep (default: the run's)")
    p.add_argument("--method", choices=["euler", "heun"], default="euler")
    p.add_argument("--cfg", type=float, nargs="+", help="guidance scales; several give a sweep (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid", action="store_true", help="also FID against the real images (torch-fidelity)")
    p.add_argument("--fid-real", type=int, help="how many real images FID compares with (default: all)")
    p.add_argument("--inception-weights", help="path of torch-fidelity's Inception weights file")
    p.add_argument("--out", help="CSV file with one row per setting (steps, cfg)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=lambda a, h=_eval: run_guarded(h, a))

    p = sub.add_parser("export", help="keep a run's EMA weights in float16 as a small stored model (sample/eval load it)")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint folder")
    p.add_argument("--out", required=True, help="folder for ema.safetensors and state.json (e.g. data/models/course)")
    p.set_defaults(handler=lambda a, h=_export: run_guarded(h, a))

    p = sub.add_parser("bench", help="training throughput and MFU, minisd3 against diffusers")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 4 on CPU")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-diffusers", action="store_true")
    p.set_defaults(handler=lambda a, h=_bench: run_guarded(h, a))

    p = sub.add_parser("autoencoder", help="train a small KL autoencoder, fit latent scale and shift, report PSNR/SSIM")
    p.add_argument("--data", choices=["shapes", "digits", "cifar10"], default="shapes")
    p.add_argument("--data-root", default="data/datasets", help="where CIFAR-10 is (or goes with --download)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 first (about 170 MB)")
    p.add_argument("--image-size", type=int, help="pixel side (default: 8 digits, 32 shapes and CIFAR-10)")
    p.add_argument("--count", type=int, default=10_000, help="how many shapes images to generate")
    p.add_argument("--channels", type=int, default=4, choices=[4, 8, 16], help="latent channels")
    p.add_argument("--factor", type=int, default=4, choices=[2, 4], help="downsampling factor f")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv (doubled at each downsampling)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=1e-4, help="weight of the KL term")
    p.add_argument("--loss", choices=["mse", "l1"], default="mse", help="reconstruction loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="folder for autoencoder.safetensors and config.json")
    p.set_defaults(handler=lambda a, h=autoencoder_command: run_guarded(h, a))

    p = sub.add_parser("encode-latents", help="encode a data set once into a memory-mapped latent cache")
    p.add_argument("--data", choices=["shapes", "digits", "cifar10", "imagefolder"], required=True)
    p.add_argument("--data-root", default="data/datasets", help="CIFAR-10's folder, or the ImageFolder root")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 first (about 170 MB)")
    p.add_argument("--image-size", type=int, help="pixel side (default 8 digits, 32 shapes, CIFAR-10; 256 ImageFolder)")
    p.add_argument("--count", type=int, default=10_000, help="how many shapes images to generate")
    p.add_argument("--autoencoder", required=True, help="a folder made by the autoencoder command, or an AutoencoderKL")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes reading an ImageFolder")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage type of the latents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="cache folder (latents.npy, labels.npy, latents.json)")
    p.set_defaults(handler=lambda a, h=encode_latents_command: run_guarded(h, a))


def run_guarded(handler, args) -> int:
    """Run a command; known user errors print one clear line and exit 2 instead of a traceback."""
    from .engine.checkpoints import CheckpointError
    from .engine.data import MissingDatasetError
    from .engine.loop import NonFiniteLossError

    try:
        return handler(args)
    except (CheckpointError, MissingDatasetError, NonFiniteLossError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
