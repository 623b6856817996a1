"""Recaptioning (SD3 §5.2.2): alt-text made from full captions at its documented rates, the
synthetic/original mix, and the engine training on original or mixed captions."""
import json
import math

import pytest
import torch
from helpers import tiny

from minisd3.cli import main
from minisd3.engine.checkpoints import load_run
from minisd3.engine.config import TrainConfig, apply_overrides, preset_config
from minisd3.engine.loop import step_generator, train_run
from minisd3.engine.sources import ShapesLatentSource, ShapesSource, make_source
from minisd3.recaption import (
    ALT_TEXT_WORDS,
    FILLERS,
    SYNTHETIC_FRACTIONS,
    AltTextRates,
    mix_captions,
    original_caption,
)
from minisd3.seeding import make_generator
from minisd3.shapes import (
    COLOURS,
    COUNT_WORDS,
    MAX_CAPTION_WORDS,
    PLURALS,
    RELATIONS,
    SIZES,
    VOCABULARY,
    format_prompt,
    parse_caption,
    sample_prompt,
)
from minisd3.text import WordTokenizer

N = 4000
# distinct rates, so a rate wired to the wrong decision is caught
RATES = AltTextRates(one_group=0.3, colour_only=0.15, drop_size=0.7, drop_count=0.25, wrong_count=0.2,
                     drop_relation=0.65, filler=0.45)
NOUNS = {**{shape: shape for shape in PLURALS}, **{plural: shape for shape, plural in PLURALS.items()}}


def read_alt_text(text):
    """(filler or None, parts, join or None): each part a dict of count, size, colour, shape (None when not said)."""
    words = text.split()
    filler = None
    if " ".join(words[:2]) in FILLERS:
        filler, words = " ".join(words[:2]), words[2:]
    join, cut, width = None, None, 0
    for i, word in enumerate(words):
        if word in ("and", "above", "below"):
            join, cut, width = word, i, 1
        elif word in ("left", "right"):
            assert words[i + 1] == "of", text
            join, cut, width = f"{word} of", i, 2
    chunks = [words] if cut is None else [words[:cut], words[cut + width:]]
    parts = []
    for chunk in chunks:
        part = {"count": None, "size": None, "colour": None, "shape": None, "plural": None}
        rest = list(chunk)
        if rest and rest[0] in COUNT_WORDS:
            part["count"] = COUNT_WORDS[rest.pop(0)]
        if rest and rest[0] in SIZES:
            part["size"] = rest.pop(0)
        assert rest and rest[0] in COLOURS, text
        part["colour"] = rest.pop(0)
        if rest:
            noun = rest.pop(0)
            part["shape"], part["plural"] = NOUNS[noun], noun != NOUNS[noun]
        assert not rest, text
        parts.append(part)
    return filler, parts, join


def within(count, total, p):
    """A binomial count within 4 standard deviations of total·p."""
    return abs(count / total - p) <= 4 * math.sqrt(p * (1 - p) / total) + 1e-12


@pytest.fixture(scope="module")
def corpus():
    g = make_generator(0)
    prompts = [sample_prompt(g) for _ in range(N)]
    g = make_generator(1)
    return prompts, [original_caption(p, g, RATES) for p in prompts]


def test_the_default_rates_are_the_documented_ones():
    assert AltTextRates() == AltTextRates(one_group=0.5, colour_only=0.2, drop_size=0.6, drop_count=0.4,
                                          wrong_count=0.1, drop_relation=0.5, filler=0.3)
    assert ALT_TEXT_WORDS == ("and", "image", "photo", "picture")
    assert SYNTHETIC_FRACTIONS == {"full": 1.0, "mix": 0.5, "original": 0.0}


def test_each_rate_holds_by_counting(corpus):
    prompts, captions = corpus
    tally = {name: [0, 0] for name in ("one_group", "which", "colour_only", "drop_size", "drop_count", "wrong_count",
                                       "drop_relation", "filler")}

    def count(name, happened):
        tally[name][0] += bool(happened)
        tally[name][1] += 1

    fillers = []
    for prompt, text in zip(prompts, captions):
        filler, parts, join = read_alt_text(text)
        colour_only = parts[0]["shape"] is None
        count("colour_only", colour_only)
        if filler is not None or len(text.split()) + 2 <= MAX_CAPTION_WORDS:  # room for a filler
            count("filler", filler is not None)
        if filler is not None:
            fillers.append(filler)
        if colour_only:
            continue
        if len(prompt.groups) == 2:
            count("one_group", len(parts) == 1)
            if len(parts) == 1:
                count("which", parts[0]["colour"] == prompt.groups[0].colour
                      and parts[0]["shape"] == prompt.groups[0].shape)
            else:
                count("drop_relation", join == "and")
        count("drop_size", parts[0]["size"] is None)
        count("drop_count", parts[0]["count"] is None)
        for part in parts:
            if part["count"] is not None:
                group = next(g for g in prompt.groups if (g.colour, g.shape) == (part["colour"], part["shape"]))
                count("wrong_count", part["count"] != group.count)
    expected = {"one_group": RATES.one_group, "which": 0.5, "colour_only": RATES.colour_only,
                "drop_size": RATES.drop_size, "drop_count": RATES.drop_count, "wrong_count": RATES.wrong_count,
                "drop_relation": RATES.drop_relation, "filler": RATES.filler}
    for name, (hits, total) in tally.items():
        assert total > 300, (name, total)
        assert within(hits, total, expected[name]), (name, hits / total, expected[name])
    for filler in FILLERS:
        assert within(fillers.count(filler), len(fillers), 1 / 3), filler


def test_alt_text_is_vague_but_never_false_about_colour_shape_size_or_relation(corpus):
    prompts, captions = corpus
    for prompt, text in zip(prompts, captions):
        _, parts, join = read_alt_text(text)
        if parts[0]["shape"] is None:  # colour only: some of the prompt's colours, in order, each once
            colours = list(dict.fromkeys(g.colour for g in prompt.groups))
            said = [part["colour"] for part in parts]
            assert len(set(said)) == len(said) and set(said) <= set(colours) and said == sorted(said, key=colours.index)
            assert all(part["shape"] is None and part["count"] is None and part["size"] is None for part in parts)
            assert join in (None, "and")
            continue
        named = [next(g for g in prompt.groups if (g.colour, g.shape) == (p["colour"], p["shape"])) for p in parts]
        if len(parts) == 2:
            assert named == list(prompt.groups) and join in ("and", prompt.relation)
        for part, group in zip(parts, named):
            assert part["size"] in (None, group.size)
            shown = group.count if part["count"] is None else part["count"]
            assert part["plural"] == (shown != 1)  # the noun agrees with the count it shows
    counts = [n for text in captions for p in read_alt_text(text)[1] if (n := p["count"]) is not None]
    assert 3 in counts and set(RELATIONS) <= {read_alt_text(t)[2] for t in captions}


def test_every_alt_text_tokenises_with_the_extended_vocabulary_and_fits_the_caption_length(corpus):
    _, captions = corpus
    defaults = [original_caption(p, make_generator(7)) for p in corpus[0][:500]]
    tokenizer = WordTokenizer(VOCABULARY + ALT_TEXT_WORDS, max_length=MAX_CAPTION_WORDS + 1)  # the shapes preset's 11
    ids, mask = tokenizer(captions + defaults)
    assert mask.sum(1).min() >= 2 and mask.sum(1).max() <= MAX_CAPTION_WORDS + 1
    used = {w for text in captions for w in text.split()}
    assert set(ALT_TEXT_WORDS) <= used and used <= set(VOCABULARY) | set(ALT_TEXT_WORDS)
    with pytest.raises(ValueError, match="captions: unknown word 'and'"):
        WordTokenizer(VOCABULARY, MAX_CAPTION_WORDS + 1)(["red and blue"])


def test_alt_text_that_keeps_everything_is_the_full_caption_and_parses_back(corpus):
    prompts, _ = corpus
    keep_all = AltTextRates(**{name: 0.0 for name in AltTextRates.__dataclass_fields__})
    g = make_generator(3)
    assert all(original_caption(p, g, keep_all) == format_prompt(p) for p in prompts[:300])
    assert all(parse_caption(original_caption(p, g, keep_all)) == p for p in prompts[:300])
    _, captions = corpus
    untouched = [t for p, t in zip(prompts, captions) if t == format_prompt(p)]
    assert untouched and all(parse_caption(t) in prompts for t in untouched)
    # a full caption given as text is read with the grammar first
    assert original_caption(format_prompt(prompts[0]), make_generator(5), RATES) == \
        original_caption(prompts[0], make_generator(5), RATES)
    only_colours = AltTextRates(colour_only=1.0, one_group=0.0, filler=0.0)
    assert original_caption("two large red circles above one small blue square", None, only_colours) == "red and blue"
    assert original_caption("one large red circle below two small red squares", None, only_colours) == "red"


def test_a_seed_gives_the_same_captions_and_another_seed_others(corpus):
    prompts, captions = corpus
    g = make_generator(1)
    assert [original_caption(p, g, RATES) for p in prompts] == captions
    g = make_generator(2)
    assert [original_caption(p, g, RATES) for p in prompts[:200]] != captions[:200]
    full = [format_prompt(p) for p in prompts[:300]]
    assert mix_captions(full, make_generator(4)) == mix_captions(full, make_generator(4))
    assert mix_captions(full, make_generator(4)) != mix_captions(full, make_generator(5))


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_mix_keeps_the_synthetic_fraction_by_counting(corpus, fraction):
    full = [format_prompt(p) for p in corpus[0]]
    always_changed = AltTextRates(colour_only=1.0)  # colour-only alt-text never equals a full caption
    mixed = mix_captions(full, make_generator(9), fraction, always_changed)
    kept = sum(a == b for a, b in zip(mixed, full))
    assert within(kept, len(full), fraction), kept / len(full)
    assert mix_captions(full[:200], make_generator(9), 1.0) == full[:200]
    assert all(a != b for a, b in zip(mix_captions(full[:200], make_generator(9), 0.0, always_changed), full))
    assert mix_captions([], make_generator(0)) == []


@pytest.mark.parametrize("call, message", [
    (lambda: AltTextRates(drop_size=1.5), "drop_size: expected a probability in [0, 1], got 1.5"),
    (lambda: AltTextRates(filler=-0.1), "filler: expected a probability in [0, 1], got -0.1"),
    (lambda: AltTextRates(one_group=float("nan")), "one_group: expected a probability"),
    (lambda: AltTextRates(wrong_count=True), "wrong_count: expected a probability in [0, 1], got True"),
    (lambda: AltTextRates(colour_only="0.2"), "colour_only: expected a probability"),
    (lambda: mix_captions(["one small red circle"], None, 1.2), "synthetic_fraction: expected a probability in [0, 1], got 1.2"),
    (lambda: mix_captions(["one small red circle"], None, -1), "synthetic_fraction: expected a probability"),
    (lambda: mix_captions("one small red circle"), "captions: expected a list of caption strings, got a single string"),
    (lambda: mix_captions(["one small red circle"], 0), "generator: expected a torch.Generator or None, got int"),
    (lambda: original_caption("one small purple circle"), "caption: unknown word 'purple'"),
    (lambda: original_caption(3), "prompt: expected a Prompt or a caption string, got int"),
    (lambda: original_caption("one small red circle", None, 0.5), "rates: expected an AltTextRates, got float"),
    (lambda: ShapesSource(24, 0, captions="web"), "captions: expected one of ('full', 'mix', 'original'), got 'web'"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_config_checks_captions_and_the_command_line_sets_them():
    assert TrainConfig().captions == "full" and all(preset_config(p).captions == "full" for p in ("shapes", "glyphs"))
    assert apply_overrides(preset_config("shapes"), ["captions=mix"]).captions == "mix"
    with pytest.raises(ValueError, match=r"^captions: expected one of \('full', 'mix', 'original'\), got 'synthetic'$"):
        apply_overrides(preset_config("shapes"), ["captions=synthetic"])
    with pytest.raises(ValueError, match=r"^captions: .*expected 'full' for 'digits', got 'original'$"):
        apply_overrides(preset_config("digits"), ["captions=original"])
    with pytest.raises(ValueError, match=r"^captions: .*expected 'full' for 'glyphs', got 'mix'$"):
        apply_overrides(preset_config("glyphs"), ["captions=mix"])
    with pytest.raises(ValueError, match=r"^captions: .*expected 'full' for a latent cache, got 'mix'$"):
        apply_overrides(preset_config("shapes"), ["latents=data/latents/x", "captions=mix"])


@pytest.mark.parametrize("captions", ["original", "mix"])
def test_a_source_changes_only_the_captions_of_its_batches(captions):
    full, alt = ShapesSource(24, 0), ShapesSource(24, 0, captions=captions)
    assert full.vocabulary == tuple(VOCABULARY) and alt.vocabulary == tuple(VOCABULARY) + ALT_TEXT_WORDS
    g_full, g_alt = step_generator(0, 5), step_generator(0, 5)
    (x_full, c_full), (x_alt, c_alt) = full.batch(5, 64, g_full), alt.batch(5, 64, g_alt)
    assert torch.equal(x_full, x_alt) and torch.equal(g_full.get_state(), g_alt.get_state())  # same images, same draws after
    assert alt.batch(5, 64, step_generator(0, 5))[1] == c_alt  # reproducible from the step
    same = sum(a == b for a, b in zip(c_full, c_alt))
    assert (same < 20) if captions == "original" else (15 <= same <= 50)
    WordTokenizer(alt.vocabulary, 11)(c_alt)
    assert alt.eval_prompts(8, make_generator(3)) == full.eval_prompts(8, make_generator(3))  # evaluation: full captions
    assert all(parse_caption(p) for p in alt.eval_prompts(8, make_generator(3)))


def test_a_run_on_original_captions_trains_loads_and_samples(tmp_path):
    config = tiny("autoencoder=", "image_size=24", "captions=original", "max_steps=2", "depth=1", "head_dim=8",
                  "text_dim=16", "batch_size=4", "text_length=11")
    assert type(make_source(config)) is ShapesSource
    train_run(config, tmp_path / "run", progress=False)
    model, loaded, folder = load_run(tmp_path / "run")
    assert loaded.captions == "original"
    state = json.loads((folder / "state.json").read_text())
    assert state["vocabulary"] == list(VOCABULARY + ALT_TEXT_WORDS)
    images = model.sample(["one small red circle", "photo of red and blue"], steps=2, generator=make_generator(0))
    assert images.shape == (2, 3, 24, 24) and torch.isfinite(images).all()


def test_the_shapes_preset_trains_on_mixed_captions_and_the_commands_read_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for s in ["depth=1", "head_dim=8", "text_dim=16", "text_depth=1", "batch_size=4", "eval_samples=4",
                        "sample_every=100", "ckpt_every=100", "sample_steps=1", "warmup_steps=1", "device=cpu",
                        "data_workers=0", "captions=mix"] for a in ("--set", s)]
    assert main(["train", "--preset", "shapes", *sets, "--max-steps", "2", "--quiet", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["captions"] == "mix"
    _, config, _ = load_run(run)
    assert isinstance(make_source(config), ShapesLatentSource) and make_source(config).vocabulary[-4:] == ALT_TEXT_WORDS
    out = tmp_path / "x.png"
    assert main(["sample", "--ckpt", str(run), "--prompt", "one small red circle", "--n", "1", "--steps", "1",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.is_file()
    assert main(["eval", "--ckpt", str(run), "--samples", "4", "--steps", "1"]) == 0, capsys.readouterr().err
