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


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]  # [SEP] (id 3) ends every caption: CLIP's EOS here
CLIP_TEXT = dict(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
T5_SMALL = dict(vocab_size=len(VOCAB), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0,
                eos_token_id=3, decoder_start_token_id=0)


def save_tokenizer(folder):
    """A word-level tokenizer over VOCAB, "[CLS] words [SEP]", saved so that AutoTokenizer loads it from the folder.

    (Not BertTokenizerFast(vocab_file=...): transformers 5 ignores that file and maps every word to [UNK].)
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def save_model(folder, model):
    torch.manual_seed(0)
    with torch.no_grad():  # random weights well away from any initialisation a fresh, unloaded model would get
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.eval().save_pretrained(folder)
    save_tokenizer(folder)
    return model


def clip_with_projection_folder(folder):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return save_model(folder, CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_TEXT, projection_dim=24)))


def full_clip_folder(folder):
    from transformers import CLIPConfig, CLIPModel

    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                  patch_size=4)
    return save_model(folder, CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=vision, projection_dim=24)))


def t5_encoder_folder(folder, dropout_rate=0.0):
    from transformers import T5Config, T5EncoderModel

    return save_model(folder, T5EncoderModel(T5Config(**T5_SMALL, dropout_rate=dropout_rate, is_encoder_decoder=False)))


def batch_of(enc, captions):
    """The ids and mask the encoder gives its model, to run the reference model on the same input."""
    b = enc.tokenizer(captions, padding="max_length", truncation=True, max_length=enc.max_length, return_tensors="pt")
    return dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])


CAPTIONS = ["two red circles", "a blue square"]


def test_pretrained_encoder_loads_a_local_model(tmp_path):
    from transformers import BertConfig, BertModel

    save_tokenizer(tmp_path)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    tokens, pooled = enc(["two red circles", "a blue square"])
    assert tokens.shape == (2, 8, 32) and pooled.shape == (2, 32) and enc.gives_pooled
    assert not any(p.requires_grad for p in enc.parameters())


def test_pretrained_encoder_loads_a_t5_encoder_folder_as_encoder_only_with_mean_pooling(tmp_path):
    import json

    from transformers import T5EncoderModel

    ref = t5_encoder_folder(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["is_encoder_decoder"] is False
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    assert type(enc.model) is T5EncoderModel and enc.context_dim == enc.pooled_dim == 16 and not enc.gives_pooled
    tokens, pooled = enc(CAPTIONS)
    batch = batch_of(enc, CAPTIONS)
    expected = ref(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    assert tokens.shape == (2, 8, 16) and torch.allclose(tokens, expected, atol=1e-5)
    assert torch.allclose(pooled, (expected * mask).sum(1) / mask.sum(1), atol=1e-5)


def test_pretrained_encoder_uses_the_encoder_of_a_full_t5(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    ref = save_model(tmp_path, T5ForConditionalGeneration(T5Config(**T5_SMALL, dropout_rate=0.0)))
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    tokens, _ = enc(CAPTIONS)
    assert torch.allclose(tokens, ref.get_encoder()(**batch_of(enc, CAPTIONS)).last_hidden_state, atol=1e-5)
    assert not any("decoder" in name for name, _ in enc.named_parameters())


def test_pretrained_encoder_stays_in_eval_mode_under_train(tmp_path):
    t5_encoder_folder(tmp_path, dropout_rate=0.5)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8).train()
    assert not enc.model.training and torch.equal(enc(CAPTIONS)[0], enc(CAPTIONS)[0])


def test_pretrained_encoder_pools_clip_with_projection_by_its_text_embeds(tmp_path):
    from transformers import CLIPTextModelWithProjection

    ref = clip_with_projection_folder(tmp_path)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    assert type(enc.model) is CLIPTextModelWithProjection and enc.gives_pooled
    assert (enc.context_dim, enc.pooled_dim) == (16, 24)
    tokens, pooled = enc(CAPTIONS)
    out = ref(**batch_of(enc, CAPTIONS))
    assert pooled.shape == (2, 24) and torch.allclose(pooled, out.text_embeds, atol=1e-5)
    assert torch.allclose(tokens, out.last_hidden_state, atol=1e-5)


def test_pretrained_encoder_loads_the_text_half_of_a_full_clip_model(tmp_path):
    ref = full_clip_folder(tmp_path)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    assert (enc.context_dim, enc.pooled_dim) == (16, 24) and enc.gives_pooled
    assert not any("vision" in name for name, _ in enc.named_parameters())
    tokens, pooled = enc(CAPTIONS)
    features = ref.get_text_features(**batch_of(enc, CAPTIONS))
    features = features if isinstance(features, torch.Tensor) else features.pooler_output  # transformers 5: an output
    assert pooled.shape == (2, 24) and torch.allclose(pooled, features, atol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.model.training


@pytest.mark.parametrize("make", [t5_encoder_folder, clip_with_projection_folder, full_clip_folder])
def test_pretrained_encoder_tokens_have_the_shape_and_depend_on_the_caption(tmp_path, make):
    make(tmp_path)
    enc = PretrainedTextEncoder(str(tmp_path), max_length=8)
    tokens, pooled = enc([*CAPTIONS, CAPTIONS[0]])
    assert tokens.shape == (3, 8, enc.context_dim) and pooled.shape == (3, enc.pooled_dim)
    assert torch.allclose(tokens[0], tokens[2]) and not torch.allclose(tokens[0], tokens[1], atol=1e-3)
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)


def test_pretrained_encoder_refuses_an_unsupported_model_kind(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=8, patch_size=4)).save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="path: unsupported model kind 'clip_vision_model'"):
        PretrainedTextEncoder(str(tmp_path))


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
    original = model.text_encoder.forward
    monkeypatch.setattr(model.text_encoder, "forward", lambda caps: seen.extend(caps) or original(caps))
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


def test_a_local_clip_and_t5_pair_combine_as_in_sd3(tmp_path):
    from minisd3.multi_text import MultiTextEncoder

    clip_with_projection_folder(tmp_path / "clip")
    t5_encoder_folder(tmp_path / "t5")
    clip = PretrainedTextEncoder(str(tmp_path / "clip"), max_length=6)
    t5 = PretrainedTextEncoder(str(tmp_path / "t5"), max_length=8)
    pair = MultiTextEncoder({"clip": clip, "t5": t5}, width=32)
    assert pair.pooled_from == ("clip",) and pair.pooled_dim == clip.pooled_dim  # T5 gives no pooled vector
    captions = ["a red circle", "two blue squares"]
    c_ctxt, pooled = pair(captions)
    assert c_ctxt.shape == (2, 6 + 8, 32) and torch.allclose(pooled, clip(captions)[1])
    assert pair.token_mask(captions).shape == (2, 14)
    without_t5, _ = pair(captions, only=["clip"])
    assert (without_t5[:, 6:] == 0).all() and torch.equal(without_t5[:, :6], c_ctxt[:, :6])
