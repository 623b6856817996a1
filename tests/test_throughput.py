"""The throughput benchmark: FLOP counting, the peak-rate table and one small run of the table on the CPU."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minisd3.models import MMDiT
from minisd3.throughput import bench_config, count_training_flops, peak_bf16_for, run_benchmark


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla T4", None),
])
def test_peak_rate_by_device_name(name, peak):
    assert peak_bf16_for(name) == peak


def test_training_flops_are_three_forwards_and_cover_every_linear_layer():
    torch.manual_seed(0)
    model = MMDiT(bench_config(1))
    per_image = count_training_flops(model, model.parameters(), torch.device("cpu"), batch=2)
    x, t = torch.randn(2, 4, 32, 32), torch.rand(2)
    ctx, pooled = torch.randn(2, 32, 256), torch.randn(2, 256)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, ctx, pooled)
    forward = counter.get_total_flops() / 2
    # backward costs two matmuls per forward matmul, attention's five per two: between 3 and 3.5 forwards
    assert 3 * forward <= per_image <= 3.5 * forward
    # every weight matrix of a joint block acts on each token of its stream (modulation: once per image)
    tokens = {"image": 256, "context": 32}
    linear = sum(2 * m.weight.numel() * tokens[stream] for stream in tokens
                 for name, m in getattr(model.blocks[0], stream).named_modules()
                 if isinstance(m, torch.nn.Linear) and "modulation" not in name)
    assert forward > linear


def test_benchmark_table_on_cpu_includes_diffusers():
    rows = run_benchmark(device="cpu", steps=1, batch=1, compile_too=False, models={"tiny (depth 1)": 1})
    assert [r["implementation"] for r in rows] == ["minisd3 eager", "diffusers eager"]
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 and r["mfu"] is None for r in rows)
