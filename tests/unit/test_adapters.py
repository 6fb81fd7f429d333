import copy

import pytest
import torch

from perfsuite.models.adapters import (ADAPTERS, UnknownAdapterError, attach, default_drop_layers, merge_lora,
                                trainable_parameter_count)
from perfsuite.cells.grid import ADAPTER_NAMES
from perfsuite.models.model import build_model

RANK = 4


@pytest.fixture(scope="module")
def base():
    return build_model("tiny", seed=0, dtype=torch.float64)


def tokens(model, b=2, t=9):
    return torch.randint(0, model.config.vocab_size, (b, t), generator=torch.Generator().manual_seed(5))


def test_every_adapter_documents_its_paper():
    for spec in ADAPTERS.values():
        assert spec.doc.strip(), spec.name
        if spec.name not in ("none", "lora-merged"):
            assert any(ch.isdigit() for ch in spec.doc), f"{spec.name}: doc should cite a paper and year"


@pytest.mark.parametrize("name", ADAPTER_NAMES)
@torch.inference_mode()
def test_shapes_and_the_adapter_changes_the_output(base, name):
    model = attach(copy.deepcopy(base), name, RANK, seed=1)
    x = tokens(model)
    out, _ = model(x)
    ref, _ = base(x)
    assert out.shape == ref.shape
    assert not torch.allclose(out, ref), f"{name} with random init should change the output"


@pytest.mark.parametrize("name", ADAPTER_NAMES)
@torch.inference_mode()
def test_zero_initialised_adapter_leaves_the_output_equal(base, name):
    model = attach(copy.deepcopy(base), name, RANK, seed=1, init="zero")
    x = tokens(model)
    torch.testing.assert_close(model(x)[0], base(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@torch.inference_mode()
def test_merged_and_unmerged_lora_agree(dtype, tol):
    base = build_model("tiny", seed=0, dtype=dtype)
    unmerged = attach(copy.deepcopy(base), "lora", RANK, seed=1)
    merged = merge_lora(copy.deepcopy(unmerged))
    x = tokens(base)
    a, b = unmerged(x)[0].double(), merged(x)[0].double()
    assert (a - b).norm() / a.norm() < tol
    # and the "lora-merged" registry entry is exactly that model
    via_registry = attach(copy.deepcopy(base), "lora-merged", RANK, seed=1)
    torch.testing.assert_close(via_registry(x)[0], merged(x)[0])


def test_merged_lora_is_a_plain_model(base):
    merged = attach(copy.deepcopy(base), "lora-merged", RANK)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize("name,n_adapters,n_ln", [("houlsby", 2, 2), ("lin", 1, 1)])
def test_parameter_counts_follow_the_lora_paper(base, name, n_adapters, n_ln):
    """|Θ| = L_adpt(2dr + r + d) + 2·L_LN·d (Hu et al. 2021, §5.1)."""
    for r in (1, 4, 16):
        model = attach(copy.deepcopy(base), name, r)
        L, d = base.config.n_layer, base.config.n_embd
        expected = n_adapters * L * (2 * d * r + r + d) + 2 * n_ln * L * d
        assert trainable_parameter_count(model, name) == expected


def test_lora_parameter_count(base):
    model = attach(copy.deepcopy(base), "lora", RANK)
    d, L = base.config.n_embd, base.config.n_layer
    assert trainable_parameter_count(model, "lora") == L * 2 * (2 * d * RANK)  # A and B for W_q and W_v


def test_adapterdrop_drops_the_lowest_layers():
    model = attach(build_model("tiny"), "adapterdrop", RANK)  # 2 layers: drops round(2·5/12) = 1
    assert model.h[0].adapter_attn is None and model.h[1].adapter_attn is not None
    assert default_drop_layers(12) == 5 and default_drop_layers(24) == 10
    with pytest.raises(ValueError, match="drop_layers"):
        attach(build_model("tiny"), "adapterdrop", RANK, drop_layers=2)


def test_rank_zero_and_none_leave_the_model_alone(base):
    model = copy.deepcopy(base)
    assert attach(model, "houlsby", 0) is model and all(b.adapter_mlp is None for b in model.h)
    assert attach(model, "none", 8) is model and all(b.adapter_mlp is None for b in model.h)


def test_bad_input_is_a_clear_error(base):
    with pytest.raises(UnknownAdapterError, match="unknown adapter 'loar'"):
        attach(copy.deepcopy(base), "loar", 4)
    with pytest.raises(ValueError, match="exceeds the model width"):
        attach(copy.deepcopy(base), "spectral-r", base.config.n_embd + 1)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        attach(copy.deepcopy(base), "lora", -1)
