"""Text conditioning for MM-DiT: a tokenizer and a text encoder giving the token sequence (c_ctxt)
and the pooled vector (for c_vec).

By default both are small and trained from scratch together with the diffusion model:

    ids      = WordTokenizer(caption)                 (B, L)  word-level, padded, with a [BOS] slot
    tokens   = TransformerEncoder(Emb(ids) + P)       (B, L, D)   → c_ctxt
    pooled   = tokens at [BOS] → Linear                (B, D)      → MLP → added to c_vec

A user with a pretrained encoder on disk (SD3's CLIPTextModelWithProjection and T5EncoderModel,
a full CLIPModel, MiniLM, most ``transformers`` AutoModels) can use :class:`PretrainedTextEncoder`
instead; it is loaded from a local directory only and kept frozen. The empty caption "" is the null
condition of classifier-free guidance.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

PAD, BOS, UNK = "[PAD]", "[BOS]", "[UNK]"
_WORD_SEPARATORS = re.compile(r'[\s,"]+')


class _Tokenizer:
    """The shared mechanics of the tokenizers below, each of which defines ``units(caption)`` (its words or
    characters): the units → ids over ``itos``, [BOS] first, [PAD] (0) after.

    ``tokenizer(captions)`` → ``(ids, mask)``, each (B, max_length); mask is True on [BOS] and the
    units. An unknown unit becomes [UNK] when the vocabulary has one, else raises ValueError naming
    ``captions``; so do a single string instead of a list and a caption of more than max_length − 1 units.
    """

    unit = "unit"

    def __init__(self, itos: list[str], max_length: int):
        self.itos = itos
        self.stoi = {u: i for i, u in enumerate(itos)}
        self.unknown = self.stoi.get(UNK)
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got a single string")
        ids = torch.zeros(len(captions), self.max_length, dtype=torch.long)
        for row, caption in enumerate(captions):
            units = self.units(caption)
            if len(units) + 1 > self.max_length:
                raise ValueError(f"captions: expected at most {self.max_length - 1} {self.unit}s, got {len(units)} "
                                 f"in {caption!r}")
            for col, unit in enumerate([BOS, *units]):
                if unit not in self.stoi and self.unknown is None:
                    raise ValueError(f"captions: unknown {self.unit} {unit!r}; expected one of {self.itos[2:]}")
                ids[row, col] = self.stoi.get(unit, self.unknown)
        return ids, ids != 0


class WordTokenizer(_Tokenizer):
    """Lower-case words to ids over a fixed vocabulary; position 0 is always [BOS].

    Words are split at spaces, commas and double quotes (``the word "cab"`` → the, word, cab).
    An unknown word raises ValueError naming ``captions``, or with ``unknown=True`` becomes the one
    [UNK] token, as a CLIP-like word-level tokenizer meets a word it never learned
    (ids: [PAD] = 0, [BOS] = 1, then [UNK] = 2 when enabled, then the words in sorted order).
    """

    unit = "word"

    def __init__(self, vocabulary: Sequence[str], max_length: int = 16, unknown: bool = False):
        words = sorted({w.lower() for w in vocabulary})
        super().__init__([PAD, BOS, *([UNK] if unknown else []), *words], max_length)

    def units(self, caption: str) -> list[str]:
        return [w for w in _WORD_SEPARATORS.split(caption.lower()) if w]


PRINTABLE = "".join(chr(c) for c in range(32, 127))
"""The characters :class:`CharTokenizer` knows by default: printable ASCII, space to tilde."""


class CharTokenizer(_Tokenizer):
    """Characters to ids: [PAD] = 0, [BOS] = 1, [UNK] = 2, then one id per known character.

    ``tokenizer(captions)`` → ``(ids, mask)``, each (B, max_length): position 0 is [BOS], then one
    token per character of the caption (a character outside ``alphabet`` becomes [UNK]), then
    [PAD]; ``mask`` is True on [BOS] and the characters. The byte-level T5 (ByT5, Xue et al.
    2022) works the same way on UTF-8 bytes; a character set keeps the table small.

    Raises ValueError (naming ``captions``) for a single string instead of a list, or a caption
    longer than ``max_length − 1`` characters.
    """

    unit = "character"

    def __init__(self, alphabet: str = PRINTABLE, max_length: int = 16):
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"alphabet: expected distinct characters, got {alphabet!r}")
        super().__init__([PAD, BOS, UNK, *alphabet], max_length)

    def units(self, caption: str) -> list[str]:
        return list(caption)


class SmallTextEncoder(nn.Module):
    """A few pre-norm transformer encoder layers over token embeddings + learned positions.

    ``tokenizer`` is a :class:`WordTokenizer` or a :class:`CharTokenizer`. ``gives_pooled`` says
    whether the pooled vector is meant for c_vec (CLIP-like) or not (T5-like; a
    :class:`~minisd3.multi_text.MultiTextEncoder` then takes its tokens only).
    """

    def __init__(self, tokenizer, dim: int = 64, depth: int = 2, heads: int = 4, gives_pooled: bool = True):
        super().__init__()
        self.gives_pooled = gives_pooled
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(tokenizer.vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(tokenizer.max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, dim)
        self.context_dim = self.pooled_dim = dim
        self.max_length = tokenizer.max_length

    def token_mask(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, max_length) bool: True on the real tokens ([BOS] and the words or characters)."""
        return self.tokenizer(captions)[1]

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions → (c_ctxt (B, L, D), pooled (B, D))."""
        ids, mask = self.tokenizer(captions)
        ids, mask = ids.to(self.positions.device), mask.to(self.positions.device)
        tokens = self.norm(self.encoder(self.embedding(ids) + self.positions, src_key_padding_mask=~mask))
        return tokens, self.pool(tokens[:, 0])


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class PretrainedTextEncoder(nn.Module):
    """A frozen ``transformers`` text encoder loaded from a local directory (no download).

    ``forward(captions)`` returns ``(tokens, pooled)``: tokens (B, max_length, context_dim), the encoder's
    last hidden state, is c_ctxt; pooled (B, pooled_dim) goes to c_vec. The class loaded is read from the
    folder's ``config.json`` (``model_type`` and ``architectures``):

    - ``CLIPTextModelWithProjection`` folder → that class; pooled = the projected ``text_embeds``,
      pooled_dim = projection_dim.
    - full ``CLIPModel`` folder → its text half (text model + ``text_projection``, vision weights left
      unread) as a ``CLIPTextModelWithProjection``; pooled = ``text_embeds`` (what ``get_text_features``
      gives), pooled_dim = projection_dim.
    - ``CLIPTextModel`` folder (no projection) → that class; pooled = ``pooler_output`` (hidden at EOS).
    - ``T5EncoderModel`` folder, or a full T5 (``T5Model``, ``T5ForConditionalGeneration``) → a
      ``T5EncoderModel`` (MT5/UMT5 alike), the decoder left unread; pooled = the mask-weighted mean of
      the tokens, pooled_dim = hidden size.
    - anything else with a vocabulary (BERT, MiniLM, …) → ``AutoModel`` (its encoder if it is an
      encoder-decoder); pooled = ``pooler_output`` if it has a pooler, else the mask-weighted mean.

    ``gives_pooled`` is True when pooled is a real pooled output (CLIP, BERT-like) and False when it is
    only the mean of the tokens (T5), so that a caller can take the pooled vector from CLIP only.

    This follows SD3: diffusers' ``StableDiffusion3Pipeline`` loads its two CLIP encoders as
    ``CLIPTextModelWithProjection`` and takes their ``text_embeds`` as the pooled vector, and its third
    encoder as ``T5EncoderModel``, of which it uses only ``last_hidden_state`` (T5 gives no pooled
    vector in SD3; the mean here only fills the slot). Two differences from that pipeline: for CLIP it
    takes the penultimate hidden state as the token sequence where this class takes the last, and it
    passes no attention mask where this class passes the tokenizer's.

    The model is frozen and stays in eval mode (also under ``.train()``); files are read with
    ``local_files_only``, and ``path`` must hold the tokenizer too.
    """

    T5_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}

    def __init__(self, path: str, max_length: int = 32):
        super().__init__()
        from pathlib import Path

        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if not Path(path).is_dir():
            raise ValueError(f"path: expected a local directory with a saved transformers model, got {path!r}")
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"path: expected a saved transformers model config in {path!r}, got: {_first_line(err)}") from None
        kind = config.model_type
        architectures = config.architectures or []
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"path: expected a saved tokenizer beside the model in {path!r}, got: {_first_line(err)}") from None

        if kind == "clip":  # a full CLIPModel: keep the text model and text projection, drop the vision half
            text_config = config.text_config
            text_config.projection_dim = config.projection_dim
            model = self._load(transformers.CLIPTextModelWithProjection, path, config=text_config, quiet=True)
            self._pooled_from = "text_embeds"
        elif kind == "clip_text_model" and "CLIPTextModelWithProjection" in architectures:
            model = self._load(transformers.CLIPTextModelWithProjection, path)
            self._pooled_from = "text_embeds"
        elif kind == "clip_text_model":
            model = self._load(transformers.CLIPTextModel, path)
            self._pooled_from = "pooler_output"
        elif kind in self.T5_ENCODERS:  # an encoder-only or a full T5: its encoder only
            model = self._load(getattr(transformers, self.T5_ENCODERS[kind]), path)
            self._pooled_from = "mean"
        elif getattr(config, "vocab_size", None) and getattr(config, "hidden_size", None):
            try:
                model = AutoModel.from_pretrained(path, local_files_only=True)
            except ValueError as err:
                raise ValueError(f"path: unsupported model kind {kind!r} in {path!r} ({_first_line(err)})") from None
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = model.get_encoder()
            self._pooled_from = "pooler_output" if getattr(model, "pooler", None) is not None else "mean"
        else:
            raise ValueError(f"path: unsupported model kind {kind!r} (architectures {architectures}) in {path!r}; "
                             "expected a text encoder such as CLIP, T5 or BERT")

        self.model = model
        self.model.requires_grad_(False).eval()
        self.max_length = max_length
        self.gives_pooled = self._pooled_from != "mean"
        self.context_dim = model.config.hidden_size
        self.pooled_dim = model.config.projection_dim if self._pooled_from == "text_embeds" else self.context_dim

    @staticmethod
    def _load(cls, path: str, quiet: bool = False, **kwargs) -> nn.Module:
        """``cls.from_pretrained`` from local files, refusing a folder that lacks some of the class's weights."""
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        if quiet:  # the vision half of a full CLIPModel is expected to go unused: no report listing it
            logging.set_verbosity_error()
        try:
            model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True, **kwargs)
        finally:
            logging.set_verbosity(verbosity)
        if info["missing_keys"]:
            raise ValueError(f"path: {path!r} lacks weights of {cls.__name__}: {sorted(info['missing_keys'])[:4]}")
        return model

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """The encoder is frozen: it stays in eval mode (no dropout) whatever ``mode`` says."""
        super().train(mode)
        self.model.eval()
        return self

    def token_mask(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, max_length) bool: the tokenizer's attention mask (True on real tokens, False on padding)."""
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return batch["attention_mask"].bool()

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions → (tokens (B, max_length, context_dim), pooled (B, pooled_dim))."""
        if isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got a single string")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        with torch.no_grad():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = out.last_hidden_state
        if self._pooled_from == "mean":
            mask = batch["attention_mask"][..., None].to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            pooled = getattr(out, self._pooled_from)
        return tokens, pooled
