"""Diffusion-DPO for rectified flow (minisd3.preference): the loss against a hand computation, its
gradient's direction, log 2 at the start, the pairs a judge picks, and fine-tuning with each objective."""
import copy
import math

import pytest
import torch

from minisd3.models import MMDiTConfig
from minisd3.preference import (
    PreferencePairs,
    attributes_right,
    dpo_loss,
    dpo_objective,
    finetune,
    preference_pairs,
    velocity_error,
)
from minisd3.seeding import make_generator
from minisd3.shapes import VOCABULARY, render, render_prompt
from minisd3.text import SmallTextEncoder, WordTokenizer
from minisd3.text_to_image import TextToImage

CAPTIONS = ["one small red circle", "two large blue squares", "one small green triangle above one large red circle"]


def tiny_model(seed=0, depth=1, head_dim=8, perturb=0.1):
    """A depth-1 text-to-image MM-DiT on 2×4×4 inputs, its weights jittered so that no zero-initialised
    (adaLN-Zero) layer hides the text or the input."""
    torch.manual_seed(seed)
    encoder = SmallTextEncoder(WordTokenizer(VOCABULARY, 11), dim=16, depth=1, heads=2)
    model = TextToImage(MMDiTConfig(input_size=4, in_channels=2, patch_size=2, depth=depth, heads=2,
                                    head_dim=head_dim, context_dim=16, pooled_dim=16), encoder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model


def batch(n=3, seed=1):
    g = make_generator(seed)
    x_w, x_l, eps = (torch.randn(n, 2, 4, 4, generator=g) for _ in range(3))
    t = torch.rand(n, generator=g) * 0.9 + 0.05
    return x_w, x_l, CAPTIONS[:n], t, eps


def hand_error(model, x, captions, t, eps):
    """mean over elements of (v̂(z_t) − (ε − x))², written out."""
    z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * eps
    context, pooled = model.encode(captions)
    v = model.mmdit(z, t, context, pooled)
    return ((v - (eps - x)) ** 2).mean(dim=(1, 2, 3))


def test_dpo_objective_matches_numbers_worked_by_hand():
    # m = −β·[(1 − 2) − (3 − 3)] = 1 with β = 1, so L = −log σ(1) = log(1 + e^−1)
    loss, margin = dpo_objective(torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([3.0]), 1.0)
    assert margin.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-7)
    # a pair the model fits worse than the reference on the winner: negative margin, loss above log 2
    loss, margin = dpo_objective(torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([3.0]), 2.0)
    assert margin.item() == pytest.approx(-2.0) and loss.item() == pytest.approx(math.log1p(math.exp(2)), abs=1e-6)


def test_dpo_loss_equals_the_formula_written_out():
    model, reference = tiny_model(0), tiny_model(5)  # same configuration, other weights
    x_w, x_l, captions, t, eps = batch()
    beta = 50.0
    loss, stats = dpo_loss(model, reference, x_w, x_l, captions, t, eps, beta)
    with torch.no_grad():
        ew, el = hand_error(model, x_w, captions, t, eps), hand_error(model, x_l, captions, t, eps)
        rw, rl = hand_error(reference, x_w, captions, t, eps), hand_error(reference, x_l, captions, t, eps)
    delta = (ew - rw) - (el - rl)
    expected = sum(math.log1p(math.exp(beta * d)) for d in delta.tolist()) / len(delta)  # −log σ(−β·Δ)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats.accuracy == pytest.approx((delta < 0).float().mean().item())
    assert stats.margin == pytest.approx((-beta * delta).mean().item(), rel=1e-5)
    assert stats.model_winner == pytest.approx(ew.mean().item(), rel=1e-5)
    assert stats.reference_loser == pytest.approx(rl.mean().item(), rel=1e-5)
    # the per-sample error is the ordinary rectified-flow loss, sample by sample
    assert velocity_error(model, x_w, captions, t, eps).mean().item() == pytest.approx(
        model.loss(x_w, captions, p_uncond=0.0, t=t, eps=eps).item(), rel=1e-5)


def test_loss_is_log_2_and_accuracy_one_half_when_the_model_is_its_reference():
    model = tiny_model(0)
    loss, stats = dpo_loss(model, copy.deepcopy(model), *batch(), beta=1000.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)  # eval-mode kernels may differ in the last bits
    assert abs(stats.margin) < 1e-3


def test_one_gradient_step_favours_the_winner_relative_to_the_reference():
    model = tiny_model(0)
    reference = copy.deepcopy(model).requires_grad_(False)
    x_w, x_l, captions, t, eps = batch()
    loss, _ = dpo_loss(model, reference, x_w, x_l, captions, t, eps, beta=10.0)
    loss.backward()
    assert all(p.grad is None for p in reference.parameters())  # the reference gets no gradient
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-2 * p.grad
        ew, el = hand_error(model, x_w, captions, t, eps), hand_error(model, x_l, captions, t, eps)
        rw, rl = hand_error(reference, x_w, captions, t, eps), hand_error(reference, x_l, captions, t, eps)
    assert ((ew - rw) - (el - rl)).mean() < 0  # winners gained on losers, measured from the reference
    after, stats = dpo_loss(model, reference, x_w, x_l, captions, t, eps, beta=10.0)
    assert after.item() < math.log(2) and stats.accuracy > 0.5


@pytest.mark.parametrize("beta", [0, -1.0, float("nan"), float("inf"), True])
def test_beta_must_be_positive(beta):
    model = tiny_model(0)
    with pytest.raises(ValueError, match="^beta: expected a positive"):
        dpo_loss(model, copy.deepcopy(model), *batch(), beta=beta)


def test_reference_of_another_configuration_or_the_model_itself_is_refused():
    model = tiny_model(0)
    for other in (tiny_model(0, depth=2), tiny_model(0, head_dim=4)):
        with pytest.raises(ValueError, match="^reference: expected the model's MM-DiT configuration"):
            dpo_loss(model, other, *batch(), beta=1.0)
    other = copy.deepcopy(model)  # same MM-DiT config, another text encoder width
    other.text_encoder = SmallTextEncoder(WordTokenizer(VOCABULARY, 12), dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="^reference: expected the model's parameter names and shapes"):
        dpo_loss(model, other, *batch(), beta=1.0)
    with pytest.raises(ValueError, match="^reference: expected a separate frozen copy"):
        dpo_loss(model, model, *batch(), beta=1.0)
    with pytest.raises(ValueError, match="^reference: expected a TextToImage"):
        dpo_loss(model, model.mmdit, *batch(), beta=1.0)


def test_winner_and_loser_shapes_and_captions_must_agree():
    model = tiny_model(0)
    x_w, x_l, captions, t, eps = batch()
    with pytest.raises(ValueError, match=r"^x_l: expected the shape of x_w \(3, 2, 4, 4\), got \(2, 2, 4, 4\)"):
        dpo_loss(model, copy.deepcopy(model), x_w, x_l[:2], captions, t, eps, 1.0)
    with pytest.raises(ValueError, match="^captions: expected 3 captions"):
        dpo_loss(model, copy.deepcopy(model), x_w, x_l, captions[:2], t, eps, 1.0)


def test_preference_pairs_keep_best_and_worst_and_drop_ties():
    model = tiny_model(0)
    prompts = CAPTIONS
    judged = iter([1, 3, 2,   2, 2, 2,   4, 0, 5])  # prompt by prompt, sample by sample
    seen = []  # what the judge was shown, in order

    def decode(latents):
        seen.append(latents.clone())
        return latents

    pairs = preference_pairs(model, prompts, k=3, score=lambda image, prompt: next(judged), to_images=decode,
                             steps=2, generator=make_generator(0), batch=4)  # batches cross prompt boundaries
    samples = torch.cat(seen).reshape(3, 3, 2, 4, 4)
    assert pairs.captions == [prompts[0], prompts[2]] and len(pairs) == 2
    assert pairs.kept.tolist() == [True, False, True]
    assert pairs.scores.tolist() == [[1, 3, 2], [2, 2, 2], [4, 0, 5]]
    assert pairs.winner_scores.tolist() == [3, 5] and pairs.loser_scores.tolist() == [1, 0]
    torch.testing.assert_close(pairs.winners, torch.stack([samples[0, 1], samples[2, 2]]))
    torch.testing.assert_close(pairs.losers, torch.stack([samples[0, 0], samples[2, 1]]))
    # the same generator seed draws the same samples
    again = preference_pairs(model, prompts, k=3, score=lambda image, prompt: 0.0, steps=2,
                             generator=make_generator(0), batch=9)
    assert len(again) == 0 and again.kept.sum() == 0


@pytest.mark.parametrize("k", [1, 0, 2.0, True])
def test_k_must_be_at_least_two(k):
    with pytest.raises(ValueError, match="^k: expected an int ≥ 2"):
        preference_pairs(tiny_model(0), CAPTIONS, k=k)


def test_default_judge_counts_the_attributes_read_right():
    caption = "one small green triangle above one large red circle"
    image = render(render_prompt(caption, make_generator(0), 32))
    assert attributes_right(image, caption) == 5.0  # colour, shape, count, size, relation
    assert attributes_right(image, "two small green triangles above one large red circle") == 4.0  # count wrong
    assert attributes_right(torch.full((3, 32, 32), -1.0), "one small red circle") < 4


def hand_pairs(n=5, seed=2):
    g = make_generator(seed)
    return PreferencePairs(winners=torch.randn(n, 2, 4, 4, generator=g), losers=torch.randn(n, 2, 4, 4, generator=g),
                           captions=[CAPTIONS[i % 3] for i in range(n)], winner_scores=torch.ones(n),
                           loser_scores=torch.zeros(n), scores=torch.tensor([[1.0, 0.0]] * n),
                           kept=torch.ones(n, dtype=torch.bool))


@pytest.mark.parametrize("objective", ["dpo", "winners"])
def test_finetune_changes_the_model_and_never_the_reference(objective):
    model = tiny_model(0)
    reference = copy.deepcopy(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    history = finetune(model, hand_pairs(), steps=3, lr=1e-3, batch=2, objective=objective, beta=100.0,
                       reference=reference, generator=make_generator(0))
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(frozen[k], v) for k, v in reference.state_dict().items())
    assert not model.training and not reference.training
    if objective == "dpo":
        assert not any(p.requires_grad for p in reference.parameters())
        assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and history[0]["accuracy"] == 0.5
        assert {"accuracy", "margin", "model_winner", "reference_loser"} <= history[-1].keys()


def test_pairs_are_saved_and_read_back_exactly(tmp_path):
    pairs = hand_pairs()
    back = PreferencePairs.load(pairs.save(tmp_path / "pairs.safetensors"))
    assert back.captions == pairs.captions
    assert all(torch.equal(getattr(back, name), getattr(pairs, name))
               for name in ("winners", "losers", "winner_scores", "loser_scores", "scores", "kept"))
    with pytest.raises(FileNotFoundError, match="^path: no preference pairs at"):
        PreferencePairs.load(tmp_path / "missing.safetensors")


class FakeSource:
    """Fresh training data for the objective "ordinary": records the batch sizes it was asked for."""

    def __init__(self):
        self.sizes = []

    def batch(self, step, size, generator):
        self.sizes.append(size)
        return torch.randn(size, 2, 4, 4, generator=generator), [CAPTIONS[i % 3] for i in range(size)]


def test_ordinary_training_draws_fresh_data_and_every_baseline_backpropagates_twice_the_pairs_per_step():
    model, source = tiny_model(0), FakeSource()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    history = finetune(model, None, steps=3, lr=1e-3, batch=2, objective="ordinary", source=source,
                       generator=make_generator(0))
    assert source.sizes == [4, 4, 4] and len(history) == 3  # 2·batch images: DPO's winners and losers
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="^source: the objective 'ordinary' trains on fresh data"):
        finetune(model, None, steps=1, objective="ordinary")


def test_finetune_makes_its_own_reference_and_is_reproducible():
    runs = []
    for _ in range(2):
        model = tiny_model(0)
        history = finetune(model, hand_pairs(), steps=2, lr=1e-3, batch=3, beta=100.0, generator=make_generator(7))
        runs.append((history, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_finetune_refuses_what_cannot_work():
    model, pairs = tiny_model(0), hand_pairs()
    with pytest.raises(ValueError, match="^objective: expected one of"):
        finetune(model, pairs, steps=1, objective="sft")
    with pytest.raises(ValueError, match="^beta: expected a positive"):
        finetune(model, pairs, steps=1, beta=0.0)
    with pytest.raises(ValueError, match="^reference: expected the model's MM-DiT configuration"):
        finetune(model, pairs, steps=1, reference=tiny_model(0, depth=2))
    with pytest.raises(ValueError, match="^pairs: expected PreferencePairs with at least one pair"):
        finetune(model, hand_pairs(n=0), steps=1)
    with pytest.raises(ValueError, match="^steps: expected a positive int"):
        finetune(model, pairs, steps=0)
    with pytest.raises(ValueError, match="^lr: expected a positive"):
        finetune(model, pairs, steps=1, lr=0.0)


def test_dpo_benchmark_runs_online_rounds_with_fresh_pairs_and_paired_verdicts(tmp_path):
    """benchmarks/dpo.py --rounds 2 on the stored shapes-3000 model, tiny: every online variant is scored after
    each round, round 2's pairs are drawn afresh from the tuned model, ordinary training runs both rounds' steps
    at once, and every evaluation keeps one verdict per prompt (what the paired standard errors are made of);
    --save writes each tuned variant as a stored model that load_run reads back, tuned away from the start."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "dpo.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "dpo.py"), "--start", "shapes-3000", "--prompts", "6",
                           "--k", "2", "--steps", "2", "--batch", "2", "--eval-samples", "4", "--betas", "500",
                           "--rounds", "2", "--out", str(out), "--save", str(tmp_path / "tuned")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(out.read_text())
    by_name = {v["name"]: v for v in run["variants"]}
    assert list(by_name) == ["start", "dpo β=500", "winners", "ordinary"]
    for name in ("dpo β=500", "winners"):
        rounds = by_name[name]["rounds"]
        assert [r["round"] for r in rounds] == [1, 2]
        assert rounds[0]["pairs"] == run["pairs"] and rounds[1]["pairs"]["prompts"] == 6
        assert all(len(r["verdicts"]) == 4 and set(r["verdicts"]) <= {0, 1} for r in rounds)
        assert len(by_name[name]["history"]) == 4  # two rounds of two steps
    assert by_name["ordinary"]["rounds"] == [] and len(by_name["ordinary"]["history"]) == 4
    assert len(by_name["start"]["evaluation"]["verdicts_train_pairs"]) == 4
    assert "− start" in done.stdout  # the table prints each gain with its paired error
    from minisd3.engine.checkpoints import load_run, load_state
    start, start_config, _ = load_run("shapes-3000")
    for slug, name in [("dpo-beta500", "dpo β=500"), ("winners", "winners"), ("ordinary", "ordinary")]:
        tuned, config, folder = load_run(tmp_path / "tuned" / slug)
        assert config == start_config and load_state(folder)["tuned_by"]["variant"] == name
        moved = [k for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
        assert moved, f"{slug}: the stored weights are the start's"
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "dpo.py"), "--rounds", "0"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == \
        "--rounds: expected a positive number of rounds, got 0"
