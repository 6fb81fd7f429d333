"""Counting what a forward dispatches: one pass for ops, kernels and FLOPs equal to torch's FlopCounterMode, and the
blockwise count (the shell and each kind of block once) equal to counting the whole forward."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from perfsuite.models.adapters import ADAPTERS, attach
from perfsuite.models.decoding import KVBuffer, ragged_forward
from perfsuite.measure.device import count_work
from perfsuite.models.model import build_model, get_config
from perfsuite.workloads.counting import forward_work, layered_work, meta_model


def flop_counter_mode(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("adapter", ADAPTERS)
@torch.inference_mode()
def test_one_pass_counts_the_flops_flopcountermode_counts(adapter):
    model = attach(build_model("tiny"), adapter, 4)
    x = torch.randint(0, 512, (2, 16))
    assert count_work(lambda: model(x)).flops == flop_counter_mode(lambda: model(x)) > 0
    cache = KVBuffer(model, 2, 24)
    step = lambda: ragged_forward(model, cache, x[:, :3], torch.tensor([0, 5]), 12)  # noqa: E731 — masked SDPA
    assert count_work(step).flops == flop_counter_mode(step) > 0


@pytest.mark.parametrize("adapter", ADAPTERS)
@torch.inference_mode()
def test_the_layered_count_is_the_whole_passes(adapter):
    m = meta_model(get_config("tiny"), adapter, 4, "float32")
    tokens = torch.zeros(1, 16, dtype=torch.long, device="meta")
    assert layered_work(m, lambda: m(tokens)) == count_work(lambda: m(tokens))
    real = attach(build_model("tiny"), adapter, 4)  # the decoder's ragged pass, on the CPU
    cache = KVBuffer(real, 2, 24)
    step = lambda: ragged_forward(real, cache, torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 5]), 12)  # noqa
    assert layered_work(real, step) == count_work(step)


@torch.inference_mode()
def test_blocks_of_two_kinds_are_each_counted_adapterdrop_on_twelve_layers():
    """AdapterDrop on GPT-2 small drops the adapters of its lowest 5 blocks: two kinds of block, both counted."""
    m = meta_model(get_config("gpt2"), "adapterdrop", 8, "float16")
    tokens = torch.zeros(1, 32, dtype=torch.long, device="meta")
    whole = count_work(lambda: m(tokens))
    assert layered_work(m, lambda: m(tokens)) == whole
    plain_model = meta_model(get_config("gpt2"), "none", 0, "float16")
    plain = count_work(lambda: plain_model(tokens))
    assert whole.kernels > plain.kernels and whole.flops > plain.flops
    assert forward_work(get_config("gpt2"), "adapterdrop", 8, 32, "float16") == whole


def test_the_meta_model_draws_no_values():
    """Adapters on the meta device are shapes only: building them draws nothing from torch's generators."""
    state = torch.random.get_rng_state()
    meta_model.cache_clear()
    for adapter in ADAPTERS:
        meta_model(get_config("tiny"), adapter, 4, "float32")
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("adapter", ["none", "lora", "dora", "vera", "ia3"])
@torch.inference_mode()
def test_hf_models_flops_are_flopcountermodes_too(adapter):
    """The latency workload counts an hf model's FLOPs on one real call with the same counter."""
    from perfsuite.workloads.context import ModelCache

    hf = ModelCache().for_impl("hf")
    model = hf.base("tiny", "float32", "cpu") if adapter == "none" else hf.build_adapted(
        "tiny", "float32", "cpu", adapter, 1 if adapter == "ia3" else 8)
    x = torch.randint(0, 512, (2, 16))
    assert count_work(lambda: model(x)).flops == flop_counter_mode(lambda: model(x)) > 0
