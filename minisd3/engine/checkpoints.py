"""Checkpoints as safetensors, written atomically, never pickled: loading one cannot run code.

A run directory holds ``checkpoints/step_NNNNNNN/`` folders, each with

    model.safetensors      the trained weights
    ema.safetensors        the exponential moving average of the weights (what sampling uses)
    optimizer.safetensors  the optimizer's per-parameter tensors (Adam moments, step counts)
    state.json             the training config, step, optimizer hyper-parameters and counters

and a ``checkpoints/latest`` file naming the newest complete folder. A folder is written under a
temporary name and renamed when complete, and ``latest`` is replaced atomically, so a crash at
any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..env import get_device
from ..files import CheckpointError, atomic_folder, load_weights_into, write_text_atomic
from ..text_to_image import TextToImage
from .config import TrainConfig, build_model

FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def save_checkpoint(run_dir: str | Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it; keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    with atomic_folder(final) as tmp:
        save_file(_contiguous(model), tmp / "model.safetensors")
        save_file(_contiguous(ema), tmp / "ema.safetensors")
        save_file(_contiguous(opt_tensors), tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta}, indent=1))
    write_text_atomic(root / "latest", final.name)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    return final


STORED_MODELS = Path(__file__).resolve().parents[2] / "data" / "models"
"""Where the course's stored models live (``--ckpt course`` is ``STORED_MODELS / "course"``)."""


def stored_model_names() -> list[str]:
    """Names of the stored models under :data:`STORED_MODELS` (folders with a ``state.json``)."""
    return sorted(p.parent.name for p in STORED_MODELS.glob("*/state.json"))


def resolve_checkpoint(path: str | Path, name: str = "ckpt") -> Path:
    """A checkpoint folder from a run directory (its latest), a ``checkpoints`` folder, the folder
    itself, or the name of a stored model (``"course"``: :data:`STORED_MODELS`/course).

    Raises :class:`CheckpointError` naming the argument ``name`` (as the user typed it, e.g.
    ``--resume``) and telling a missing folder, an empty one and one without checkpoints apart.
    """
    if not Path(path).exists() and (STORED_MODELS / str(path) / "state.json").is_file():
        return STORED_MODELS / str(path)
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        pointer = candidate / "latest"
        if pointer.is_file():
            return candidate / pointer.read_text().strip()
    if (path / "state.json").is_file():
        return path
    expected = (f"expected a run directory, a checkpoint folder containing state.json or a stored model name "
                f"({', '.join(stored_model_names()) or 'none stored'})")
    if not path.exists():
        found = "no such file or folder"
    elif not path.is_dir():
        found = "a file"
    elif not any(path.iterdir()):
        found = "an empty folder (a run writes its first checkpoint after ckpt_every steps or ckpt_minutes)"
    else:
        found = "a folder without checkpoints/latest or state.json"
    raise CheckpointError(f"{name}: {expected}, got {str(path)!r}: {found}")


def export_weights(run: str | Path, out: str | Path, dtype: torch.dtype = torch.float16,
                   sample_cfg: float | None = None) -> Path:
    """Write the EMA weights of a run's latest checkpoint (in ``dtype``) and its state.json to ``out``.

    The result is a checkpoint folder that :func:`resolve_checkpoint` and sampling accept (EMA
    only: no raw weights, no optimizer, so it cannot be resumed), small enough to keep in git.
    ``sample_cfg`` replaces the config's default guidance scale (the one ``sample`` and ``eval``
    use when no ``--cfg`` is given). Written to a temporary folder and renamed, so ``out`` is whole or absent.
    """
    folder = resolve_checkpoint(run, "--ckpt")
    state = load_state(folder)
    if sample_cfg is not None:
        state["config"] = {**state["config"], "sample_cfg": float(sample_cfg)}
    return save_stored_model(load_tensors(folder, "ema.safetensors"), {**state, "exported_from": str(folder)}, out,
                             dtype)


def save_stored_model(weights: dict[str, torch.Tensor], state: dict, out: str | Path,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write ``weights`` (floating tensors cast to ``dtype``) as ``ema.safetensors`` and ``state``
    (a checkpoint's state.json: ``config``, ``vocabulary``, ``channels``, anything else kept as
    given; ``optimizer`` set to None) to the folder ``out``, atomically: a stored model that
    :func:`load_run` reads and nothing can resume. Returns ``out``.
    """
    tensors = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()
               for k, v in weights.items()}
    out = Path(out)
    with atomic_folder(out) as tmp:
        save_file(_contiguous(tensors), tmp / "ema.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": None,
                                                    "dtype": str(dtype).removeprefix("torch.")}, indent=1))
    return out


def load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """Load one safetensors file of a checkpoint, turning damage into a clear :class:`CheckpointError`."""
    file = folder / name
    if not file.is_file():
        raise CheckpointError(f"ckpt: {file} is missing; the checkpoint is incomplete")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"ckpt: {file} is truncated or corrupt ({err})") from err


def load_state(folder: Path) -> dict:
    """The JSON state of a checkpoint folder."""
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"ckpt: {folder / 'state.json'} is unreadable or corrupt ({err})") from err


def load_run(ckpt: str | Path, weights: str = "ema", device: str = "cpu",
             name: str = "ckpt") -> tuple[TextToImage, TrainConfig, Path]:
    """(model in eval mode on ``device``, its config, the checkpoint folder), rebuilt from a run
    directory, a checkpoint folder or a stored model name, with its ``"ema"`` (or raw ``"model"``) weights.

    Raises :class:`CheckpointError` when the checkpoint is missing, corrupt or of another configuration
    (messages name the argument ``name``, e.g. ``--ckpt``).
    """
    folder = resolve_checkpoint(ckpt, name)
    state = load_state(folder)
    config = TrainConfig(**state["config"])
    model = build_model(config, state["vocabulary"], state["channels"])
    load_weights_into(model, load_tensors(folder, f"{weights}.safetensors"), weights)
    return model.to(get_device(device)).eval(), config, folder


ARCHITECTURE = ("data", "depth", "heads", "head_dim", "patch_size", "qk_norm", "text_dim", "text_depth", "text_length",
                "text_encoders")
"""The config fields that fix the weights' shapes and meaning; ``--init-from`` needs them equal."""


def with_init_from(config: TrainConfig) -> TrainConfig:
    """``config`` with ``position_base`` taken from the run named by ``init_from`` when it is 0, so the
    grid that run trained on keeps its positions on a new canvas; ``config`` itself without ``init_from``.

    Raises :class:`CheckpointError` (naming ``--init-from``) for a missing run, and ValueError for a
    run of another architecture (any :data:`ARCHITECTURE` field differs; both values named).
    """
    if not config.init_from:
        return config
    source = TrainConfig(**load_state(resolve_checkpoint(config.init_from, "--init-from"))["config"])
    differing = [f"{k} {getattr(source, k)!r} there, {getattr(config, k)!r} here" for k in ARCHITECTURE
                 if getattr(source, k) != getattr(config, k)]
    if differing:
        raise ValueError(f"--init-from: expected a run of this architecture, got {config.init_from!r} with "
                         + "; ".join(differing))
    if config.position_base:
        return config
    return dataclasses.replace(config, position_base=source.position_base or source.image_size).validate()


def initial_weights(init_from: str, vocabulary, channels: int) -> dict[str, torch.Tensor]:
    """The EMA weights (or, without them, the raw weights) of the run or stored model ``init_from``,
    for a model with this ``vocabulary`` and latent/pixel ``channels``.

    Raises ValueError naming ``--init-from`` when the run reads another vocabulary or has another
    number of channels (another autoencoder or data).
    """
    folder = resolve_checkpoint(init_from, "--init-from")
    state = load_state(folder)
    if state["channels"] != channels:
        raise ValueError(f"--init-from: expected a run on {channels}-channel inputs, got {init_from!r} with "
                         f"{state['channels']} (another autoencoder or data)")
    if list(state["vocabulary"]) != list(vocabulary):
        raise ValueError(f"--init-from: expected a run with this data's vocabulary, got {init_from!r} with another")
    name = "ema.safetensors" if (folder / "ema.safetensors").is_file() else "model.safetensors"
    return {k: v.float() if v.is_floating_point() else v for k, v in load_tensors(folder, name).items()}
