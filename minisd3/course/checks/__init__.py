"""Checks for the practice notebooks: each compares a learner's function with the package's
reference on seeded inputs and, when they differ, names the mistake.

A check prints one line and returns a :class:`CheckResult` (``name``, ``passed``, ``mistake``, ``message``)::

    [check] q_sample: PASS
    [check] q_sample: FAIL — missing square roots: x_k = √ᾱ_k·x0 + √(1 − ᾱ_k)·ε …

and logs the result where the grader collects it from the kernel (:mod:`minisd3.course.results`);
the grader never reads the printed line.

To name a mistake, a check computes the usual wrong variants on the same inputs (sign flipped,
t and 1 − t swapped, a square root dropped, …) and reports the one the learner's output matches;
the result's ``mistake`` is that variant's identifier (``"sign_flipped"``, ``"missing_sqrt"``, …).
Models and velocity fields handed to the learner's function are known functions that record how
they were called, so a check can also say "time runs backwards" or "the model got k, not t".
``NotImplementedError`` from an unfinished stub is not caught: the notebook shows where to start.

:data:`LESSON_CHECKS` lists the checks each practice notebook must pass, in notebook order (the
solution notebooks' check cells carry the same names, with their points, in their metadata).

    core                       the registry and the shared comparison machinery
    lesson01_flows             heun, gaussian_velocity
    lesson02_ddpm              q_sample, eps_loss, ancestral_step, ddim_sample
    lesson03_rectified_flow    interpolate, velocity_target, euler_sample, straightness, reflow_loss
    lesson04_timesteps         sample_logit_normal, shift_time
    lesson05_embeddings        timestep_embedding, sincos_2d_positions
    lesson06_dit               patchify, unpatchify, modulate, cfg_combine, guided_sample
    lesson07_mmdit             joint_attention, rms_norm, joint_block_forward
    lesson08_latent_space      latent_scale_shift, encode_for_diffusion, psnr, sample_and_kl, latent_tokens
    lesson09_scaling_up        ema_over_steps, learning_rate, batch_indices, rank_slice, mfu
    lesson10_spelling          char_tokenize, encoder_drop_mask, build_context
    lesson11_data_preferences_scale   mix_captions, validation_loss, dpo_objective, dpo_errors
"""
from __future__ import annotations

from .core import CHECKS, LESSON_CHECKS, CheckResult
from .lesson01_flows import check_gaussian_velocity, check_heun
from .lesson02_ddpm import check_ancestral_step, check_ddim_sample, check_eps_loss, check_q_sample
from .lesson03_rectified_flow import (
    check_euler_sample,
    check_interpolate,
    check_reflow_loss,
    check_straightness,
    check_velocity_target,
)
from .lesson04_timesteps import check_sample_logit_normal, check_shift_time
from .lesson05_embeddings import check_sincos_2d_positions, check_timestep_embedding
from .lesson06_dit import (
    check_cfg_combine,
    check_guided_sample,
    check_modulate,
    check_patchify,
    check_unpatchify,
)
from .lesson07_mmdit import check_joint_attention, check_joint_block_forward, check_rms_norm
from .lesson08_latent_space import (
    check_encode_for_diffusion,
    check_latent_scale_shift,
    check_latent_tokens,
    check_psnr,
    check_sample_and_kl,
)
from .lesson09_scaling_up import (
    check_batch_indices,
    check_ema_over_steps,
    check_learning_rate,
    check_mfu,
    check_rank_slice,
)
from .lesson10_spelling import check_build_context, check_char_tokenize, check_encoder_drop_mask
from .lesson11_data_preferences_scale import (
    check_dpo_errors,
    check_dpo_objective,
    check_mix_captions,
    check_validation_loss,
)

__all__ = [
    "CHECKS",
    "LESSON_CHECKS",
    "CheckResult",
    "check_heun",
    "check_gaussian_velocity",
    "check_q_sample",
    "check_eps_loss",
    "check_ancestral_step",
    "check_ddim_sample",
    "check_interpolate",
    "check_velocity_target",
    "check_euler_sample",
    "check_straightness",
    "check_reflow_loss",
    "check_sample_logit_normal",
    "check_shift_time",
    "check_timestep_embedding",
    "check_sincos_2d_positions",
    "check_patchify",
    "check_unpatchify",
    "check_modulate",
    "check_cfg_combine",
    "check_guided_sample",
    "check_joint_attention",
    "check_rms_norm",
    "check_joint_block_forward",
    "check_latent_scale_shift",
    "check_encode_for_diffusion",
    "check_psnr",
    "check_sample_and_kl",
    "check_latent_tokens",
    "check_ema_over_steps",
    "check_learning_rate",
    "check_batch_indices",
    "check_rank_slice",
    "check_mfu",
    "check_char_tokenize",
    "check_encoder_drop_mask",
    "check_build_context",
    "check_mix_captions",
    "check_validation_loss",
    "check_dpo_objective",
    "check_dpo_errors",
]
