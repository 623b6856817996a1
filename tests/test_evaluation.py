"""FID through torch-fidelity and the eval command's step sweep.

The real Inception weights cannot be downloaded here, so the fixture saves a randomly initialised
torch-fidelity InceptionV3 in the weights file's own format (a ``torch.save``d state dict): the
plumbing, the image conversion and the distance are then tested exactly as a user runs them.
"""
import csv
import json
from unittest import mock

import pytest
import torch
import torch_fidelity
from helpers import cli, tiny
from torch import nn

from minisd3.engine.evaluation import INCEPTION_FILE, _Uint8Images, fid, inception_weights
from minisd3.engine.loop import train_run
from minisd3.seeding import make_generator


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"), mock.patch("torch.load", return_value={}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    for module in net.modules():  # variance-preserving so that features neither vanish nor explode
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("hub") / INCEPTION_FILE
    torch.save(net.state_dict(), path)
    return path


def blobs(n, seed, brightness, channels=3):
    g = make_generator(seed)
    return (brightness + 0.3 * torch.randn(n, channels, 16, 16, generator=g)).clamp(-1, 1)


def test_fid_is_zero_for_one_set_and_grows_with_the_difference(inception_file):
    grey = blobs(16, 0, -0.5, channels=1)
    same = fid(grey, grey.expand(-1, 3, -1, -1), str(inception_file))  # grey images are read as RGB
    near = fid(grey, blobs(16, 1, -0.5), str(inception_file))
    far = fid(grey, blobs(16, 2, 0.6), str(inception_file))
    assert abs(same) < 1e-3 * far
    assert 0 < near < far
    # the reference statistics are computed once and reused; the value is torch-fidelity's own
    oracle = torch_fidelity.calculate_metrics(input1=_Uint8Images(grey), input2=_Uint8Images(blobs(16, 2, 0.6)),
                                              fid=True, verbose=False, cuda=False, save_cpu_ram=True,
                                              feature_extractor_weights_path=str(inception_file))
    assert far == pytest.approx(oracle["frechet_inception_distance"], rel=1e-6)


def test_missing_inception_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception_weights: expected torch-fidelity's Inception weights at"):
        inception_weights(str(tmp_path / "nothing.pth"))
    with pytest.raises(ValueError, match=r"images: expected \(N, 1 or 3, H, W\)"):
        fid(torch.zeros(4, 2, 8, 8), torch.zeros(4, 2, 8, 8), str(tmp_path / "nothing.pth"))


def test_eval_sweeps_sampling_steps_with_fid(tmp_path, inception_file):
    train_run(tiny("max_steps=1", "image_size=8", preset="digits"), tmp_path / "run", progress=False)
    out = tmp_path / "sweep.csv"
    done = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "12", "--steps", "1", "3", "--fid",
               "--fid-real", "16", "--inception-weights", str(inception_file), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("[1/2] 12 samples, 1 euler steps, cfg") and "[2/2]" in done.stdout  # progress
    assert "sliced W" in done.stdout and "FID" in done.stdout and f"wrote {out}" in done.stdout  # table, files
    as_json = tmp_path / "sweep.json"
    again = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "12", "--steps", "1", "3", "--fid",
                "--fid-real", "16", "--inception-weights", str(inception_file), "--out", str(as_json))
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads(as_json.read_text())["results"]
    assert [r["steps"] for r in results] == [1, 3] and all(r["fid"] > 0 and r["fid_reference"] == 16 for r in results)
    rows = list(csv.DictReader(out.open()))
    assert [int(r["steps"]) for r in rows] == [1, 3]
    assert [float(r["fid"]) for r in rows] == pytest.approx([r["fid"] for r in results])
    assert [float(r["sliced_wasserstein"]) for r in rows] == pytest.approx([r["sliced_wasserstein"] for r in results])
    both = cli("eval", "--ckpt", str(tmp_path / "run"), "--samples", "4", "--steps", "1", "2", "--cfg", "1", "3",
               "--out", str(as_json))
    assert both.returncode == 0, both.stderr[-3000:]
    assert [(r["cfg"], r["steps"]) for r in json.loads(as_json.read_text())["results"]] == [(1, 1), (1, 2), (3, 1),
                                                                                           (3, 2)]
    not_a_table = cli("eval", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "sweep.txt"))
    assert not_a_table.returncode == 2 and "--out: expected a file name ending in .csv or .json" in not_a_table.stderr
    bad = cli("eval", "--ckpt", str(tmp_path / "run"), "--steps", "0")
    assert bad.returncode == 2 and "--steps: expected positive step counts, got 0" in bad.stderr


def test_eval_csv_puts_chance_beside_adherence_for_both_prompt_sets(tmp_path):
    from minisd3.adherence import ATTRIBUTES
    from minisd3.engine.evaluation import ADHERENCE_KEYS, eval_columns, write_eval_csv

    assert ADHERENCE_KEYS == ("adherence", "chance", "adherence_train_pairs", "chance_train_pairs")
    report = {a: 0.5 for a in (*ATTRIBUTES, "overall")}
    result = {"steps": 4, "method": "euler", "cfg": 3.0, "shift": 1.0, "samples": 8, "sliced_wasserstein": 0.1,
              "adherence": {**report, "overall": 0.4}, "chance": {**report, "overall": 0.01},
              "adherence_train_pairs": {**report, "overall": 0.8}, "chance_train_pairs": {**report, "overall": 0.02}}
    write_eval_csv([result], tmp_path / "sweep.csv")
    [row] = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert list(row) == list(eval_columns())
    assert [float(row[f"{key}_overall"]) for key in ADHERENCE_KEYS] == [0.4, 0.01, 0.8, 0.02]
    assert float(row["chance_train_pairs_relation"]) == 0.5 and row["fid"] == ""
