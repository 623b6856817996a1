"""Every command of ``python -m minisd3`` (or the ``minisd3`` script): all of argparse lives here.

Each handler parses nothing itself: it calls one engine or course function with keywords and prints.

Course (:mod:`minisd3.course`):

    execute NOTEBOOK... [--fast]        run lessons top to bottom and save them with their outputs
    exercises [--check]                 regenerate exercises/ from solutions/ (--check: list stale files, exit 1)
    grade NOTEBOOK|FOLDER|GLOB... [--out grades.csv] [--json] [--timeout S] [--notebook-timeout S]
                                        grade learners' copies, each in its own kernel: one row per notebook
                                        and a summary per check (exit 0 graded, 1 some could not run, 2 bad input)
    site --out site/                    the course website from the committed notebooks (none is run), offline

Training engine (:mod:`minisd3.engine`):

    python -m minisd3 train --preset shapes --out runs/shapes [--set key=value ...] [--max-steps N] [--resume DIR]
    torchrun --nproc-per-node=N -m minisd3 train --preset cifar10 --out runs/c10
    python -m minisd3 sample --ckpt runs/shapes --prompt "two red circles above one blue square" --out a.png
    python -m minisd3 eval --ckpt runs/shapes --steps 5 10 20 50 --out sweep.csv [--grid g.png] [--fid]
    python -m minisd3 export --ckpt runs/shapes --out data/models/NAME [--cfg W]
    python -m minisd3 bench [--device cuda]
    python -m minisd3 sweep --preset shapes --depths 2 3 4 6 --max-steps 1000 --out runs/scaling \
        --store data/runs/scaling     (hidden = 64·depth, heads = depth; resumable: run it again)

Latent space (lesson 08, :mod:`minisd3.engine.latent_cache`): train or bring an autoencoder, encode
the data once, train on it

    python -m minisd3 autoencoder --data cifar10 --channels 4 --factor 4 --out runs/ae-c10
    python -m minisd3 encode-latents --data cifar10 --autoencoder runs/ae-c10 --out data/latents/c10
    python -m minisd3 train --preset cifar10 --set latents=data/latents/c10 --set image_size=8 --out runs/c10-latent
    python -m minisd3 encode-latents --data imagefolder --data-root ROOT --autoencoder VAE --out data/latents/in-256
    python -m minisd3 train --preset imagenet-latents --out runs/imagenet
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from .engine.config import apply_overrides, preset_config
    from .engine.loop import train_run

    overrides = list(args.set or [])
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.init_from is not None:
        overrides.append(f"init_from={args.init_from}")
    config = apply_overrides(preset_config(args.preset), overrides)
    if args.out is None and args.resume is None:
        raise ValueError("--out: expected a run directory (or --resume DIR to continue a run there), got none")
    out = Path(args.out if args.out is not None else args.resume)
    summary = train_run(config, out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if config.init_from and args.resume is None:
        print(f"started from the weights of {config.init_from} (EMA); optimizer, learning-rate schedule and EMA "
              f"started fresh")
    if "moved_aside" in summary:
        print(f"the previous run in {out} was moved to {summary['moved_aside']}")
    adherence = summary.get("evaluation", {}).get("adherence")
    score = f"; held-out adherence, all attributes: {adherence['overall']:.2f}" if adherence else ""
    print(f"{out}: trained to step {summary['step']}{score}; wrote metrics.csv, samples/, checkpoints/ and "
          f"summary.json there")
    return 0


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
    if out.is_file() and out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--out: expected a folder or an image file name, got {args.out!r}, an existing file")
    if out.suffix and not out.is_dir() and out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--out: expected a folder or a file name ending in one of {', '.join(IMAGE_SUFFIXES)}, "
                         f"got {args.out!r}")


def sample_size(pixels: list[int], source, config) -> tuple[int, int]:
    """``--size H W`` (image pixels) as the model's own (H, W): latents for a latent model (÷ f).

    Raises ValueError naming ``--size`` for sides that are not multiples of f × patch size, or (shapes)
    for a canvas the detector cannot read.
    """
    factor = source.factor if source is not None else 1
    step = factor * config.patch_size
    height, width = pixels
    if height < step or width < step or height % step or width % step:
        raise ValueError(f"--size: expected H W in pixels, positive multiples of {step} (autoencoder factor {factor} × "
                         f"patch size {config.patch_size}), got {height} {width}")
    if getattr(source, "split", None) is not None:  # shapes: a canvas the detector reads
        from .shapes import check_canvas

        check_canvas((height, width), "--size")
    return height // factor, width // factor


def _sample(args: argparse.Namespace) -> int:
    from .engine.checkpoints import load_run
    from .engine.evaluation import reading_notes
    from .engine.grids import HELD_OUT_HEADER, TRAIN_HEADER, WORD_HEADERS, save_images, save_labelled_grid
    from .engine.sources import make_source
    from .glyphs import word_of
    from .seeding import make_generator

    check_sample_flags(args)
    model, config, _ = load_run(args.ckpt, "model" if args.no_ema else "ema", args.device, name="--ckpt")
    steps = config.sample_steps if args.steps is None else args.steps  # unset flags: the run's own settings
    cfg = config.sample_cfg if args.cfg is None else args.cfg
    shift = config.shift if args.shift is None else args.shift
    # the source gives class names, the latent decoder and the shapes split; CIFAR-10 is only read for --label
    source = (make_source(config) if args.label is not None or config.latents or config.data in ("shapes", "glyphs")
              else None)
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
    words = getattr(source, "words", None)  # glyphs: tag a held-out word, show what the reader reads
    if split is not None:
        held_out = [split.is_held_out(prompt)] * args.n  # parses the caption first
    elif words is not None:
        held_out = [word_of(prompt, "--prompt") not in words.train] * args.n
    else:
        held_out = None
    only = None
    if args.text_encoders is not None:
        names = getattr(model.text_encoder, "names", None)
        only = [n.strip() for n in args.text_encoders.split("+") if n.strip()]
        if names is None or not only or not set(only) <= set(names):
            raise ValueError(f"--text-encoders: expected names among {names or ('(this model reads one encoder)',)} "
                             f"joined by '+', got {args.text_encoders!r}")
    size = sample_size(args.size, source, config) if args.size is not None else None
    images = model.sample([prompt] * args.n, steps=steps, cfg=cfg, shift=shift, method=args.method,
                          generator=make_generator(args.seed), only=only, size=size)
    if source is not None:  # latents (a cache, or shapes encoded on the fly) are decoded; pixels pass through
        images = source.to_images(images)
    out = Path(args.out)
    folder = out.is_dir() or not out.suffix  # a folder: each sample as its own PNG, and the labelled grid
    grid = out / "grid.png" if folder else out
    save_labelled_grid(grid, images, [prompt] * args.n, held_out, verdicts=split is not None,
                       notes=reading_notes(images, [prompt] * args.n) if words is not None else None,
                       headers=WORD_HEADERS if words is not None else (HELD_OUT_HEADER, TRAIN_HEADER),
                       title=f"{prompt!r}: {steps} {args.method} steps, cfg {cfg}, shift {shift}, seed {args.seed}")
    written = [grid]
    if folder:
        written += save_images(images, out, "sample")
    print(f"{args.n} samples of {prompt!r} ({steps} {args.method} steps, cfg {cfg}, shift {shift}); wrote "
          + (f"{grid} and {written[1].name} … {written[-1].name} in {out}" if folder else str(grid)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .engine.checkpoints import load_run
    from .engine.evaluation import eval_table, evaluate, fid_reference_for, save_sample_grid, write_eval_results
    from .engine.sources import make_source

    model, config, folder = load_run(args.ckpt, "ema", args.device, name="--ckpt")
    source = make_source(config)
    device = next(model.parameters()).device
    reference = fid_reference_for(source, args.inception_weights, args.fid_real, device) if args.fid else None
    step_counts, scales = args.steps or [config.sample_steps], args.cfg or [config.sample_cfg]
    if min(step_counts) < 1:
        raise ValueError(f"--steps: expected positive step counts, got {min(step_counts)}")
    if args.grid and Path(args.grid).suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--grid: expected a file name ending in one of {', '.join(IMAGE_SUFFIXES)}, got {args.grid!r}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out: expected a file name ending in .csv or .json, got {args.out!r}")
    settings = [(cfg, steps) for cfg in scales for steps in step_counts]
    results = []
    for index, (cfg, steps) in enumerate(settings, 1):
        print(f"[{index}/{len(settings)}] {args.samples} samples, {steps} {args.method} steps, cfg {cfg} …", flush=True)
        results.append(evaluate(model, source, args.samples, steps, cfg, config.shift, args.seed, args.method,
                                reference))
        if out is not None:  # rewritten after every setting: a long sweep keeps what it has measured
            write_eval_results(results, out, folder)
    print(eval_table(results))
    written = [str(p) for p in (out, args.grid) if p]
    if args.grid:  # a labelled grid at the run's own setting when swept, else the last one: held-out, then training pairs
        steps = config.sample_steps if config.sample_steps in step_counts else step_counts[-1]
        cfg = config.sample_cfg if config.sample_cfg in scales else scales[-1]
        save_sample_grid(model, source, args.grid, steps, cfg, config.shift, args.seed)
    print(f"{folder}: {len(results)} setting(s) evaluated" + (f"; wrote {' and '.join(written)}" if written else
                                                             "; --out FILE.csv or FILE.json keeps every number"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .engine.checkpoints import export_weights

    if args.cfg is not None and not math.isfinite(args.cfg):
        raise ValueError(f"--cfg: expected a finite guidance scale, got {args.cfg}")
    out = export_weights(args.ckpt, args.out, sample_cfg=args.cfg)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"{out}: EMA weights (float16) and state.json of {args.ckpt}, {size:.1f} MiB; sample with --ckpt {out}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .engine.config import apply_overrides, preset_config
    from .engine.sweep import run_sweep, sweep_csv

    overrides = list(args.set or [])
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    config = apply_overrides(preset_config(args.preset), overrides)
    rows = run_sweep(config, args.depths, args.out, eval_steps=tuple(args.eval_steps), samples=args.samples,
                     store=args.store, progress=not args.quiet)
    print(sweep_csv(rows), end="")
    print(f"{args.out}: sweep.json, sweep.csv and one run per depth" + (f"; small files copied to {args.store}"
                                                                         if args.store else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .engine.benchmark import run_benchmark

    run_benchmark(device=args.device, steps=args.steps, batch=args.batch, compile_too=not args.no_compile,
                  diffusers_too=not args.no_diffusers)
    return 0


def _autoencoder(args: argparse.Namespace) -> int:
    from .engine.latent_cache import train_autoencoder_on

    result = train_autoencoder_on(args.data, args.out, data_root=args.data_root, image_size=args.image_size,
                                  count=args.count, channels=args.channels, factor=args.factor, width=args.width,
                                  steps=args.steps, batch=args.batch, lr=args.lr, beta=args.beta, loss=args.loss,
                                  seed=args.seed, device=args.device, download=args.download, progress=not args.quiet)
    print(json.dumps(result, indent=1))
    return 0


def _encode_latents(args: argparse.Namespace) -> int:
    from .engine.latent_cache import encode_latents

    result = encode_latents(args.data, args.autoencoder, args.out, data_root=args.data_root,
                            image_size=args.image_size, count=args.count, batch=args.batch, workers=args.workers,
                            dtype=args.dtype, seed=args.seed, device=args.device, download=args.download,
                            progress=not args.quiet)
    print(json.dumps(result, indent=1))
    return 0


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` ("auto": CUDA, else MPS, else the CPU; "cpu", "cuda", "cuda:N", "mps") and ``--threads``,
    the same in every command that computes."""
    parser.add_argument("--device", default="auto",
                        help="auto (default: CUDA if present, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    add_threads(parser)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads (:func:`minisd3.env.use_threads`)."""
    parser.add_argument("--threads", help="torch CPU threads (default: $MINISD3_THREADS, else 1: fastest for the "
                                          "course's models, measured in benchmarks/threads.py)")


def add_engine_commands(sub) -> None:
    """Register train, sample, eval, bench, autoencoder and encode-latents on an argparse sub-parser set."""
    from .engine import DATASETS

    p = sub.add_parser("train", help="train a text-conditioned MM-DiT from a preset")
    p.add_argument("--preset", default="shapes", help="shapes (default, CPU), digits, cifar10, imagenet-latents")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--max-steps", type=int, help="the run's length, same as --set max_steps=N: warm-up and the "
                                                 "cosine learning-rate decay are fitted to N steps")
    p.add_argument("--out", help="run directory: metrics.csv, samples/, checkpoints/ (must be new or empty)")
    p.add_argument("--resume", help="continue a run exactly from its latest checkpoint (a run directory; "
                                    "written back there unless --out names another)")
    p.add_argument("--overwrite", action="store_true", help="start over in a non-empty --out (the old run is moved aside)")
    p.add_argument("--init-from", help="fine-tune: start from the weights of another run or stored model (its EMA), "
                                       "e.g. on a larger canvas (--set image_size=16); optimizer, schedule and EMA "
                                       "start fresh; same as --set init_from=RUN")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
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
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="image height and width in pixels (default: the run's training canvas)")
    p.add_argument("--text-encoders", help="the text encoders to condition on, '+'-joined (a glyphs model: e.g. "
                                           "'word' samples without the character encoder, as SD3 without T5)")
    add_device(p)
    p.add_argument("--out", required=True, help=f"a folder (numbered PNGs and grid.png) or an image file for the "
                                                 f"labelled grid ({', '.join(IMAGE_SUFFIXES)})")
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
    p.add_argument("--out", help="FILE.csv (one row per setting: steps, cfg) or FILE.json (every number)")
    p.add_argument("--grid", help="PNG file: 16 labelled samples (shapes: 8 held-out, 8 training pairs) at the run's own "
                                  "steps and cfg if the sweep has them, else at its last setting")
    add_device(p)
    p.set_defaults(handler=lambda a, h=_eval: run_guarded(h, a))

    p = sub.add_parser("export", help="keep a run's EMA weights in float16 as a small stored model (sample/eval load it)")
    p.add_argument("--ckpt", required=True, help="run directory or checkpoint folder")
    p.add_argument("--out", required=True, help="folder for ema.safetensors and state.json (e.g. data/models/course)")
    p.add_argument("--cfg", type=float, help="the guidance scale w that sample and eval use by default (e.g. the one "
                                             "chosen on training prompts; default: the run's sample_cfg)")
    p.set_defaults(handler=lambda a, h=_export: run_guarded(h, a))

    p = sub.add_parser("sweep", help="train a preset at several depths (hidden 64·depth) and compare the sizes")
    p.add_argument("--preset", default="shapes", help="a shapes preset (the sweep scores adherence)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4, 6], help="model depths d (hidden 64·d, d heads)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value of every run")
    p.add_argument("--max-steps", type=int, help="each run's length (same as --set max_steps=N)")
    p.add_argument("--eval-steps", type=int, nargs="+", default=[1, 2, 4, 8, 20],
                   help="Euler step counts at which each finished model is scored")
    p.add_argument("--samples", type=int, help="prompts per score (default: the preset's eval_samples)")
    p.add_argument("--out", required=True, help="folder: depth-D run directories, sweep.json, sweep.csv")
    p.add_argument("--store", help="also copy the small files (no checkpoints) here, e.g. data/runs/scaling")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)
    p.set_defaults(handler=lambda a, h=_sweep: run_guarded(h, a))

    p = sub.add_parser("bench", help="training throughput and MFU, minisd3 against diffusers")
    add_device(p)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 4 on CPU")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-diffusers", action="store_true")
    p.set_defaults(handler=lambda a, h=_bench: run_guarded(h, a))

    p = sub.add_parser("autoencoder", help="train a small KL autoencoder, fit latent scale and shift, report PSNR/SSIM")
    p.add_argument("--data", choices=[d for d in DATASETS if d != "imagefolder"], default="shapes")
    p.add_argument("--data-root", default="data/datasets", help="where CIFAR-10 is (or goes with --download)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 first (about 170 MB)")
    p.add_argument("--image-size", type=int, help="pixel side (default: 8 digits, 32 shapes and CIFAR-10)")
    p.add_argument("--count", type=int, default=10_000, help="how many shapes images to generate")
    p.add_argument("--channels", type=int, default=4, choices=[4, 8, 16], help="latent channels")
    p.add_argument("--factor", type=int, default=4, choices=[2, 4, 8], help="downsampling factor f")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv (doubled at each downsampling)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=1e-4, help="weight of the KL term")
    p.add_argument("--loss", choices=["mse", "l1"], default="mse", help="reconstruction loss")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="folder for autoencoder.safetensors and config.json")
    p.set_defaults(handler=lambda a, h=_autoencoder: run_guarded(h, a))

    p = sub.add_parser("encode-latents", help="encode a data set once into a memory-mapped latent cache")
    p.add_argument("--data", choices=DATASETS, required=True)
    p.add_argument("--data-root", default="data/datasets", help="CIFAR-10's folder, or the ImageFolder root")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 first (about 170 MB)")
    p.add_argument("--image-size", type=int, help="pixel side (default 8 digits, 32 shapes, CIFAR-10; 256 ImageFolder)")
    p.add_argument("--count", type=int, default=10_000, help="how many shapes images to generate")
    p.add_argument("--autoencoder", required=True, help="a folder made by the autoencoder command, or an AutoencoderKL")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes reading an ImageFolder")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage type of the latents")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="cache folder (latents.npy, labels.npy, latents.json)")
    p.set_defaults(handler=lambda a, h=_encode_latents: run_guarded(h, a))


def run_guarded(handler, args) -> int:
    """Run a command; known user errors print one clear line and exit 2 instead of a traceback, Ctrl-C
    one line and exit 130 (after training, the line says where the checkpoint is and how to resume)."""
    from .engine.checkpoints import CheckpointError
    from .engine.data import MissingDatasetError
    from .engine.loop import NonFiniteLossError, TrainingInterrupted

    try:
        if hasattr(args, "threads"):
            from .env import use_threads

            use_threads(args.threads)
        return handler(args)
    except (CheckpointError, MissingDatasetError, NonFiniteLossError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); nothing more was written", file=sys.stderr)
        return 130


# --- course commands: execute, exercises, grade ---------------------------------------------------

def _execute(args: argparse.Namespace) -> int:
    from .course.notebooks import execute_notebook

    if args.out is None and not args.inplace:
        raise ValueError("--out: expected a folder for the executed notebooks (or --inplace to overwrite the "
                         "originals), got none")
    if args.out is not None and args.inplace:
        raise ValueError("--inplace: expected either --out FOLDER or --inplace, got both")
    if args.out is not None and Path(args.out).is_file():
        raise ValueError(f"--out: expected a folder, got {args.out!r}, a file")
    for path in args.notebooks:
        target = Path(path) if args.inplace else Path(args.out) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        _, seconds = execute_notebook(path, fast=args.fast, save_to=target, timeout=args.timeout)
        print(f"{path}: ran in {seconds:.1f} s ({'fast' if args.fast else 'full'} mode); wrote {target}")
    return 0


def _exercises(args: argparse.Namespace) -> int:
    from .course.exercises import stale_exercises, write_exercises
    from .course.nbgrader_metadata import stale_nbgrader_metadata, write_nbgrader_metadata

    try:
        if args.check:
            stale = stale_nbgrader_metadata(args.solutions) + stale_exercises(args.solutions, args.exercises)
            for path in stale:
                print(f"stale: {path}")
            if stale:
                print(f"{len(stale)} notebook(s) out of date (exercises, or the solutions' nbgrader metadata): "
                      "run `python -m minisd3 exercises`")
                return 1
            print(f"{args.exercises}/ is up to date with {args.solutions}/")
            return 0
        changed = write_nbgrader_metadata(args.solutions) + write_exercises(args.solutions, args.exercises)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'wrote' if path.exists() else 'removed'} {path}")
    print(f"{args.exercises}/ is up to date with {args.solutions}/ ({len(changed)} file(s) changed)")
    return 0


def _seconds(text: str) -> float:
    """argparse type of a time limit: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _grade(args: argparse.Namespace) -> int:
    """Exit 0 when every notebook was graded (whatever its score), 1 when some could not be graded,
    2 when nothing could be graded (bad arguments, nothing matched)."""
    from .course.gradebook import find_notebooks, grade_class
    from .files import write_text_atomic

    def progress(entry) -> None:
        if len(paths) > 1:
            done = (f"{entry.report.score:g}/{entry.report.max_score:g} points in {entry.report.seconds:.0f} s"
                    if entry.report else f"could not run: {entry.error}")
            print(f"{entry.student}: {done} ({entry.path})", file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        out = Path(args.out) if args.out is not None else None
        if out is not None and (out.suffix.lower() != ".csv" or out.is_dir()):
            raise ValueError(f"--out: expected a .csv file for the grades, got {args.out!r}")
        executed = out.with_name(f"{out.stem}_executed") if out is not None else None
        paths = find_notebooks(args.notebooks, skip=executed)
        book = grade_class(paths, lesson=args.lesson, solutions=args.solutions, cell_timeout=args.timeout,
                           notebook_timeout=args.notebook_timeout, executed_dir=executed, on_graded=progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out is not None:
        write_text_atomic(out, book.csv_text())
    if args.json:
        print(json.dumps(book.to_dict(), ensure_ascii=False, indent=1))
    elif len(book.entries) == 1 and book.entries[0].report is not None:
        print(book.entries[0].report.text())
    else:
        print(book.text())
    for entry in book.entries:
        if entry.report is None:
            print(f"error: {entry.error}", file=sys.stderr)
    if out is not None:
        print(f"wrote {out} and the executed notebooks in {executed}/", file=sys.stderr)
    return 0 if all(entry.report is not None for entry in book.entries) else 1


def _site(args: argparse.Namespace) -> int:
    """Exit 0 when the site was built, 1 when Sphinx warned (every warning fails the build), 2 for bad arguments."""
    from .course.site import SiteBuildError, build_site

    try:
        built = build_site(args.out, root=args.course, quiet=not args.verbose)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SiteBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {built.pages} pages to {built.out}/ in {built.seconds:.0f} s; open {built.out / 'index.html'} "
          f"(or: python -m http.server -d {built.out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command of ``python -m minisd3`` (module docstring)."""
    parser = argparse.ArgumentParser(prog="minisd3", description="minisd3 course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="run notebooks top to bottom and save their outputs")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--fast", action="store_true", help="fast mode (MINISD3_FAST=1)")
    run.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    run.add_argument("--out", help="folder for the executed notebooks (same file names)")
    run.add_argument("--inplace", action="store_true", help="overwrite the notebooks themselves with their new outputs")
    run.set_defaults(handler=lambda a, h=_execute: run_guarded(h, a))
    exercises = sub.add_parser("exercises", help="regenerate exercises/ from solutions/ (and the solutions' nbgrader "
                                                  "metadata from their check cells)")
    exercises.add_argument("--check", action="store_true",
                           help="change nothing; list stale exercise files (and solutions whose nbgrader metadata is "
                                "stale) and exit 1 if there are any")
    exercises.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    exercises.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    exercises.set_defaults(handler=_exercises)
    grade = sub.add_parser("grade", help="grade practice notebooks: restore their check cells, run each in its own "
                                          "kernel (fast mode), score each check from its own result")
    grade.add_argument("notebooks", nargs="+", metavar="NOTEBOOK_FOLDER_OR_GLOB",
                       help="learners' copies: notebooks, folders (every .ipynb under them) or glob patterns")
    grade.add_argument("--out", help="write one CSV row per notebook here (FILE.csv); the executed notebooks go to "
                                     "FILE_executed/ beside it")
    grade.add_argument("--json", action="store_true", help="print every notebook's report and the summary as JSON")
    grade.add_argument("--lesson", help="the lesson (e.g. 03 or 03_rectified_flow) when the files do not say")
    grade.add_argument("--solutions", default="solutions", help="folder of solution notebooks, the source of the "
                                                                "check cells and their points (default: solutions)")
    grade.add_argument("--timeout", type=_seconds, default=120,
                       help="seconds a cell may run before it is interrupted and scores zero (default: 120)")
    grade.add_argument("--notebook-timeout", type=_seconds, default=600,
                       help="seconds a whole notebook may run; the cells left score zero (default: 600)")
    grade.set_defaults(handler=_grade)
    site = sub.add_parser("site", help="build the course website (lessons with their saved outputs, practice notebooks, "
                                       "API reference) offline, without running any notebook")
    site.add_argument("--out", default="site", help="folder for the site: new, empty, or a previous site (default: site)")
    site.add_argument("--course", default=".", help="the course's folder: README.md, notebooks/, exercises/, solutions/, "
                                                     "docs/ (default: the current folder)")
    site.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    site.set_defaults(handler=_site)
    add_engine_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
