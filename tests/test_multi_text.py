"""Two text encoders used as SD3 uses CLIP and T5: tokenizers, independent dropout, combined conditioning."""
import pytest
import torch

from minisd3.models import MMDiTConfig
from minisd3.multi_text import MultiTextEncoder, encoder_drop_mask
from minisd3.seeding import make_generator
from minisd3.text import BOS, PAD, UNK, CharTokenizer, SmallTextEncoder, WordTokenizer
from minisd3.text_to_image import TextToImage

CAPTION = 'the word "cab"'


def test_char_tokenizer_bos_one_token_per_character_then_padding():
    tok = CharTokenizer(max_length=16)
    ids, mask = tok([CAPTION, "ab"])
    assert ids.shape == mask.shape == (2, 16)
    assert ids[0, 0] == tok.stoi[BOS] and tok.itos[ids[0, 1]] == "t" and tok.itos[ids[0, 14]] == '"'
    assert mask[0].sum() == 1 + len(CAPTION) and mask[1].sum() == 3
    assert (ids[1, 3:] == tok.stoi[PAD]).all() and tok.stoi[PAD] == 0


def test_char_tokenizer_maps_unknown_characters_to_unk_and_refuses_long_captions():
    tok = CharTokenizer(max_length=8)
    ids, _ = tok(["café"])
    assert ids[0, 3] == tok.stoi["f"] and ids[0, 4] == tok.stoi[UNK]
    with pytest.raises(ValueError, match="^captions: expected at most 7 characters, got 8"):
        tok(["abcdefgh"])
    with pytest.raises(ValueError, match="^captions: expected a list"):
        tok("abc")


def test_word_tokenizer_splits_quotes_and_maps_unknown_words_to_one_unk():
    tok = WordTokenizer(["the", "word", "cab"], max_length=8, unknown=True)
    ids, mask = tok([CAPTION, 'the word "zop"'])
    assert [tok.itos[i] for i in ids[0, :4]] == [BOS, "the", "word", "cab"]
    assert tok.itos[ids[1, 3]] == UNK and mask.sum(1).tolist() == [4, 4]
    strict = WordTokenizer(["the", "word", "cab"], max_length=8)
    with pytest.raises(ValueError, match="unknown word 'zop'"):
        strict(['the word "zop"'])


def test_encoder_dropout_is_independent_per_encoder():
    p, n = 0.3, 40_000
    drop = encoder_drop_mask(n, 2, p, make_generator(0)).float()
    assert drop.shape == (n, 2)
    assert torch.allclose(drop.mean(0), torch.full((2,), p), atol=0.01)
    assert abs((drop[:, 0] * drop[:, 1]).mean() - p * p) < 0.01  # no text at all: p², as SD3's p³ over three
    assert abs(((1 - drop[:, 0]) * (1 - drop[:, 1])).mean() - (1 - p) ** 2) < 0.01


def two_encoders(width=16):
    word = SmallTextEncoder(WordTokenizer(["the", "word", "cab", "dog"], 8, unknown=True), dim=8, depth=1, heads=1)
    char = SmallTextEncoder(CharTokenizer(max_length=16), dim=12, depth=1, heads=1, gives_pooled=False)
    for module in (word, char):
        for param in module.parameters():
            torch.nn.init.normal_(param, std=0.3)
    return MultiTextEncoder({"word": word, "char": char}, width=width)


def test_combined_conditioning_shapes_order_and_pooled_from_the_word_encoder_only():
    enc = two_encoders()
    ctx, pooled = enc([CAPTION, 'the word "dog"'])
    assert ctx.shape == (2, 8 + 16, 16) and pooled.shape == (2, 8)
    assert enc.segments == {"word": slice(0, 8), "char": slice(8, 24)} and enc.pooled_dim == 8
    word_tokens, word_pooled = enc.encoders["word"]([CAPTION, 'the word "dog"'])
    assert torch.allclose(ctx[:, :8], enc.projections["word"](word_tokens))  # word first, then characters
    assert torch.allclose(pooled, word_pooled)


def test_dropping_an_encoder_zeroes_its_segment_and_its_pooled_vector():
    enc = two_encoders()
    full, pooled = enc([CAPTION, CAPTION])
    ctx, pooled_kept = enc([CAPTION, CAPTION], keep=torch.tensor([[True, False], [False, True]]))
    assert torch.equal(ctx[0, :8], full[0, :8]) and (ctx[0, 8:] == 0).all()
    assert (ctx[1, :8] == 0).all() and torch.equal(ctx[1, 8:], full[1, 8:])
    assert torch.equal(pooled_kept[0], pooled[0]) and (pooled_kept[1] == 0).all()
    only, _ = enc([CAPTION], only=["word"])
    assert (only[0, 8:] == 0).all() and torch.equal(only[0, :8], full[0, :8])
    empty, empty_pooled = enc([""])
    assert (empty == 0).all() and (empty_pooled == 0).all()  # "" is the null condition: no encoder


def test_token_mask_marks_real_tokens_of_kept_encoders():
    enc = two_encoders()
    mask = enc.token_mask([CAPTION, ""], only=["char"])
    assert mask.shape == (2, 24)
    assert not mask[:, :8].any() and mask[0, 8:].sum() == 1 + len(CAPTION) and not mask[1].any()


def test_character_only_encoder_gives_a_zero_pooled_vector_of_its_width():
    char = SmallTextEncoder(CharTokenizer(max_length=16), dim=12, depth=1, heads=1, gives_pooled=False)
    enc = MultiTextEncoder({"char": char}, width=16)
    ctx, pooled = enc([CAPTION])
    assert ctx.shape == (1, 16, 16) and pooled.shape == (1, 16) and (pooled == 0).all()


def test_bad_arguments_are_named():
    enc = two_encoders()
    with pytest.raises(ValueError, match="^keep: expected shape \\(1, 2\\)"):
        enc([CAPTION], keep=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="^only: expected text encoders among"):
        enc([CAPTION], only=["t5"])
    with pytest.raises(ValueError, match="^pooled_from: expected names among"):
        MultiTextEncoder({"word": enc.encoders["word"]}, 8, pooled_from=["clip"])


def test_text_to_image_drops_each_encoder_independently_in_training(monkeypatch):
    enc = two_encoders(width=16)
    model = TextToImage(MMDiTConfig(input_size=8, in_channels=1, depth=1, heads=1, head_dim=16, context_dim=16,
                                    pooled_dim=8), enc)
    seen = []
    original = enc.forward
    monkeypatch.setattr(enc, "forward", lambda caps, keep=None, only=None: seen.append(keep) or original(caps, keep, only))
    model.loss(torch.randn(4000, 1, 8, 8), [CAPTION] * 4000, p_uncond=0.3, generator=make_generator(0))
    keep = seen[0].float()
    assert keep.shape == (4000, 2)
    assert torch.allclose(keep.mean(0), torch.full((2,), 0.7), atol=0.03)
    assert abs((1 - keep).prod(1).mean() - 0.09) < 0.02


def test_a_single_combined_encoder_is_dropped_at_rate_p_not_always(monkeypatch):
    char = SmallTextEncoder(CharTokenizer(max_length=16), dim=8, depth=1, heads=1, gives_pooled=False)
    enc = MultiTextEncoder({"char": char}, width=16)
    model = TextToImage(MMDiTConfig(input_size=8, in_channels=1, depth=1, heads=1, head_dim=16, context_dim=16,
                                    pooled_dim=16), enc)
    seen = []
    original = enc.forward
    monkeypatch.setattr(enc, "forward", lambda caps, keep=None, only=None: seen.append(keep) or original(caps, keep, only))
    model.loss(torch.randn(2000, 1, 8, 8), [CAPTION] * 2000, p_uncond=0.3, generator=make_generator(0))
    assert seen[0].shape == (2000, 1) and abs(seen[0].float().mean() - 0.7) < 0.04
