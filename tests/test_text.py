"""Text conditioning: the word tokenizer, the small encoder, a pretrained encoder from a local folder,
and the text-to-image wrapper's dropout and sampling."""
import pytest
import torch

from minisd3.models import MMDiTConfig
from minisd3.seeding import make_generator
from minisd3.text import PretrainedTextEncoder, SmallTextEncoder, WordTokenizer
from minisd3.text_to_image import TextToImage

WORDS = ["one", "two", "red", "blue", "circle", "circles", "square", "above", "a"]


def test_tokenizer_ids_mask_and_bos():
    tok = WordTokenizer(WORDS, max_length=6)
    ids, mask = tok(["two red circles", ""])
    assert ids.shape == (2, 6) and ids[0, 0] == ids[1, 0] == tok.stoi["[BOS]"]
    assert mask.sum(1).tolist() == [4, 1]
    assert [tok.itos[i] for i in ids[0, 1:4]] == ["two", "red", "circles"]


def test_tokenizer_rejects_unknown_words_naming_them():
    with pytest.raises(ValueError, match="unknown word 'green'"):
        WordTokenizer(WORDS)(["green circle"])
    with pytest.raises(ValueError, match="at most 3 words"):
        WordTokenizer(WORDS, max_length=4)(["one red circle above"])


def test_small_encoder_depends_on_words_not_padding():
    torch.manual_seed(0)
    enc = SmallTextEncoder(WordTokenizer(WORDS))
    tokens, pooled = enc(["red circle", "blue circle", "red circle"])
    assert tokens.shape == (3, 16, 64) and pooled.shape == (3, 64)
    assert torch.allclose(pooled[0], pooled[2]) and not torch.allclose(pooled[0], pooled[1])


def test_pretrained_encoder_loads_a_local_model(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    tokens, pooled = enc(["two red circles", "a blue square"])
    assert tokens.shape == (2, 8, 32) and pooled.shape == (2, 32)
    assert not any(p.requires_grad for p in enc.parameters())


def test_pretrained_encoder_wants_a_local_directory(tmp_path):
    with pytest.raises(ValueError, match="path: expected a local directory"):
        PretrainedTextEncoder(str(tmp_path / "missing"))


def tiny_text_to_image():
    torch.manual_seed(0)
    enc = SmallTextEncoder(WordTokenizer(WORDS), dim=32, depth=1, heads=2)
    cfg = MMDiTConfig(input_size=8, in_channels=3, depth=2, heads=2, head_dim=16, context_dim=32, pooled_dim=32)
    return TextToImage(cfg, enc)


def randomise(module):
    """Move the zero-initialised adaLN and output layers off zero, as training would."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.05)


def test_text_to_image_loss_backpropagates_into_the_encoder():
    model = tiny_text_to_image()
    randomise(model.mmdit)
    loss = model.loss(torch.randn(4, 3, 8, 8), ["red circle"] * 4, p_uncond=0.0, generator=make_generator(0))
    loss.backward()
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0


def test_text_to_image_dropout_replaces_captions_by_the_empty_one(monkeypatch):
    model = tiny_text_to_image()
    seen = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda caps: seen.extend(caps) or original(caps))
    model.loss(torch.randn(2000, 3, 8, 8), ["red circle"] * 2000, p_uncond=0.3, generator=make_generator(0))
    assert abs(seen.count("") / len(seen) - 0.3) < 0.04


def test_text_to_image_sampling_shape_and_w1_equals_conditional():
    model = tiny_text_to_image()
    randomise(model.mmdit)
    noise = torch.randn(2, 3, 8, 8)
    a = model.sample(["red circle", "blue square"], steps=3, cfg=1.0, noise=noise)
    ctx, pooled = model.encode(["red circle", "blue square"])
    field = lambda z, t: model.mmdit(z, t, ctx, pooled)  # noqa: E731
    from minisd3.rectified_flow import sample
    assert a.shape == (2, 3, 8, 8) and torch.allclose(a, sample(field, noise, 3), atol=1e-5)
    assert not torch.allclose(a, model.sample(["red circle", "blue square"], steps=3, cfg=4.0, noise=noise))


def test_text_to_image_refuses_mismatched_text_dims():
    enc = SmallTextEncoder(WordTokenizer(WORDS), dim=32, depth=1, heads=2)
    with pytest.raises(ValueError, match="context_dim 32"):
        TextToImage(MMDiTConfig(context_dim=48, pooled_dim=32), enc)
