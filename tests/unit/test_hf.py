"""The hf implementation against the reference: same weights, same outputs; every peft method runs; refusals hold."""

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install -e '.[hf]'")
peft = pytest.importorskip("peft", reason="the hf extra is not installed: pip install -e '.[hf]'")

import torch  # noqa: E402

from perfsuite.models.adapters import attach  # noqa: E402
from perfsuite.cells.grid import HF_ADAPTER_NAMES, RANK_FREE, Cell  # noqa: E402
from perfsuite.models.checkpoint import load_reference_model, read_checkpoint  # noqa: E402
from perfsuite.hf import ADAPTERHUB_ADAPTERS, library_versions  # noqa: E402
from perfsuite.hf.adapters import HF_ADAPTERS, REFUSED, TARGET, attach_hf  # noqa: E402
from perfsuite.hf.models import HFGPT2, hf_model_from_reference  # noqa: E402
from perfsuite.models.model import build_model  # noqa: E402
from perfsuite.workloads.context import ModelCache  # noqa: E402
from perfsuite.models.decoding import KVBuffer, Schedule, decode_fixed, decode_verified, ragged_forward  # noqa: E402

TOKENS = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
ATOL = 1e-5  # float32: the two stacks sum in different orders


def ref_logits(model):
    with torch.no_grad():
        return model(TOKENS)[0]


def hf_logits(model):
    with torch.no_grad():
        return model(input_ids=TOKENS).logits


def test_a_save_pretrained_checkpoint_loads_into_the_reference_with_the_same_logits(tmp_path):
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=512, n_positions=128,
                                     bos_token_id=511, eos_token_id=511)
    torch.manual_seed(7)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2's init leaves biases and LayerNorms at 0/1: make every tensor matter
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path / "small")
    ref = load_reference_model(tmp_path / "small")
    assert read_checkpoint(tmp_path / "small").config.n_positions == 128
    torch.testing.assert_close(ref_logits(ref), hf_logits(hf), atol=ATOL, rtol=0)


def test_the_hf_plain_model_is_the_reference_model():
    ref = build_model("tiny", seed=2)
    torch.testing.assert_close(hf_logits(hf_model_from_reference(ref)), ref_logits(ref), atol=ATOL, rtol=0)


def test_ref_and_peft_lora_give_the_same_outputs_for_the_same_weights():
    """The reference's rank-r LoRA on q and v, written into peft's LoRA on c_attn as rank 2r with B's k rows zero
    (peft cannot adapt part of a fused layer): the same function, so the two stacks compute like with like."""
    r, d = 4, 64
    ref = attach(build_model("tiny", seed=2), "lora", r, seed=5)
    hf = attach_hf(hf_model_from_reference(build_model("tiny", seed=2)), "lora", 2 * r, seed=5)
    with torch.no_grad():
        for block, layer in zip(ref.h, hf.get_base_model().transformer.h):
            lora, c_attn = block.attn.c_attn, layer.attn.c_attn
            c_attn.lora_A["default"].weight.copy_(lora.lora_A)  # (2r, d): A_q stacked on A_v
            b = torch.zeros(3 * d, 2 * r)
            b[:d, :r], b[2 * d:, r:] = lora.lora_B_q, lora.lora_B_v  # q rows from A_q, v rows from A_v, k none
            c_attn.lora_B["default"].weight.copy_(b)
            assert c_attn.scaling["default"] == 1.0 and lora.scaling == 1.0  # alpha = rank on both sides
    torch.testing.assert_close(hf_logits(hf), ref_logits(ref), atol=ATOL, rtol=0)
    assert not torch.allclose(ref_logits(ref), ref_logits(build_model("tiny", seed=2)), atol=1e-3)  # LoRA matters


def test_every_hf_method_is_registered_with_its_config():
    assert set(HF_ADAPTERS) == {"none", *HF_ADAPTER_NAMES} and TARGET == ["c_attn"]
    assert all(HF_ADAPTERS[n].doc for n in HF_ADAPTERS)


@pytest.mark.parametrize("name", [n for n in HF_ADAPTER_NAMES if n not in ADAPTERHUB_ADAPTERS])
def test_every_peft_method_attaches_and_changes_the_output(name):
    base = hf_model_from_reference(build_model("tiny"))
    model = attach_hf(base, name, RANK_FREE.get(name, 8), seed=1)
    assert not isinstance(model, transformers.GPT2LMHeadModel) or name == "lora-merged"
    out = hf_logits(model)
    assert out.shape == (2, 24, 512) and torch.isfinite(out).all()
    if name != "ia3":  # IA³ starts at the identity (scales of one), which is not zero to time on
        assert not torch.allclose(out, hf_logits(base), atol=1e-4)
    assert all(not p.requires_grad or p.any() for p in model.parameters())  # nothing timed on zeros


def test_merged_lora_equals_unmerged_lora():
    base = hf_model_from_reference(build_model("tiny"))
    unmerged, merged = attach_hf(base, "lora", 8, seed=1), attach_hf(base, "lora-merged", 8, seed=1)
    assert isinstance(merged, transformers.GPT2LMHeadModel)
    torch.testing.assert_close(hf_logits(merged), hf_logits(unmerged), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_peft_still_refuses_conv1d_for(name):
    """If a peft release accepts GPT-2's Conv1D for one of these, add it to the grid (and drop it from REFUSED)."""
    make = {"loha": lambda: peft.LoHaConfig(r=4, target_modules=TARGET),
            "lokr": lambda: peft.LoKrConfig(r=4, target_modules=TARGET),
            "boft": lambda: peft.BOFTConfig(boft_block_size=4, target_modules=TARGET),
            "hra": lambda: peft.HRAConfig(r=4, target_modules=TARGET)}[name]
    with pytest.raises(TypeError, match="not supported"):
        peft.get_peft_model(hf_model_from_reference(build_model("tiny")), make())


def test_the_recompute_decoder_runs_on_transformers_layers():
    models = ModelCache().for_impl("hf")
    hf = models.adapted("tiny", "float32", "cpu", "lora", 8)
    assert isinstance(hf, HFGPT2) and models.trained("tiny") is False
    ref = ModelCache().base("tiny", "float32", "cpu")
    idx, starts = TOKENS[:, :6], torch.zeros(2, dtype=torch.long)
    plain = models.base("tiny", "float32", "cpu")
    torch.testing.assert_close(ragged_forward(plain, KVBuffer(plain, 2, 8), idx, starts, 6),
                               ragged_forward(ref, KVBuffer(ref, 2, 8), idx, starts, 6), atol=ATOL, rtol=0)
    with torch.no_grad():  # the ragged pass over the view is transformers' own forward
        torch.testing.assert_close(ragged_forward(hf, KVBuffer(hf, 2, 8), idx, starts, 6), hf(idx).logits, atol=ATOL, rtol=0)
    schedule = Schedule(window=4, context=20, token_budget=16)
    verified = decode_verified(hf, TOKENS[:, :8], 12, schedule)
    assert torch.equal(verified.tokens, decode_fixed(hf, TOKENS[:, :8], 12, schedule))


def test_hf_cells_record_the_library_versions():
    cell = Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf")
    env = ModelCache().env(cell)
    assert env["libraries"] == f"transformers {transformers.__version__}, peft {peft.__version__}"
    assert library_versions(cell) == env["libraries"] and ModelCache().env(Cell("latency", "lora", 8)) == {}


@pytest.mark.parametrize("name", ADAPTERHUB_ADAPTERS)
def test_adapterhub_bottlenecks_match_the_reference_designs(name):
    """Where the `adapters` package is installed (it pins transformers < 5): the same bottlenecks, as many weights."""
    pytest.importorskip("adapters", reason="AdapterHub's `adapters` is not installed (it needs transformers 4.x)")
    from perfsuite.models.adapters import adapter_parameters

    base = hf_model_from_reference(build_model("tiny"))
    model = attach_hf(base, name, 8, seed=1)
    added = sum(p.numel() for k, p in model.named_parameters() if ".perfsuite." in k)
    assert added == sum(p.numel() for p in adapter_parameters(attach(build_model("tiny"), name, 8)))
    assert not torch.allclose(hf_logits(model), hf_logits(base), atol=1e-4)
    with pytest.raises(Exception, match="AdapterHub"):
        HFGPT2(model, build_model("tiny").config, adapterhub=True).h  # the ragged decoder would skip them
