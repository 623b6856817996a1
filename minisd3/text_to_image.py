"""Text-to-image rectified flow: an MM-DiT and a text encoder trained together, sampled with CFG.

    training   caption → "" with probability p_uncond (CFG dropout);  (c_ctxt, pooled) = encoder(caption)
               with several encoders (:class:`~minisd3.multi_text.MultiTextEncoder`) each is dropped
               independently with probability p_uncond instead, as SD3 drops CLIP-L, CLIP-G and T5
               t ~ logit-normal(0, 1);  loss = ‖v̂(z_t, t, c_ctxt, pooled) − (ε − x0)‖²
    sampling   Euler/Heun from t = 1 to 0 on  v_∅ + w·(v_c − v_∅),  optional resolution shift α
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .guidance import drop_mask, guided_field
from .models import MMDiT, MMDiTConfig
from .ode import Trajectory, integrate
from .rectified_flow import rf_loss, sampling_times
from .seeding import randn
from .timesteps import TimeSampler, make_time_sampler


class TextToImage(nn.Module):
    """An :class:`MMDiT` whose c_ctxt and pooled vector come from ``text_encoder(captions)``."""

    def __init__(self, config: MMDiTConfig, text_encoder: nn.Module):
        super().__init__()
        if config.context_dim != text_encoder.context_dim or config.pooled_dim != text_encoder.pooled_dim:
            raise ValueError(
                f"config: expected context_dim {text_encoder.context_dim} and pooled_dim {text_encoder.pooled_dim} "
                f"of the text encoder, got {config.context_dim} and {config.pooled_dim}"
            )
        self.mmdit = MMDiT(config)
        self.text_encoder = text_encoder

    def forward(self, images: torch.Tensor, captions: Sequence[str], **kwargs) -> torch.Tensor:
        """The training loss (so that DistributedDataParallel sees a forward call); see :meth:`loss`."""
        return self.loss(images, captions, **kwargs)

    @property
    def several_encoders(self) -> bool:
        """True when the text encoder combines encoders that are dropped one by one
        (:class:`~minisd3.multi_text.MultiTextEncoder`, even of a single encoder), False for one encoder
        whose captions are dropped to ""."""
        return hasattr(self.text_encoder, "default_keep")

    def encode(self, captions: Sequence[str], drop: torch.Tensor | None = None,
               only: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_ctxt, pooled) for a list of captions; "" is the null condition.

        ``drop`` (B,) replaces captions by ""; for a :class:`~minisd3.multi_text.MultiTextEncoder` it is
        (B, E) and drops each encoder separately. ``only`` names the encoders to use at inference
        (a MultiTextEncoder only).
        """
        captions = list(captions)
        if not self.several_encoders:
            if only is not None:
                raise ValueError(f"only: this model reads one text encoder; expected None, got {list(only)}")
            if drop is not None:
                captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            return self.text_encoder(captions)
        keep = None if drop is None else self.text_encoder.default_keep(captions, only) & ~drop.cpu()
        return self.text_encoder(captions, keep=keep, only=only)

    def loss(self, images: torch.Tensor, captions: Sequence[str], p_uncond: float = 0.1,
             time_sampler: TimeSampler | None = None, generator: torch.Generator | None = None,
             eps: torch.Tensor | None = None, t: torch.Tensor | None = None,
             drop: torch.Tensor | None = None) -> torch.Tensor:
        """The rectified-flow loss with captions dropped to "" with probability ``p_uncond`` (with
        several text encoders: each encoder dropped independently with that probability).

        ``eps``, ``t`` and ``drop`` may be drawn by the caller (the training engine draws them for
        the global batch so that any number of processes computes the same update).
        """
        if len(captions) != images.shape[0]:
            raise ValueError(f"captions: expected {images.shape[0]} captions (one per image), got {len(captions)}")
        if drop is None:
            shape = (len(captions), self.text_encoder.num_encoders) if self.several_encoders else len(captions)
            drop = drop_mask(shape, p_uncond, generator)
        ctx, pooled = self.encode(captions, drop)
        sampler = time_sampler or make_time_sampler("lognorm(0,1)")
        return rf_loss(lambda z, t_: self.mmdit(z, t_, ctx, pooled), images, eps=eps, t=t, time_sampler=sampler,
                       generator=generator)

    @torch.no_grad()
    def sample(self, captions: Sequence[str], steps: int = 20, cfg: float = 3.0, shift: float = 1.0,
               method: str = "euler", generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               return_trajectory: bool = False, only: Sequence[str] | None = None,
               size: tuple[int, int] | None = None) -> torch.Tensor | Trajectory:
        """Images (B, C, H, W) for ``captions``, from t = 1 to 0 with guidance scale ``cfg``;
        ``only`` names the text encoders to condition on (several encoders only; default all);
        ``size`` (H, W) in the model's own units (pixels, or latents) defaults to its training size
        (``input_size``²) and must be a multiple of the patch size (ValueError naming ``size``)."""
        config = self.mmdit.config
        device = next(self.parameters()).device
        height, width = size or (config.input_size, config.input_size)
        if size is not None and (len(size) != 2 or min(size) < config.patch_size or height % config.patch_size
                                 or width % config.patch_size):
            raise ValueError(f"size: expected (H, W), positive multiples of the patch size {config.patch_size}, "
                             f"got {tuple(size)}")
        if noise is None:
            noise = randn((len(captions), config.in_channels, height, width), generator, device)
        cond = self.encode(captions, only=only)
        uncond = self.encode([""] * len(captions))
        field = guided_field(self.mmdit, cond, uncond, cfg)
        return integrate(field, noise, sampling_times(steps, shift, device), method, return_trajectory)
