"""Text conditioning for MM-DiT: a tokenizer and a text encoder giving the token sequence (c_ctxt)
and the pooled vector (for c_vec).

By default both are small and trained from scratch together with the diffusion model:

    ids      = WordTokenizer(caption)                 (B, L)  word-level, padded, with a [BOS] slot
    tokens   = TransformerEncoder(Emb(ids) + P)       (B, L, D)   → c_ctxt
    pooled   = tokens at [BOS] → Linear                (B, D)      → MLP → added to c_vec

A user with a pretrained encoder on disk (CLIP, T5, MiniLM, any ``transformers`` AutoModel)
can use :class:`PretrainedTextEncoder` instead; it is loaded from a local directory only and
kept frozen. The empty caption "" is the null condition of classifier-free guidance.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PAD, BOS = "[PAD]", "[BOS]"


class WordTokenizer:
    """Lower-case words to ids over a fixed vocabulary; position 0 is always [BOS]."""

    def __init__(self, vocabulary: Sequence[str], max_length: int = 16):
        words = sorted({w.lower() for w in vocabulary})
        self.itos = [PAD, BOS, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(ids, mask)`` of shape (B, max_length); mask is True on real tokens ([BOS] included)."""
        if isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got a single string")
        ids = torch.zeros(len(captions), self.max_length, dtype=torch.long)
        for row, caption in enumerate(captions):
            words = caption.lower().replace(",", " ").split()
            if len(words) + 1 > self.max_length:
                raise ValueError(f"captions: expected at most {self.max_length - 1} words, got {len(words)} in {caption!r}")
            for col, word in enumerate([BOS, *words]):
                if word not in self.stoi:
                    raise ValueError(f"captions: unknown word {word!r}; expected one of {self.itos[2:]}")
                ids[row, col] = self.stoi[word]
        return ids, ids != 0


class SmallTextEncoder(nn.Module):
    """A few pre-norm transformer encoder layers over word embeddings + learned positions."""

    def __init__(self, tokenizer: WordTokenizer, dim: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(tokenizer.vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(tokenizer.max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, dim)
        self.context_dim = self.pooled_dim = dim

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions → (c_ctxt (B, L, D), pooled (B, D))."""
        ids, mask = self.tokenizer(captions)
        ids, mask = ids.to(self.positions.device), mask.to(self.positions.device)
        tokens = self.norm(self.encoder(self.embedding(ids) + self.positions, src_key_padding_mask=~mask))
        return tokens, self.pool(tokens[:, 0])


class PretrainedTextEncoder(nn.Module):
    """A frozen ``transformers`` encoder loaded from a local directory (no download).

    c_ctxt is the last hidden state; the pooled vector is the model's pooler output when it
    has one (CLIP, BERT), otherwise the mask-weighted mean of the tokens (T5, MiniLM).
    """

    def __init__(self, path: str, max_length: int = 32):
        super().__init__()
        from pathlib import Path

        from transformers import AutoModel, AutoTokenizer

        if not Path(path).is_dir():
            raise ValueError(f"path: expected a local directory with a saved transformers model, got {path!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model = model.get_encoder() if hasattr(model, "get_encoder") and model.config.is_encoder_decoder else model
        self.model.requires_grad_(False).eval()
        self.max_length = max_length
        self.context_dim = self.pooled_dim = self.model.config.hidden_size

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        with torch.no_grad():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            mask = batch["attention_mask"][..., None].to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
        return tokens, pooled
