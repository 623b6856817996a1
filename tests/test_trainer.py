"""The training engine and its commands: presets, exact resume, DDP equivalence, checkpoints, faults."""
import json
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, assert_same, cli, tiny, weights
from PIL import Image

from minisd3.cli import main
from minisd3.engine.checkpoints import CheckpointError, resolve_checkpoint
from minisd3.engine.config import apply_overrides, build_model, preset_config
from minisd3.engine.data import CIFAR10_CLASSES, MissingDatasetError, load_cifar10
from minisd3.engine.evaluation import ADHERENCE_KEYS
from minisd3.engine.grids import GUTTER
from minisd3.engine.loop import NonFiniteLossError, ema_decay_at, learning_rate, train_run, training_times
from minisd3.seeding import make_generator
from minisd3.shapes import VOCABULARY, split_prompts
from minisd3.text_to_image import TextToImage
from minisd3.timesteps import make_time_sampler, shift_time


def test_resume_continues_exactly(tmp_path):
    config = tiny("max_steps=6")
    train_run(config, tmp_path / "straight", progress=False)
    train_run(config, tmp_path / "broken", progress=False, stop_at=3)
    train_run(config, tmp_path / "broken", resume=tmp_path / "broken", progress=False)
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        assert_same(weights(tmp_path / "straight", name), weights(tmp_path / "broken", name))
    rows = (tmp_path / "broken" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,grad_norm,images_per_s,train_cpu_s" and [r.split(",")[0] for r in rows[1:]] == list("123456")
    straight = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == [r.split(",")[1] for r in straight[1:]]


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    train_run(tiny("max_steps=2"), tmp_path / "one", progress=False)
    train_run(tiny("max_steps=2", "grad_accum=4"), tmp_path / "four", progress=False)
    assert_same(weights(tmp_path / "one"), weights(tmp_path / "four"), atol=2e-6)


def test_batches_drawn_by_a_worker_process_train_the_same_run(tmp_path):
    """data_workers=1 draws each step's batch, times, noise and drop mask ahead in another process:
    the same draws (seeded per step), so the same weights; the worker's CPU seconds are counted."""
    train_run(tiny("max_steps=3"), tmp_path / "here", progress=False)
    train_run(tiny("max_steps=3", "data_workers=1"), tmp_path / "worker", progress=False, stop_at=2)
    train_run(tiny("max_steps=3", "data_workers=1"), tmp_path / "worker", resume=tmp_path / "worker", progress=False)
    assert_same(weights(tmp_path / "here"), weights(tmp_path / "worker"))
    summary = json.loads((tmp_path / "worker" / "summary.json").read_text())
    assert summary["train_cpu_seconds"] > 0
    with pytest.raises(ValueError, match="data_workers: expected a whole number ≥ 0, got -1"):
        tiny("data_workers=-1").validate()


def test_compiled_training_equals_eager(tmp_path):
    """The compile flag (on in the GPU presets) runs here through inductor's CPU backend: same updates."""
    train_run(tiny("max_steps=3"), tmp_path / "eager", progress=False)
    train_run(tiny("max_steps=3", "compile=true"), tmp_path / "compiled", progress=False)
    assert_same(weights(tmp_path / "eager"), weights(tmp_path / "compiled"), atol=1e-5)
    assert_same(weights(tmp_path / "eager", "ema.safetensors"), weights(tmp_path / "compiled", "ema.safetensors"),
                atol=1e-5)


def test_ddp_with_two_processes_equals_one_process(tmp_path):
    args = ["train", "--preset", "shapes", "--max-steps", "3", "--quiet"] + [a for s in TINY for a in ("--set", s)]
    single = cli(*args, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
                          "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "minisd3", *args,
                          "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert_same(weights(tmp_path / "single"), weights(tmp_path / "ddp"), atol=1e-6)
    # logging and checkpoints only on rank 0: one header, one row a step
    assert len((tmp_path / "ddp" / "metrics.csv").read_text().splitlines()) == 4


def test_shapes_run_ends_with_samples_checkpoint_and_adherence(tmp_path):
    summary = train_run(tiny("max_steps=2"), tmp_path, progress=False)
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    for key in ADHERENCE_KEYS:  # held-out and training pairs, each beside its chance rate
        assert set(summary["evaluation"][key]) >= {"colour", "shape", "count", "overall"}
    # the sample grid: 8 prompts of held-out pairs in one row, 8 of training pairs in the next, 144-px cells
    # decoded 32-pixel canvases, upscaled 4×
    assert Image.open(tmp_path / "samples" / "step_0000002.png").width == 8 * (128 + GUTTER) + GUTTER
    prompts = (tmp_path / "samples" / "step_0000002.txt").read_text().splitlines()
    assert [split_prompts(0).is_held_out(p) for p in prompts] == [True] * 8 + [False] * 8
    folder = resolve_checkpoint(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["ema.safetensors", "model.safetensors",
                                                        "optimizer.safetensors", "state.json"]
    # nothing pickled: every tensor file is safetensors (8-byte little-endian header length, then JSON)
    for file in folder.glob("*.safetensors"):
        head = file.read_bytes()[:9]
        assert head[8:9] == b"{"


def test_sample_and_eval_commands(tmp_path):
    train_run(tiny("max_steps=1"), tmp_path / "run", progress=False)
    out = tmp_path / "grid.png"
    done = cli("sample", "--ckpt", str(tmp_path / "run"), "--prompt", "two small red circles", "--steps", "2",
               "--cfg", "2", "--seed", "1", "--n", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out).width == 4 * (128 + GUTTER) + GUTTER  # one row of four labelled 32-pixel cells
    bad = cli("sample", "--ckpt", str(tmp_path / "run"), "--prompt", "two purple circles", "--out", str(out))
    assert bad.returncode == 2 and "unknown word 'purple'" in bad.stderr
    ev = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "8", "--steps", "2", "--grid",
             str(tmp_path / "eval.png"), "--out", str(tmp_path / "eval.json"))
    assert ev.returncode == 0, ev.stderr
    assert "held-out all" in ev.stdout and "(chance)" in ev.stdout  # the table: adherence beside chance
    [result] = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert set(ADHERENCE_KEYS) <= set(result) and "sliced_wasserstein" in result and result["steps"] == 2
    # eval's grid: 8 held-out prompts in one row, 8 of training pairs in the next, labelled, prompts beside it
    assert Image.open(tmp_path / "eval.png").width == 8 * (128 + GUTTER) + GUTTER
    assert len((tmp_path / "eval.txt").read_text().splitlines()) == 16
    bad_grid = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "8", "--grid", str(tmp_path / "grid"))
    assert bad_grid.returncode == 2 and "--grid: expected a file name ending in one of" in bad_grid.stderr
    fid = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "8", "--steps", "2", "--fid")
    assert fid.returncode == 2 and "generated" in fid.stderr


def test_truncated_and_mismatched_checkpoints_are_named(tmp_path):
    train_run(tiny("max_steps=1"), tmp_path / "run", progress=False)
    folder = resolve_checkpoint(tmp_path / "run")
    data = (folder / "ema.safetensors").read_bytes()
    (folder / "ema.safetensors").write_bytes(data[: len(data) // 2])
    done = cli("sample", "--ckpt", str(tmp_path / "run"), "--prompt", "one red circle", "--out", str(tmp_path / "a.png"))
    assert done.returncode == 2 and "truncated or corrupt" in done.stderr
    train_run(tiny("max_steps=1", "depth=3"), tmp_path / "deeper", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train_run(tiny("max_steps=1"), tmp_path / "deeper", resume=tmp_path / "deeper", progress=False)
    from minisd3.files import load_weights_into
    small = build_model(tiny(), ["one"], 3)
    with pytest.raises(CheckpointError, match="not in this model: mmdit.blocks.2"):
        load_weights_into(small, {**small.state_dict(), **weights(tmp_path / "deeper")}, "model")


def test_non_finite_loss_stops_naming_step_and_last_checkpoint(tmp_path, monkeypatch):
    from minisd3.text_to_image import TextToImage

    original = TextToImage.loss
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        loss = original(self, *a, **k)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(TextToImage, "loss", flaky)
    with pytest.raises(NonFiniteLossError, match=r"at step 2; stopped, the last good checkpoint is .*step_0000002"):
        train_run(tiny("max_steps=4", "ckpt_every=2"), tmp_path, progress=False)
    assert resolve_checkpoint(tmp_path).name == "step_0000002"


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="did you mean 'max_steps'"):
        apply_overrides(preset_config("shapes"), ["max_step=3"])
    with pytest.raises(ValueError, match="did you mean 'cifar10'"):
        preset_config("cifar")
    with pytest.raises(ValueError, match="qk_norm: expected a boolean"):
        apply_overrides(preset_config("shapes"), ["qk_norm=maybe"])
    with pytest.raises(ValueError, match="time_sampler: s: expected a positive scale, got -1"):
        apply_overrides(preset_config("shapes"), ["time_sampler=lognorm(0,-1)"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            train_run(tiny("device=cuda", "max_steps=1"), "unused", progress=False)


def test_ema_decay_warms_up_to_the_configured_value(tmp_path):
    config = tiny("ema_decay=0.999")
    decays = [ema_decay_at(s, config.ema_decay) for s in range(20_000)]
    assert decays[0] == pytest.approx(0.1) and decays[90] == pytest.approx(0.91)
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.999 and decays[8900] < 0.999
    # the weight left on the random initial parameters after k steps is the product of the decays
    assert math.prod(decays[:1000]) < 1e-6 < 0.999 ** 1000
    # one step from θ0 to θ1: θ_ema = 0.1·θ0 + 0.9·θ1 at step 0
    train_run(tiny("ema_decay=0.999", "max_steps=1"), tmp_path, progress=False)
    torch.manual_seed(config.seed)
    initial = build_model(config, VOCABULARY, 8).state_dict()  # the preset's 8 latent channels
    model, ema = weights(tmp_path), weights(tmp_path, "ema.safetensors")
    for name in ("mmdit.final.linear.weight", "mmdit.blocks.0.image.qkv.qkv.weight"):
        assert torch.allclose(ema[name], 0.1 * initial[name] + 0.9 * model[name], atol=1e-6), name


def test_learning_rate_warms_up_then_decays():
    config = tiny("max_steps=100", "warmup_steps=10", "lr=1.0")
    lrs = [learning_rate(s, config.lr, config.warmup_steps, config.max_steps) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[99] == pytest.approx(0.1, abs=1e-3) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def write_cifar10_fixture(root: Path, per_batch: int = 4) -> None:
    """CIFAR-10's published python layout: pickled dicts of uint8 rows, five train batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, handle)


def test_cifar10_reader_on_a_fixture_in_the_real_format(tmp_path):
    write_cifar10_fixture(tmp_path)
    images, labels = load_cifar10(tmp_path)
    assert images.shape == (20, 3, 32, 32) and labels.shape == (20,)
    assert images.min() >= -1 and images.max() <= 1
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        first = pickle.load(handle, encoding="bytes")
    pixel = first[b"data"][0].reshape(3, 32, 32)[:, 5, 7]  # channel planes R, G, B
    assert torch.allclose(images[0, :, 5, 7], torch.tensor(pixel, dtype=torch.float32) / 127.5 - 1)
    summary = train_run(tiny("max_steps=1", "image_size=32", f"data_root={tmp_path}", preset="cifar10"),
                    tmp_path / "run", progress=False)
    assert np.isfinite(summary["loss"])


def test_missing_cifar10_says_where_and_how(tmp_path):
    with pytest.raises(MissingDatasetError, match="download=true"):
        load_cifar10(tmp_path / "nowhere")


def test_training_times_apply_the_resolution_shift_once():
    """t′ = α·t/(1 + (α − 1)·t) is increasing, so it maps the median: lognorm(0,1)'s 0.5 → 3·0.5/(1 + 2·0.5) = 0.75."""
    n = 100_001  # odd: the median is one of the draws
    sampler = tiny().time_sampler
    plain = training_times(n, make_generator(0), sampler, 1.0)
    shifted = training_times(n, make_generator(0), sampler, 3.0)
    assert torch.equal(plain, make_time_sampler("lognorm(0,1)")(n, generator=make_generator(0)))  # α = 1: unchanged
    assert plain.median().item() == pytest.approx(0.5, abs=0.01)
    assert shifted.median() == shift_time(plain.median().reshape(1), 3.0)
    assert shifted.median().item() == pytest.approx(0.75, abs=0.01)


def test_the_shift_reaches_the_training_loss(tmp_path, monkeypatch):
    original, seen = TextToImage.loss, []

    def spy(self, *args, t=None, **kwargs):
        seen.append(t.clone())
        return original(self, *args, t=t, **kwargs)

    monkeypatch.setattr(TextToImage, "loss", spy)
    train_run(tiny("max_steps=2", "shift=1"), tmp_path / "plain", progress=False, stop_at=1)
    train_run(tiny("max_steps=2", "shift=3"), tmp_path / "shifted", progress=False, stop_at=1)
    plain, shifted = seen
    assert torch.equal(shifted, shift_time(plain, 3.0)) and (shifted > plain).any()


def test_resume_after_a_crash_drops_the_metrics_logged_after_the_checkpoint(tmp_path):
    config = tiny("max_steps=6", "ckpt_every=3")  # a row every step
    train_run(config, tmp_path, progress=False, stop_at=5)  # rows 1-5 logged; the crash: resumed from step 3 below
    train_run(config, tmp_path, resume=tmp_path / "checkpoints" / "step_0000003", progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,grad_norm,images_per_s,train_cpu_s"
    assert [int(row.split(",")[0]) for row in rows[1:]] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "metrics.csv.tmp").exists()


def test_unsupported_shapes_canvas_is_refused_before_the_run_directory_is_made(tmp_path, capsys):
    out = tmp_path / "run"
    pixels = ["--set", "autoencoder=", "--set", "patch_size=4"]
    assert main(["train", "--preset", "shapes", *pixels, "--set", "image_size=20", "--quiet", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: image_size: expected one of (24, 32, 48, 64) pixels, got 20\n"
    assert not out.exists()
    # the preset's latents: image_size · f must be a canvas the generator draws (5 · 4 = 20 is not)
    assert main(["train", "--preset", "shapes", "--set", "image_size=5", "--set", "patch_size=1", "--quiet",
                 "--out", str(out)]) == 2
    assert "image_size" in capsys.readouterr().err and not out.exists()
    # in latent space image_size counts latents, not canvas pixels
    assert apply_overrides(preset_config("shapes"), ["latents=cache", "image_size=6", "patch_size=2"]).image_size == 6


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A one-step run whose sampling settings differ from the sample command's old fixed ones."""
    run = tmp_path_factory.mktemp("sample_run")
    train_run(tiny("max_steps=2", "shift=3", "sample_cfg=2", "sample_steps=3"), run, progress=False, stop_at=1)
    return run


def test_sample_uses_the_runs_shift_guidance_and_steps_unless_flags_say_otherwise(sample_run, tmp_path, monkeypatch,
                                                                                   capsys):
    original, seen = TextToImage.sample, []

    def spy(self, captions, steps, cfg, shift, **kwargs):
        seen.append((steps, cfg, shift))
        return original(self, captions, steps, cfg, shift, **kwargs)

    monkeypatch.setattr(TextToImage, "sample", spy)
    args = ["sample", "--ckpt", str(sample_run), "--prompt", "one small red circle", "--n", "2"]
    assert main([*args, "--out", str(tmp_path / "run.png")]) == 0
    assert "(3 euler steps, cfg 2.0, shift 3.0)" in capsys.readouterr().out
    assert main([*args, "--steps", "2", "--cfg", "1.5", "--shift", "1", "--out", str(tmp_path / "flags.png")]) == 0
    assert seen == [(3, 2.0, 3.0), (2, 1.5, 1.0)]
    assert (tmp_path / "run.png").is_file() and (tmp_path / "flags.png").is_file()


SUFFIXES = ".png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff"
BAD_SAMPLE_FLAGS = {  # {dir}: an existing directory
    "n 0": (["--n", "0"], "--n: expected a positive number of samples, got 0"),
    "n negative": (["--n", "-2"], "--n: expected a positive number of samples, got -2"),
    "cfg nan": (["--cfg", "nan"], "--cfg: expected a finite guidance scale, got nan"),
    "cfg inf": (["--cfg", "inf"], "--cfg: expected a finite guidance scale, got inf"),
    "steps 0": (["--steps", "0"], "--steps: expected a positive number of steps, got 0"),
    "shift 0": (["--shift", "0"], "--shift: expected a positive finite shift α, got 0.0"),
    "shift negative": (["--shift", "-3"], "--shift: expected a positive finite shift α, got -3.0"),
    "shift nan": (["--shift", "nan"], "--shift: expected a positive finite shift α, got nan"),
    "shift inf": (["--shift", "inf"], "--shift: expected a positive finite shift α, got inf"),
    "out not an image": (["--out", "{dir}/grid.txt"],
                         f"--out: expected a folder or a file name ending in one of {SUFFIXES}, got '{{dir}}/grid.txt'"),
}


def test_sample_into_a_folder_writes_numbered_pngs_and_the_grid(sample_run, tmp_path, capsys):
    out = tmp_path / "cats"  # as lesson 09 writes it: no suffix, not there yet
    assert main(["sample", "--ckpt", str(sample_run), "--prompt", "one small red circle", "--n", "3", "--steps", "2",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "sample_000.png", "sample_001.png",
                                                     "sample_002.png"]
    assert Image.open(out / "sample_000.png").size == (32, 32)
    assert f"wrote {out / 'grid.png'} and sample_000.png … sample_002.png in {out}" in capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(BAD_SAMPLE_FLAGS))
def test_bad_sample_flags_get_one_line_naming_the_flag(sample_run, tmp_path, capsys, case):
    """Refused before anything is sampled: one line, exit status 2, no traceback, no image."""
    flags, message = BAD_SAMPLE_FLAGS[case]
    flags = [f.format(dir=tmp_path) for f in flags]
    out = ["--out", str(tmp_path / "a.png")] if "--out" not in flags else []
    code = main(["sample", "--ckpt", str(sample_run), "--prompt", "one small red circle", *flags, *out])
    assert (code, capsys.readouterr().err) == (2, f"error: {message.format(dir=tmp_path)}\n")
    assert not (tmp_path / "a.png").exists()
