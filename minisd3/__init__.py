"""minisd3: Stable Diffusion 3, built up lesson by lesson.

The course's time direction is SD3's: t = 0 is data, t = 1 is noise; sampling runs 1 → 0.

Three layers; imports go course → engine → lessons, never back (tests/test_layers.py).

Lesson modules (flat in ``minisd3/``, what the notebooks import), in lesson order:

    01 flows in 2-D            toy2d (the 2-D data), ode (Euler, Heun), marginal_field (exact velocity)
    02 DDPM                    ddpm (schedules, ε-loss, ancestral and DDIM), nets (small MLPs), digits
    03 rectified flow          rectified_flow (z_t, v = ε − x0, loss, straightness, reflow), training (fit)
    04 timestep sampling       timesteps (logit-normal, mode, cosmap, the resolution shift)
    05 sinusoidal embeddings   embeddings (timestep embedding, 2-D sin-cos positions)
    06 patchify and DiT        patches, attention, blocks (adaLN-Zero), models (DiT), guidance (CFG)
    07 MM-DiT and QK-norm      blocks and models (MM-DiT), text (tokenizer, encoder), text_to_image,
                               shapes (captioned scenes), adherence (the detector), convert (diffusers)
    08 latent space            autoencoder (KL autoencoder, scale and shift), metrics
    10 spelling                glyphs (rendered words), spelling (the reader), multi_text (several encoders)
    11 data, preferences, scale  recaption (alt text, the 50/50 mix), preference (Diffusion-DPO),
                               validation_loss (SD3's protocol); path length in rectified_flow
    shared                     env (device, fast mode), seeding, validation, files (atomic writes),
                               figures (what a displayed figure says about itself)

``minisd3.engine``: the training engine behind ``python -m minisd3 train`` (config, data, sources,
latent_cache, loop, checkpoints, evaluation, grids, benchmark). ``minisd3.course``: the course's
tooling (checks, exercises, grading, gradebook, notebooks, plotting). ``minisd3.cli``: every command's argparse.
"""
import importlib

_EXPORTS = {"env_report": "env", "fast_mode": "env", "full_or_fast": "env", "get_device": "env", "progress_bar": "env",
            "make_generator": "seeding", "seed_everything": "seeding"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """``from minisd3 import get_device`` loads its module (and torch) on first use, so that
    ``python -m minisd3 --help`` answers without importing torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'minisd3' has no attribute {name!r}")
__version__ = "0.1.0"
