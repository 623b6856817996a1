"""Benchmark: Diffusion-DPO against fine-tuning on the winners and more ordinary training, judged by held-out adherence.

From a starting checkpoint (``--start``, default the stored course model), the model samples
``--k`` images for each of ``--prompts`` training prompts (prompts of training colour–shape pairs,
``source.split.train_captions``; ``--prompt-pairs held-out`` takes prompts of the held-out pairs
instead, whose images the model never saw); the detector counts the attributes it reads right in each, and
the best and worst sample of a prompt form a preference pair (prompts whose samples all tie are
dropped; :func:`minisd3.preference.preference_pairs`). Then, from the same start each time:

    dpo β      Diffusion-DPO (minisd3.preference.finetune, objective "dpo") for each β of ``--betas``
    winners    the rectified-flow loss on the winners alone (supervised fine-tuning), 2·batch winners a step
    ordinary   more of the model's own training: fresh scenes of training pairs with their full captions,
               2·batch a step (caption dropout as in training)

each ``--steps`` AdamW steps at ``--lr``: DPO backpropagates ``--batch`` winners and as many losers a step,
the baselines as many images (equal compute but for DPO's reference forward passes). Every model (the start too) is scored by
the engine's own :func:`minisd3.engine.evaluation.evaluate`: adherence on ``--eval-samples`` prompts of
held-out pairs and as many of training pairs, each beside its chance rate (the same images against
other prompts), and the sliced Wasserstein distance to real images. The table gives each variant's
process CPU seconds of fine-tuning (pair building and evaluation reported apart).

    OMP_NUM_THREADS=1 python benchmarks/dpo.py --out runs/dpo.json
    OMP_NUM_THREADS=1 python benchmarks/dpo.py --prompts 16 --k 2 --steps 5 --eval-samples 16   # smoke test

β is the paper's (the margin is m = −β·Δ, Δ a difference of per-element mean velocity errors; COURSE.md),
half the ``--beta_dpo`` of the authors' and diffusers' scripts (their margin is −β_dpo/2·Δ; they use
2500–5000 for SD1.5 and SDXL). Measured on the course model (24 pairs from 64 prompts, k = 4, batches of 16):
its velocity error on its own samples is 0.12–0.15 per element at logit-normal t, and at lr 3e-5 |Δ| grows
to about 0.005 in 10 steps and 0.015 in 40 (about 3× that at lr 1e-4). The sigmoid saturates near |m| ≈ 5,
i.e. |Δ| ≈ 5/β: with β = 50 the loss never saturates in such a run (every pair keeps pushing, errors of
winners and losers both drift up), with β = 1500 it saturates within about ten steps (the model stays near
the reference). The default sweep, 50 … 1500, spans the two.

The evaluation's training-pair prompts are fresh captions of training pairs, not the ones tuned on.

Pairs are sampled with the run's guidance w (3 for the shapes preset), as evaluation samples; ``--pair-cfg 1``
samples the conditional model itself, whose distribution the tuning losses fit (a winner drawn at w = 3 is a
guided sample, and training the conditional velocity on it bakes guidance in before evaluation applies it again).

Online rounds (``--rounds R``, R > 1): after each round's ``--steps``, "dpo β" and "winners" draw fresh
pairs from the model as tuned so far (``--prompts`` new prompts, k samples each) and tune on them, the
round's starting model as DPO's reference (iterative DPO, as online preference tuning does it); "ordinary"
runs R·``--steps`` steps, the same fine-tuning steps. Every variant is scored after every round.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from minisd3.adherence import paired_difference
from minisd3.engine.checkpoints import load_run, load_state, save_stored_model
from minisd3.engine.evaluation import evaluate, json_safe
from minisd3.engine.sources import make_source
from minisd3.files import write_text_atomic
from minisd3.preference import PreferencePairs, finetune, preference_pairs
from minisd3.seeding import make_generator
from minisd3.timesteps import make_time_sampler


def score(model, source, config, samples: int, seed: int) -> tuple[dict, float]:
    """(:func:`evaluate` at the run's own steps, guidance and shift, CPU seconds it took)."""
    start = time.process_time()
    result = evaluate(model, source, samples, config.sample_steps, config.sample_cfg, config.shift, seed)
    return result, time.process_time() - start


def summary(result: dict) -> dict:
    """The headline numbers of an :func:`evaluate` result: overall adherence and chance, held-out and training pairs."""
    return {"held_out": result["adherence"]["overall"], "held_out_chance": result["chance"]["overall"],
            "train_pairs": result["adherence_train_pairs"]["overall"],
            "train_pairs_chance": result["chance_train_pairs"]["overall"],
            "sliced_wasserstein": result["sliced_wasserstein"]}


def standard_error(p: float, n: int) -> float:
    """√(p(1 − p)/n): the binomial standard error of a fraction p of n prompts."""
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", default="course", help="checkpoint to start from: a run directory, a checkpoint "
                                                           "folder or a stored model name (default: course)")
    parser.add_argument("--prompts", type=int, default=256, help="training prompts to build pairs from")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt; its best and worst form the pair")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps of every variant")
    parser.add_argument("--batch", type=int, default=16, help="pairs per step")
    parser.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate (constant)")
    parser.add_argument("--betas", type=float, nargs="*", default=[50.0, 150.0, 500.0, 1500.0],
                        help="DPO temperatures β to sweep (the paper's m = −β·Δ; half diffusers' --beta_dpo); "
                             "none: baselines only")
    parser.add_argument("--no-winners", action="store_true", help="skip the winners-only baseline")
    parser.add_argument("--no-ordinary", action="store_true", help="skip the more-ordinary-training baseline")
    parser.add_argument("--eval-samples", type=int, default=256, help="held-out prompts (and as many training ones)")
    parser.add_argument("--prompt-pairs", choices=["train", "held-out"], default="train",
                        help="colour–shape pairs of the tuning prompts: the training pairs (default, as SD3 tunes on "
                             "its own prompts) or the held-out pairs, whose images the model never saw (the judge "
                             "then teaches what no data showed; held-out adherence is no longer a test of transfer)")
    parser.add_argument("--time-sampler", help="t distribution of the fine-tuning losses (minisd3.timesteps names: "
                                               "uniform, lognorm(m,s), mode(s), cosmap); default: the run's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file for every number")
    parser.add_argument("--pair-cfg", type=float, help="guidance scale w of the samples pairs are made of (default: the "
                                                         "run's own, as in evaluation; 1 samples the conditional model)")
    parser.add_argument("--rounds", type=int, default=1, help="online rounds: fresh pairs from the tuned model "
                                                               "before each round after the first (default 1)")
    parser.add_argument("--pairs", help="a safetensors file of preference pairs: read if it exists (the same "
                                        "--start, --prompts, --k and --seed), else built and written there")
    parser.add_argument("--save", help="a folder: each tuned variant is written to a sub-folder of it (dpo-beta500, "
                                       "winners, ordinary) as a stored model in float16 that --start, sample and "
                                       "eval load")
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit(f"--rounds: expected a positive number of rounds, got {args.rounds}")

    start_model, config, folder = load_run(args.start, "ema", "cpu", name="--start")
    pair_cfg = config.sample_cfg if args.pair_cfg is None else args.pair_cfg
    if not 0 <= pair_cfg < math.inf:
        raise SystemExit(f"--pair-cfg: expected a guidance scale ≥ 0, got {args.pair_cfg}")
    source = make_source(config)
    time_sampler = args.time_sampler or config.time_sampler
    try:
        make_time_sampler(time_sampler)
    except ValueError as err:
        raise SystemExit(f"--time-sampler: {str(err).removeprefix('name: ')}") from None
    run = {"start": str(folder), "threads": torch.get_num_threads(),
           "settings": {k: v for k, v in vars(args).items() if k != "out"}, "variants": []}

    def save() -> None:
        if args.out:
            write_text_atomic(args.out, json.dumps(json_safe(run), indent=1, allow_nan=False))

    captions_of = source.split.train_captions if args.prompt_pairs == "train" else source.split.held_out_captions

    def build_pairs(model, round_: int) -> tuple[PreferencePairs, dict]:
        """Fresh pairs from ``model`` (round 0: the start's, read from or written to ``--pairs``), and their numbers."""
        clock = time.process_time()
        seed = args.seed + 1000 * round_
        if round_ == 0 and args.pairs and Path(args.pairs).is_file():
            pairs = PreferencePairs.load(args.pairs)
            print(f"read {len(pairs)} pairs from {args.pairs}")
        else:
            prompts = captions_of(args.prompts, make_generator(seed + 100), source.image_size)
            pairs = preference_pairs(model, prompts, args.k, to_images=source.to_images, steps=config.sample_steps,
                                     cfg=pair_cfg, shift=config.shift, generator=make_generator(seed + 101),
                                     progress=True)
            if round_ == 0 and args.pairs:
                pairs.save(args.pairs)
        numbers = {"prompts": args.prompts, "kept": len(pairs), "cpu_s": time.process_time() - clock,
                   "mean_score": pairs.scores.mean().item(),
                   "winner_score": pairs.winner_scores.mean().item() if len(pairs) else None,
                   "loser_score": pairs.loser_scores.mean().item() if len(pairs) else None}
        print(f"pairs: {len(pairs)} of {args.prompts} prompts had a best and a worst sample "
              f"({numbers['cpu_s']:.0f} CPU s)", flush=True)
        if len(pairs) == 0:
            raise SystemExit("no prompt gave a pair (all samples tied): raise --k or --prompts")
        return pairs, numbers

    pairs, run["pairs"] = build_pairs(start_model, 0)

    result, eval_cpu = score(start_model, source, config, args.eval_samples, args.seed)
    run["variants"].append({"name": "start", "finetune_cpu_s": 0.0, "eval_cpu_s": eval_cpu, **summary(result),
                            "evaluation": result})
    save()
    variants = ([("dpo", beta) for beta in args.betas] + ([] if args.no_winners else [("winners", None)])
                + ([] if args.no_ordinary else [("ordinary", None)]))
    for objective, beta in variants:
        name = f"dpo β={beta:g}" if objective == "dpo" else objective
        model = copy.deepcopy(start_model)
        online = objective != "ordinary" and args.rounds > 1
        rounds, cpu, history = [], 0.0, []
        for round_ in range(args.rounds if online else 1):
            round_pairs, pair_numbers = (pairs, run["pairs"]) if round_ == 0 else build_pairs(model, round_)
            steps = args.steps if online else args.steps * args.rounds
            clock = time.process_time()
            history += finetune(model, round_pairs, steps, lr=args.lr, batch=args.batch, objective=objective,
                                beta=beta if beta is not None else 1.0,
                                generator=make_generator(args.seed + 102 + 1000 * round_),
                                time_sampler=time_sampler, shift=config.shift, progress=True, source=source,
                                p_uncond=config.p_uncond)
            cpu += time.process_time() - clock
            if online:
                result, eval_cpu = score(model, source, config, args.eval_samples, args.seed)
                rounds.append({"round": round_ + 1, "pairs": pair_numbers, **summary(result),
                               "verdicts": result["verdicts"], "verdicts_train_pairs": result["verdicts_train_pairs"]})
                gain = paired_difference(result["verdicts"], run["variants"][0]["evaluation"]["verdicts"])
                print(f"{name}, round {round_ + 1}: held-out {result['adherence']['overall']:.3f} "
                      f"({gain[0]:+.3f} ± {gain[1]:.3f} over the start), training pairs "
                      f"{result['adherence_train_pairs']['overall']:.3f}", flush=True)
        if not online:
            result, eval_cpu = score(model, source, config, args.eval_samples, args.seed)
        last = history[-1]
        run["variants"].append({"name": name, "objective": objective, "beta": beta, "finetune_cpu_s": cpu,
                                "eval_cpu_s": eval_cpu, "final": last, **summary(result), "history": history,
                                "rounds": rounds, "evaluation": result})
        print(f"{name}: {cpu:.0f} CPU s; last step {', '.join(f'{k} {v:.4g}' for k, v in last.items())}", flush=True)
        save()
        if args.save:
            slug = f"dpo-beta{beta:g}" if objective == "dpo" else objective
            saved = save_stored_model(model.state_dict(), {**load_state(folder), "tuned_from": args.start,
                                                           "tuned_by": {"variant": name, **run["settings"]}},
                                      Path(args.save) / slug)
            print(f"wrote {saved}", flush=True)

    online_text = f"{args.rounds} online rounds of " if args.rounds > 1 else ""
    print(f"\n{len(pairs)} pairs (first round), {online_text}{args.steps} steps of {args.batch} pairs at lr {args.lr:g}; "
          f"adherence (all attributes) on {args.eval_samples} prompts each, chance in brackets")
    print(f"{'variant':>14} {'held-out':>15} {'(chance)':>8} {'− start':>16} {'train pairs':>15} {'(chance)':>8} "
          f"{'− start':>16} {'sliced W':>9} {'tune CPU s':>10}")
    n = args.eval_samples
    first = run["variants"][0]["evaluation"]
    for v in run["variants"]:
        held, train = v["held_out"], v["train_pairs"]
        gains = [paired_difference(v["evaluation"][key], first[key]) for key in ("verdicts", "verdicts_train_pairs")]
        print(f"{v['name']:>14} {held:>7.3f} ± {standard_error(held, n):.3f} {v['held_out_chance']:>8.3f} "
              f"{gains[0][0]:>+7.3f} ± {gains[0][1]:.3f} {train:>7.3f} ± {standard_error(train, n):.3f} "
              f"{v['train_pairs_chance']:>8.3f} {gains[1][0]:>+7.3f} ± {gains[1][1]:.3f} "
              f"{v['sliced_wasserstein']:>9.4f} {v['finetune_cpu_s']:>10.1f}")
    print("± one binomial standard error √(p(1 − p)/n); − start: the gain over the start on the same prompts and noise "
          "± its paired standard error; the first variant's CPU seconds include one-time warm-up")
    if args.out:
        print(f"wrote {Path(args.out)}")


if __name__ == "__main__":
    main()
