"""Text-to-image that works: a short run of the `shapes` recipe beats chance, and the stored course
model reproduces the adherence recorded beside it.

The full preset is never trained here (about 10 CPU minutes); the short run is the same recipe with
its schedule compressed to a few hundred steps.
"""
import csv

import torch

from minisd3.adherence import ATTRIBUTES
from minisd3.engine.checkpoints import STORED_MODELS, load_run
from minisd3.engine.config import apply_overrides, preset_config
from minisd3.engine.evaluation import evaluate
from minisd3.engine.loop import train_run
from minisd3.engine.sources import make_source

COURSE_REFERENCE = STORED_MODELS / "course" / "run" / "eval_64.csv"


def test_a_short_run_of_the_recipe_follows_colour_and_shape_above_chance(tmp_path):
    config = apply_overrides(preset_config("shapes"), ["max_steps=300", "warmup_steps=30", "sample_every=300",
                                                       "ckpt_every=300", "eval_samples=64", "device=cpu"])
    summary = train_run(config, tmp_path, progress=False)
    result = summary["evaluation"]
    trained, chance = result["adherence_train_pairs"], result["chance_train_pairs"]
    # training pairs: colour and shape words are followed far more often than by a model that ignores them
    assert trained["colour"] >= chance["colour"] + 0.4, (trained, chance)
    assert trained["shape"] >= chance["shape"] + 0.1, (trained, chance)
    # held-out pairs: colour composes with shapes never seen in that colour
    assert result["adherence"]["colour"] >= result["chance"]["colour"] + 0.3, result


def reference_rows():
    with open(COURSE_REFERENCE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_stored_course_model_reproduces_its_recorded_adherence():
    torch.set_num_threads(1)
    row = reference_rows()[0]
    model, config, _ = load_run("course")
    result = evaluate(model, make_source(config), int(row["samples"]), int(row["steps"]), float(row["cfg"]),
                      float(row["shift"]), seed=0)
    for key, prefix in (("adherence", "adherence_"), ("adherence_train_pairs", "adherence_train_pairs_")):
        for attribute in (*ATTRIBUTES, "overall"):
            recorded = row[prefix + attribute]
            if recorded:
                assert abs(result[key][attribute] - float(recorded)) <= 0.03, (key, attribute, result[key], row)
