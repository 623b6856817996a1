"""Several text encoders used together, as SD3 uses CLIP-L, CLIP-G and T5 (Esser et al. 2024, §2.2 and §5.3).

SD3 reads a prompt with three frozen encoders: two CLIPs (word pieces; each gives a token
sequence and a pooled vector) and T5-XXL (a token sequence only). Their outputs are combined as

    pooled   = concat(pooled of the CLIPs)                          → MLP → added to c_vec
    c_ctxt   = concat over the sequence axis of every encoder's tokens, brought to one width
               (SD3 zero-pads the CLIP features to T5's 4096 channels; here a Linear per encoder)

and in training each encoder's output is replaced by zeros independently with probability p
(SD3: p = 0.463 for each of three encoders, so p³ ≈ 10 % of steps see no text, the
unconditional case classifier-free guidance needs). At inference any subset can be used:
SD3 without T5 keeps its aesthetics but loses typography.

This module holds the course's two small encoders for spelling (lesson 10) in that role:

    word-level (like CLIP)    :class:`~minisd3.text.WordTokenizer` with [UNK], one token per known word
    character-level (like T5 on bytes, ByT5)   :class:`~minisd3.text.CharTokenizer`, one token per character

:class:`MultiTextEncoder` combines any encoders with the interface ``encoder(captions) →
(tokens (B, L_e, D_e), pooled (B, P_e))``, a method ``token_mask(captions) → (B, L_e)`` and
attributes ``context_dim``, ``pooled_dim``, ``max_length`` (L_e) and ``gives_pooled``: the course's
:class:`~minisd3.text.SmallTextEncoder` and a real local CLIP and T5 pair loaded by
:class:`~minisd3.text.PretrainedTextEncoder` alike.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .guidance import drop_mask


def encoder_drop_mask(batch: int, encoders: int, p: float, generator: torch.Generator | None = None,
                      device=None) -> torch.Tensor:
    """(batch, encoders) bool, each entry True (drop that encoder for that sample) with probability p,
    independently: a sample sees no text with probability p^encoders."""
    return drop_mask((batch, encoders), p, generator, device)


class MultiTextEncoder(nn.Module):
    """Text encoders used together: c_ctxt = their token sequences, each projected to ``width`` and
    concatenated along the sequence axis; pooled = concatenation of the pooled vectors of the encoders
    named in ``pooled_from`` (zeros of width ``width`` if none gives one, as with T5 alone).

    ``forward(captions, keep=None)`` → (c_ctxt (B, Σ L_e, width), pooled (B, pooled_dim)).
    ``keep`` (B, E) bool says which encoder each sample sees (False: its tokens and pooled vector are
    zeros); by default every encoder for a non-empty caption and none for "" (the null condition).
    Attributes: ``names`` (the encoders, in c_ctxt order), ``segments`` (name → slice of c_ctxt),
    ``context_dim`` = width, ``pooled_dim``, ``num_encoders``.
    """

    def __init__(self, encoders: dict[str, nn.Module], width: int, pooled_from: Sequence[str] | None = None):
        super().__init__()
        if not encoders:
            raise ValueError("encoders: expected at least one text encoder, got none")
        self.names = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.projections = nn.ModuleDict({n: nn.Linear(e.context_dim, width) for n, e in encoders.items()})
        if pooled_from is None:
            pooled_from = [n for n, e in encoders.items() if getattr(e, "gives_pooled", True)]
        unknown = [n for n in pooled_from if n not in encoders]
        if unknown:
            raise ValueError(f"pooled_from: expected names among {self.names}, got {unknown}")
        self.pooled_from = tuple(pooled_from)
        self.context_dim = width
        self.pooled_dim = sum(encoders[n].pooled_dim for n in self.pooled_from) or width
        self.segments, start = {}, 0
        for name, encoder in encoders.items():
            length = encoder.max_length
            self.segments[name] = slice(start, start + length)
            start += length

    @property
    def num_encoders(self) -> int:
        return len(self.names)

    def default_keep(self, captions: Sequence[str], only: Sequence[str] | None = None) -> torch.Tensor:
        """(B, E): every encoder (or those in ``only``) for each non-empty caption, none for ""."""
        if only is not None:
            unknown = [n for n in only if n not in self.names]
            if unknown:
                raise ValueError(f"only: expected text encoders among {self.names}, got {list(only)}")
        used = torch.tensor([only is None or n in only for n in self.names])
        present = torch.tensor([c != "" for c in captions])
        return present[:, None] & used[None, :]

    def forward(self, captions: Sequence[str], keep: torch.Tensor | None = None,
                only: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        captions = list(captions)
        keep = self.default_keep(captions, only) if keep is None else keep
        if tuple(keep.shape) != (len(captions), self.num_encoders):
            raise ValueError(f"keep: expected shape ({len(captions)}, {self.num_encoders}), got {tuple(keep.shape)}")
        sequences, pooled = [], []
        for e, name in enumerate(self.names):
            tokens, vector = self.encoders[name](captions)
            k = keep[:, e].to(tokens.device, tokens.dtype)
            sequences.append(self.projections[name](tokens) * k[:, None, None])
            if name in self.pooled_from:
                pooled.append(vector * k[:, None])
        c_ctxt = torch.cat(sequences, dim=1)
        if not pooled:
            return c_ctxt, c_ctxt.new_zeros(len(captions), self.pooled_dim)
        return c_ctxt, torch.cat(pooled, dim=1)

    def token_mask(self, captions: Sequence[str], keep: torch.Tensor | None = None,
                   only: Sequence[str] | None = None) -> torch.Tensor:
        """(B, Σ L_e) bool: True on the real tokens ([BOS] and words or characters) of kept encoders."""
        captions = list(captions)
        keep = self.default_keep(captions, only) if keep is None else keep
        masks = [self.encoders[n].token_mask(captions).cpu() & keep[:, e:e + 1].cpu() for e, n in enumerate(self.names)]
        return torch.cat(masks, dim=1)
