"""The throughput benchmark: FLOP counting, the peak-rate table and one small run of the table on the CPU."""
import pytest
import torch

from minisd3.engine.benchmark import bench_config, count_training_flops, counting_flops, peak_bf16_for, run_benchmark
from minisd3.models import MMDiT


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla T4", None),
])
def test_peak_rate_by_device_name(name, peak):
    assert peak_bf16_for(name) == peak


def linear_flops(rows, fan_in, fan_out):
    """Y = XW for ``rows`` rows of X: 2·rows·in·out FLOPs (a multiply and an add per weight and row)."""
    return 2 * rows * fan_in * fan_out


def mmdit_flops_by_hand(cfg, text_tokens, frequency_dim=256):
    """(forward FLOPs per image, forward FLOPs of the Linear layers whose input needs no gradient), from the config."""
    d, n, n_text = cfg.hidden, (cfg.input_size // cfg.patch_size) ** 2, text_tokens
    patch = cfg.patch_size**2 * cfg.in_channels
    first = (linear_flops(n, patch, d) + linear_flops(n_text, cfg.context_dim, d)   # patch and context embedding
             + linear_flops(1, frequency_dim, d) + linear_flops(1, cfg.pooled_dim, d))  # first Linear of t and pooled MLPs
    forward = first + 2 * linear_flops(1, d, d)  # second Linear of the t and pooled MLPs
    for i in range(cfg.depth):
        pre_only = i == cfg.depth - 1  # the last context stream: adaLN shift/scale and q, k, v only
        for rows, full in ((n, True), (n_text, not pre_only)):
            forward += linear_flops(1, d, 6 * d if full else 2 * d) + linear_flops(rows, d, 3 * d)  # adaLN, qkv
            if full:  # output projection and MLP d → 4d → d
                forward += linear_flops(rows, d, d) + 2 * linear_flops(rows, d, 4 * d)
        forward += 2 * linear_flops(n + n_text, n + n_text, d)  # joint attention: QKᵀ and PV over all heads
    forward += linear_flops(1, d, 2 * d) + linear_flops(n, d, patch)  # final adaLN and Linear
    return forward, first


def test_training_flops_are_forward_plus_twice_forward_less_unneeded_input_gradients():
    """Backward = 2·forward minus the input gradients of the layers fed by data (patches, text, t, pooled)."""
    torch.manual_seed(0)
    cfg = bench_config(2)  # two blocks: a full context stream and the last, pre-only one
    model = MMDiT(cfg)
    per_image = count_training_flops(model, model.parameters(), torch.device("cpu"), batch=2)
    x, t = torch.randn(2, 4, 32, 32), torch.rand(2)
    ctx, pooled = torch.randn(2, 32, 256), torch.randn(2, 256)
    with counting_flops() as counter, torch.no_grad():
        model(x, t, ctx, pooled)
    forward, first = mmdit_flops_by_hand(cfg, text_tokens=32)
    assert counter.get_total_flops() / 2 == forward
    assert per_image == forward + (2 * forward - first)
    assert per_image < 3 * forward


def test_benchmark_table_on_cpu_includes_diffusers():
    rows = run_benchmark(device="cpu", steps=1, batch=1, compile_too=False, models={"tiny (depth 1)": 1})
    assert [r["implementation"] for r in rows] == ["minisd3 eager", "diffusers eager"]
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 and r["mfu"] is None for r in rows)
