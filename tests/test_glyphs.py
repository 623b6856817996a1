"""Lesson 10's data and reader: glyph renderings, the word split, and a reader that cannot flatter."""
import pytest
import torch

from minisd3.glyphs import (
    ALPHABET,
    BAND_TOP,
    CELL,
    MAX_LETTERS,
    all_words,
    caption_of,
    letter_cell,
    render_word,
    sample_glyphs,
    split_words,
    word_of,
)
from minisd3.seeding import make_generator
from minisd3.spelling import (
    UNREADABLE,
    chance_spelling,
    read_cells,
    read_words,
    score_spelling,
    spelling_report,
    templates,
    unreadable_fraction,
)


def test_rendering_puts_letter_i_in_cell_i_and_nothing_outside_the_band():
    image = render_word("cab")
    assert image.shape == (1, 24, 24) and image.min() == -1.0 and image.max() > 0.9
    rows, cols = CELL
    for i, letter in enumerate("cab"):
        cell = image[0, BAND_TOP:BAND_TOP + rows, cols * i:cols * (i + 1)]
        assert torch.equal(cell, torch.from_numpy(letter_cell(letter)))
    assert (image[0, :BAND_TOP] == -1).all() and (image[0, BAND_TOP + rows:] == -1).all()


def test_every_letter_has_ink_and_no_two_letters_render_alike():
    cells = torch.stack([torch.from_numpy(letter_cell(c)) for c in ALPHABET])
    assert ((cells > 0).flatten(1).sum(1) >= 4).all()
    distances = torch.cdist(cells.flatten(1), cells.flatten(1)) + torch.eye(26) * 1e9
    assert distances.min() > 2.0


def test_split_is_disjoint_seeded_and_every_held_out_letter_is_trained_at_its_position():
    split = split_words(0)
    assert len(split.train) == 600 and len(split.held_out) == 100
    assert not set(split.train) & set(split.held_out)
    assert split == split_words(0) and split != split_words(1)
    for word in split.held_out:
        for i, letter in enumerate(word):
            assert any(w[i] == letter for w in split.train)
    assert set(split.train) | set(split.held_out) <= set(all_words()) and len(all_words()) == 21 * 5 * 21


def test_split_refuses_too_many_words():
    with pytest.raises(ValueError, match="n_train \\+ n_held_out"):
        split_words(0, n_train=2200, n_held_out=10)


def test_sample_glyphs_draws_training_words_with_matching_captions():
    images, captions = sample_glyphs(50, make_generator(0))
    train = set(split_words().train)
    for image, caption in zip(images, captions):
        word = word_of(caption)
        assert word in train and torch.equal(image, render_word(word))


@pytest.mark.parametrize("caption, message", [
    ("the word cab", "double quotes"),
    ('the word "cab" and "dog"', "double quotes"),
    ('the word "Cab"', "lower-case letters a–z only"),
    ('the word "ca1"', "lower-case letters a–z only"),
    ('the word "cabs"', "1 to 3 letters"),
    ('the word ""', "1 to 3 letters"),
])
def test_bad_captions_are_refused_naming_the_argument(caption, message):
    with pytest.raises(ValueError, match=f"^prompt: .*{message}"):
        word_of(caption)


def test_caption_round_trip():
    assert word_of(caption_of("zop")) == "zop" and caption_of("zop") == 'the word "zop"'


# --------------------------------------------------------------------------- the reader


def test_reader_reads_clean_renderings_of_every_word_exactly():
    words = all_words()
    images = torch.stack([render_word(w) for w in words])
    score = score_spelling(images, list(words))
    assert score == {"characters": 1.0, "words": 1.0}
    assert read_words(torch.stack([render_word("ab"), render_word("q")])) == ["ab", "q"]


def test_reader_tolerates_mild_noise_on_renderings():
    split = split_words()
    images, captions = sample_glyphs(300, make_generator(1), split.held_out)
    noisy = images + 0.1 * torch.randn(images.shape, generator=make_generator(2))
    assert score_spelling(noisy, captions)["characters"] >= 0.995


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "grey"])
def test_reader_scores_noise_at_or_below_chance(kind):
    g = make_generator(3)
    n = 200
    images = {"gaussian": torch.randn(n, 1, 24, 24, generator=g),
              "uniform": torch.rand(n, 1, 24, 24, generator=g) * 2 - 1,
              "grey": torch.zeros(n, 1, 24, 24)}[kind]
    captions = split_words().captions(n, make_generator(4))
    score = score_spelling(images, captions)
    assert score["characters"] <= 1 / 26 and score["words"] == 0.0
    if kind != "grey":
        assert unreadable_fraction(images) > 0.95


def test_reader_rejects_a_rendering_of_a_different_word():
    assert score_spelling(render_word("cat")[None], ['the word "cab"']) == {"characters": 2 / 3, "words": 0.0}
    assert read_cells(render_word("cat")[None] * 0 - 1) == [[" "] * MAX_LETTERS]


def test_acceptance_radius_keeps_every_template_readable_only_as_itself():
    table, radius = templates()
    assert radius.min() > 1.0
    blend = torch.from_numpy(((table[0] + table[1]) / 2).reshape(CELL)).float()  # halfway between a and b
    image = torch.full((1, 1, 24, 24), -1.0)
    image[0, 0, BAND_TOP:BAND_TOP + CELL[0], :CELL[1]] = blend
    assert read_cells(image)[0][0] == UNREADABLE


def test_chance_is_the_score_against_other_prompts_and_near_letter_frequencies():
    split = split_words()
    images, captions = sample_glyphs(400, make_generator(5), split.train)
    chance = chance_spelling(images, captions, make_generator(6))
    assert chance["words"] < 0.02 and 0.05 < chance["characters"] < 0.2  # CVC words: vowels 1/5, consonants 1/21
    report = spelling_report(images, captions, make_generator(6))
    assert report["words"] == 1.0 and report["words_chance"] == chance["words"]


def test_reader_refuses_images_of_another_shape():
    with pytest.raises(ValueError, match="^images: expected a tensor \\(N, 1, 24, 24\\)"):
        read_words(torch.zeros(2, 3, 24, 24))
    with pytest.raises(ValueError, match="^prompts: expected 2 prompts"):
        score_spelling(torch.zeros(2, 1, 24, 24), ["ab"])
