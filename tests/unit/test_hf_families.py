"""Today's model families in the hf implementation: Llama, Qwen2 and Mistral from a config, peft's methods on
their projections, and the grid that runs them."""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from perfsuite.cells.grid import (MODERN_ADAPTER_NAMES, MODERN_MODELS, get_profile, selected_cells,  # noqa: E402
                                  unsupported_reason)
from perfsuite.hf.adapters import HF_ADAPTERS, attach_hf  # noqa: E402
from perfsuite.hf.families import FEW_LAYERS, SHAPES, build_family_model, family_config  # noqa: E402
from perfsuite.hf.models import HFModelCache  # noqa: E402
from perfsuite.workloads.context import ModelCache  # noqa: E402


def test_every_named_shape_is_in_the_grid_and_back():
    assert set(SHAPES) == set(MODERN_MODELS)
    assert all(SHAPES[n].family == f for n, f in MODERN_MODELS.items())
    assert set(MODERN_ADAPTER_NAMES) <= set(HF_ADAPTERS)


def test_the_8b_and_7b_shapes_have_the_real_widths_and_a_few_layers():
    llama, qwen = family_config("llama-3-8b"), family_config("qwen2-7b")
    assert (llama.hidden_size, llama.intermediate_size, llama.num_key_value_heads, llama.vocab_size) == (
        4096, 14336, 8, 128256)
    assert (qwen.hidden_size, qwen.intermediate_size, qwen.num_key_value_heads, qwen.vocab_size) == (
        3584, 18944, 4, 152064)
    assert llama.num_hidden_layers == qwen.num_hidden_layers == FEW_LAYERS
    assert type(llama).__name__ == "LlamaConfig" and type(qwen).__name__ == "Qwen2Config"


@pytest.mark.parametrize("name", ["llama-tiny", "qwen2-tiny", "mistral-tiny"])
def test_a_tiny_family_model_builds_from_its_seed_and_runs(name):
    a, b = (build_family_model(name, seed=0, dtype=torch.float32, device="cpu") for _ in range(2))
    assert type(a).__name__.lower().startswith(SHAPES[name].family)
    tokens = torch.randint(0, SHAPES[name].vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(a(input_ids=tokens).logits, b(input_ids=tokens).logits)  # same seed, same weights


@pytest.mark.parametrize("method", [m for m in MODERN_ADAPTER_NAMES if m != "lora-merged"] + ["fourierft"])
def test_each_peft_method_adapts_q_and_v_projections_and_changes_the_output(method):
    plain = build_family_model("llama-tiny", seed=0, dtype=torch.float32, device="cpu")
    adapted = attach_hf(plain, method, 4, seed=1)
    names = [n for n, _ in adapted.named_modules()]
    assert any(n.endswith("q_proj") and "base_layer" not in n for n in names)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in adapted.named_modules() if hasattr(m, "base_layer")}
    assert {"q_proj", "v_proj"} <= wrapped
    tokens = torch.randint(0, 512, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        same = torch.allclose(plain(input_ids=tokens).logits, adapted(input_ids=tokens).logits)
    assert same == (method == "ia3")  # IA³ starts at ones (identity scaling, the multiply still timed); others drawn


def test_the_hf_cache_builds_family_models_with_their_dims():
    cache = HFModelCache(ModelCache(seed=0))
    base = cache.base("qwen2-tiny", "float32", "cpu")
    assert (base.config.n_layer, base.config.n_embd, base.config.n_kv_head) == (2, 128, 2)
    lora = cache.build_adapted("qwen2-tiny", "float32", "cpu", "lora", 4)
    assert lora.config is base.config and lora(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 512)


def test_hf_modern_smoke_runs_lora_dora_and_more_on_llama_and_qwen2_and_recompute_too():
    profile = get_profile("hf-modern-smoke")
    cells = profile.cells(device="cpu")
    assert len({c.id for c in cells}) == len(cells)
    latency = [c for c in cells if c.workload == "latency"]
    assert {c.model for c in latency} == {"llama-tiny", "qwen2-tiny"}
    assert {"lora", "dora"} <= {c.adapter for c in latency} and len({c.adapter for c in latency} - {"none"}) >= 4
    assert all(not unsupported_reason(c) for c in latency)
    assert {c.model for c in cells if c.workload == "recompute" and not unsupported_reason(c)} == {
        "llama-tiny", "qwen2-tiny"}
    assert {c.mode for c in selected_cells(profile, "mode == 'compile'", device="cpu")} == {"compile"}
    assert not get_profile("hf-modern-smoke").needs_gpu and get_profile("hf-modern").needs_gpu


@pytest.mark.parametrize("name", ["llama-tiny", "qwen2-tiny", "mistral-tiny"])
@pytest.mark.parametrize("adapter", ["none", "lora", "dora"])
def test_the_recompute_decoder_on_a_family_model_computes_transformers_logits(name, adapter):
    """The ragged decoder (perfsuite's KV cache and attention) through the family's layers, RoPE and grouped KV
    heads: the whole prompt at once, and in two steps through the cache, give transformers' own logits."""
    from perfsuite.models.decoding import KVBuffer, ragged_forward

    model = HFModelCache(ModelCache(seed=0)).build_adapted(name, "float32", "cpu", adapter, 4 if adapter != "none" else 0)
    idx = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(2, dtype=torch.long)
    with torch.inference_mode():
        want = model(idx).logits
        whole = ragged_forward(model, KVBuffer(model, 2, 16), idx, zero, 10)
        cache = KVBuffer(model, 2, 16)
        first = ragged_forward(model, cache, idx[:, :6], zero, 6)
        rest = ragged_forward(model, cache, idx[:, 6:], torch.full((2,), 6), 10)
    torch.testing.assert_close(whole, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), want, atol=1e-5, rtol=0)


def test_the_cost_estimate_refuses_family_shapes_in_one_line(capsys):
    from perfsuite.cli import main

    assert main(["cells", "--profile", "hf-modern", "--device", "cuda", "--estimate"]) == 2
    assert capsys.readouterr().err.strip() == ("perfsuite cells: error: --estimate models GPT-2 presets only, not "
                                               "llama-3-8b, qwen2-7b; select other cells or list them without --estimate")
    assert main(["cells", "--profile", "hf-modern", "--device", "cuda"]) == 0
