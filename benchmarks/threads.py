"""How many torch CPU threads are fastest for the course's models, on an idle machine and beside one
other busy process (issue 11): the measurement behind ``minisd3.env.CPU_THREADS``.

    python benchmarks/threads.py [--seconds 20]

For each model (a lesson's 2-D flow MLP, batch 256; the README main job's MM-DiT step, batch 64, bf16
autocast as the ``shapes`` preset) and each thread count (1, then every count up to the cores), a
fresh subprocess trains for ``--seconds`` of wall time and reports steps per second; then the same
with one busy-looping process beside it (what a machine running anything else looks like). Prints one
table; the idle rows are only meaningful on an otherwise idle machine (the load is printed).
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time, torch
threads, seconds, model = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
from minisd3.seeding import make_generator
if model == "lesson":
    from minisd3.nets import TimeMLP
    from minisd3.rectified_flow import rf_loss
    from minisd3.toy2d import sample_8gaussians
    net = TimeMLP((2,), hidden=128, depth=3)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    def step(g):
        loss = rf_loss(net, sample_8gaussians(256, g), generator=g)
        opt.zero_grad(); loss.backward(); opt.step()
else:
    from minisd3.engine.config import build_model, preset_config
    from minisd3.engine.sources import make_source
    from minisd3.engine.loop import training_times
    config = preset_config("shapes")
    source = make_source(config)
    net = build_model(config, source.vocabulary, source.channels)
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    def step(g):
        x, captions = source.batch(0, 64, g)
        t = training_times(64, g, config.time_sampler, config.shift)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x, captions, t=t)
        opt.zero_grad(); loss.backward(); opt.step()
g = make_generator(0)
for _ in range(3):
    step(g)
start, n = time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    step(g); n += 1
print(json.dumps({"steps_per_s": n / (time.perf_counter() - start)}))
"""


def busy_loop():
    while True:
        pass


def measure(threads: int, seconds: float, model: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(seconds), model], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':<16} {'machine':<22} " + " ".join(f"{f'{t} thread(s)':>12}" for t in range(1, cores + 1)))
    for model in ("lesson", "main-job"):
        for busy in (False, True):
            other = multiprocessing.Process(target=busy_loop, daemon=True) if busy else None
            if other:
                other.start()
                time.sleep(1)
            rates = [measure(t, args.seconds, model) for t in range(1, cores + 1)]
            if other:
                other.terminate()
            label = "one other busy process" if busy else "idle"
            print(f"{model:<16} {label:<22} " + " ".join(f"{r:>8.1f} st/s" for r in rates))


if __name__ == "__main__":
    main()
