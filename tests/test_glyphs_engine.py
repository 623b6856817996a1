"""The glyphs preset through the engine and the command line: training, spelling scores, sampling, errors."""
import csv
import json

import pytest
from helpers import TINY, cli, tiny

from minisd3.engine.checkpoints import load_run
from minisd3.engine.config import apply_overrides, preset_config
from minisd3.engine.loop import train_run
from minisd3.multi_text import MultiTextEncoder

GLYPH_TINY = [*TINY, "eval_samples=6", "sample_every=2"]


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("glyphs") / "run"
    summary = train_run(tiny(*GLYPH_TINY[len(TINY):], "max_steps=2", preset="glyphs"), run, progress=False)
    return run, summary


def test_the_preset_trains_and_scores_spelling_with_chance(glyph_run):
    run, summary = glyph_run
    evaluation = summary["evaluation"]
    for key in ("spelling", "spelling_chance", "spelling_train_words", "spelling_train_words_chance"):
        assert set(evaluation[key]) == {"characters", "words"}
        assert all(0 <= v <= 1 for v in evaluation[key].values())
    rows = list(csv.DictReader(open(run / "spelling.csv")))
    assert [r["step"] for r in rows] == ["2"] and "spelling_words" in rows[0]
    assert (run / "samples" / "step_0000002.png").is_file()
    assert "held-out" not in (run / "samples" / "step_0000002.txt").read_text()  # prompts only
    model, config, _ = load_run(run)
    assert isinstance(model.text_encoder, MultiTextEncoder) and model.text_encoder.names == ("word", "char")
    assert config.p_uncond == 0.3 and config.drop_shape(4) == (4, 2)


@pytest.mark.parametrize("encoders", ["word", "char"])
def test_single_encoder_glyph_models_build(encoders, tmp_path):
    summary = train_run(tiny(*GLYPH_TINY[len(TINY):], "max_steps=1", "sample_every=100", f"text_encoders={encoders}",
                             preset="glyphs"), tmp_path / encoders, progress=False)
    model, _, _ = load_run(tmp_path / encoders)
    assert model.text_encoder.names == (encoders,) and "spelling" in summary["evaluation"]


@pytest.mark.parametrize("setting, message", [
    ("text_encoders=word+t5", "text_encoders: expected distinct names among ('word', 'char')"),
    ("text_encoders=char+char", "text_encoders: expected distinct names"),
    ("image_size=32", "image_size: glyphs are 24×24 pixels"),
])
def test_bad_glyph_settings_are_named(setting, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        apply_overrides(preset_config("glyphs"), [setting])


def test_several_encoders_are_refused_for_other_data():
    with pytest.raises(ValueError, match="text_encoders: expected 'word' for 'shapes'"):
        apply_overrides(preset_config("shapes"), ["text_encoders=word+char"])


def test_sample_a_quoted_word_from_the_command_line(glyph_run, tmp_path):
    run, _ = glyph_run
    out = tmp_path / "cab"
    done = cli("sample", "--ckpt", str(run), "--prompt", 'the word "cab"', "--n", "2", "--steps", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "grid.png").is_file() and (out / "sample_001.png").is_file()
    assert "wrote" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("prompt, message", [
    ("the word cab", "--prompt: expected the word in double quotes"),
    ('the word "ca1"', "--prompt: expected lower-case letters a–z only"),
    ('the word "cabin"', "--prompt: expected 1 to 3 letters"),
])
def test_bad_prompts_get_one_line_naming_the_flag(glyph_run, prompt, message, tmp_path):
    run, _ = glyph_run
    done = cli("sample", "--ckpt", str(run), "--prompt", prompt, "--n", "1", "--steps", "1", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_eval_prints_the_spelling_table(glyph_run, tmp_path):
    run, _ = glyph_run
    out = tmp_path / "eval.json"
    done = cli("eval", "--ckpt", str(run), "--samples", "4", "--steps", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out words" in done.stdout and "chance" in done.stdout
    assert "spelling" in json.loads(out.read_text())["results"][0]


def test_sample_with_a_subset_of_text_encoders(glyph_run, tmp_path):
    run, _ = glyph_run
    done = cli("sample", "--ckpt", str(run), "--prompt", 'the word "cab"', "--n", "1", "--steps", "1",
               "--text-encoders", "word", "--out", str(tmp_path / "w.png"))
    assert done.returncode == 0, done.stderr[-2000:]
    bad = cli("sample", "--ckpt", str(run), "--prompt", 'the word "cab"', "--n", "1", "--steps", "1",
              "--text-encoders", "t5", "--out", str(tmp_path / "t.png"))
    assert bad.returncode == 2 and "--text-encoders: expected names among ('word', 'char')" in bad.stderr
    assert "Traceback" not in bad.stderr
