"""Serving-time cells: mixed-adapter batches, decode steps, quantized bases — the grid, the correctness check before
timing, the records, the report and the estimate (issue 29)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from perfsuite.cells.grid import (ADAPTER_NAMES, LATER_FIELDS, PROFILES, QUANTS, SERVING_METHODS, Cell, get_profile,
                                  select, unsupported_reason)
from perfsuite.workloads.context import CellContext, ModelCache
from perfsuite.workloads.mixed import BANK_B_STD, adapter_ranks, row_adapters
from perfsuite.workloads.serving import (Bank, MixedBatchMismatch, check, logits, make_inputs, run_serving_cell)
from synthetic import FakeBenchmark

ROOT = Path(__file__).resolve().parents[2]


# --- the grid: new fields leave every earlier cell as it was ------------------------------------------------------


def _stored_cells():
    """Every cell dict in the committed baselines and results fixtures (files written before serving existed)."""
    files = [*sorted((ROOT / "baselines").glob("*.json")), *sorted((ROOT / "tests/fixtures/results").glob("*.json")),
             *sorted((ROOT / "tests/fixtures/baselines").glob("*.json"))]
    found = []
    for path in files:
        if path.name.startswith(("corrupt", "broken", "not_a", "future", "newer")):
            continue  # fixtures that are malformed on purpose
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue

        def walk(v):
            if isinstance(v, dict):
                if isinstance(v.get("cell"), dict) and isinstance(v.get("cell_id"), str):
                    found.append((path.name, v["cell_id"], v["cell"]))
                for k, x in v.items():
                    if isinstance(x, dict) and isinstance(x.get("cell"), dict) and "[" in k:  # a baseline's cells
                        found.append((path.name, k, x["cell"]))
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(doc)
    return found


def test_every_stored_cell_keeps_its_id_and_its_exact_file_form():
    stored = _stored_cells()
    assert len(stored) > 100 and any(name.startswith("smoke_cpu") for name, _, _ in stored)
    for name, cell_id, d in stored:
        try:
            cell = Cell.from_dict(d)
        except ValueError:
            continue  # the fixtures of malformed files
        assert cell.id == cell_id, name
        # no serving-time key at its default: results, baselines and history rows keep their form (a file from
        # before modes existed lacks "mode", which its cell reads back as eager)
        assert {k: v for k, v in cell.to_dict().items() if k in d or k in LATER_FIELDS} == d, name


def test_the_committed_baseline_cells_are_still_in_the_smoke_profile():
    smoke = {c.id for c in get_profile("smoke").cells(device="cpu")}
    baseline = [cid for name, cid, _ in _stored_cells() if name.startswith("smoke_cpu")]
    assert baseline and set(baseline) <= smoke


def test_new_fields_appear_in_the_id_and_the_file_only_when_set():
    decode = Cell("latency", "lora", 8, batch=4, phase="decode", kv_len=64)
    assert decode.id == "latency[lora-r8-b4-L64]" and decode.to_dict()["kv_len"] == 64
    mixed = Cell("serving", "lora", 8, batch=8, phase="decode", kv_len=64, n_adapters=4, order="shuffled",
                 method="gathered", rank_mix="hetero", quant="ao-int8")
    assert mixed.id == "serving[gathered-K4-shuffled-r8-b8-L64-hetero-ao-int8]"
    assert Cell.from_dict(mixed.to_dict()) == mixed
    assert set(LATER_FIELDS) <= set(mixed.to_dict())
    with pytest.raises(ValueError, match="kv_len"):
        Cell("latency", "lora", 8, batch=4, phase="decode")
    with pytest.raises(ValueError, match="order"):
        Cell("serving", "lora", 8, batch=8, order="sorted")


def test_decode_cells_exist_for_every_adapter_in_smoke_and_paper():
    for name, lengths in (("smoke", {64}), ("paper", {128, 512, 2048})):
        decode = [c for c in get_profile(name).cells(device="cpu") if c.phase == "decode"]
        assert {c.adapter for c in decode} == {"none", *ADAPTER_NAMES}, name
        assert {c.kv_len for c in decode} == lengths and all(c.seq_len is None for c in decode)
    assert len([c for c in get_profile("smoke").cells(device="cpu") if c.phase == "decode"]) == 9  # a few cells


def test_serving_smoke_has_every_method_k_up_to_8_both_orders_and_phases():
    cells = get_profile("serving-smoke").cells(device="cpu")
    serving = [c for c in cells if c.workload == "serving"]
    assert {c.method for c in serving} == {None, *SERVING_METHODS}
    assert {c.n_adapters for c in serving} - {None} == {1, 2, 4, 8}
    assert {c.order for c in serving} - {None} == {"grouped", "shuffled"}
    assert {c.phase for c in serving} == {"prefill", "decode"}
    assert all(c.n_adapters <= c.batch for c in serving if c.n_adapters)
    assert all(c.impl == SERVING_METHODS[c.method] for c in serving if c.method)
    assert any(c.rank_mix == "hetero" for c in serving)
    quant = [c for c in cells if c.quant != "none"]
    assert {c.quant for c in quant} == {"ao-int8", "ao-int4"} and {c.adapter for c in quant} == {"none", "lora",
                                                                                                  "lora-merged"}
    gpu = get_profile("serving").cells(device="cuda")
    assert max(c.n_adapters or 0 for c in gpu) == 64 and {c.quant for c in gpu} == set(QUANTS)
    assert {c.model for c in gpu if c.workload == "serving"} == {"gpt2-medium", "llama-3-8b"}


@pytest.mark.parametrize("name", PROFILES)
def test_serving_and_decode_cells_are_opt_in_by_profile_only(name):
    """The latency paper profiles gain decode cells; only serving profiles have serving or quantized cells."""
    cells = PROFILES[name].cells(device="cpu")
    if not name.startswith("serving"):
        assert not [c for c in cells if c.workload == "serving" or c.quant != "none"]


def test_merged_lora_on_a_quantized_base_and_bitsandbytes_on_a_cpu_are_unsupported_with_the_reason():
    merged = Cell("latency", "lora-merged", 8, batch=4, seq_len=32, quant="ao-int8")
    assert "cannot be folded into quantized weights" in unsupported_reason(merged)
    assert unsupported_reason(replace(merged, adapter="lora")) is None
    nf4 = Cell("latency", "lora", 8, batch=4, seq_len=32, quant="bnb-nf4")
    assert "CUDA" in unsupported_reason(nf4) and unsupported_reason(replace(nf4, device="cuda")) is None


def test_a_quantized_cell_without_its_library_is_skipped_with_how_to_get_it(monkeypatch):
    import perfsuite.hf as hf

    monkeypatch.setattr(hf, "_installed", lambda m: m != "torchao")
    reason = hf.missing_extra(Cell("latency", "lora", 8, batch=4, seq_len=32, quant="ao-int4"))
    assert "torchao" in reason and "[quant]" in reason
    assert hf.missing_extra(Cell("latency", "lora", 8, batch=4, seq_len=32)) is None
    assert set(hf.QUANT_LIBRARIES) == set(QUANTS) - {"none"}  # the grid and the libraries in step


# --- who serves which request -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch,k", [(8, 1), (8, 3), (16, 8), (64, 64)])
def test_every_adapter_has_requests_and_shuffled_is_grouped_permuted(batch, k):
    grouped, shuffled = row_adapters(batch, k, "grouped"), row_adapters(batch, k, "shuffled")
    assert set(grouped) == set(range(k)) and grouped == sorted(grouped)
    assert sorted(shuffled) == grouped and shuffled == row_adapters(batch, k, "shuffled")  # seeded
    assert max(grouped.count(a) for a in range(k)) - min(grouped.count(a) for a in range(k)) <= 1
    if k > 1 and batch > 2:
        assert shuffled != grouped
    with pytest.raises(ValueError):
        row_adapters(4, 5, "grouped")


def test_heterogeneous_ranks_go_around_the_cells_rank():
    assert adapter_ranks(8, 4, None) == [8, 8, 8, 8] and adapter_ranks(8, 4, "hetero") == [4, 8, 16, 4]


# --- correctness first: every method against the per-request reference ----------------------------------------


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def _cell(method: str, phase: str = "decode", k: int = 4, order: str = "shuffled", **kw) -> Cell:
    shape = dict(phase="decode", kv_len=16) if phase == "decode" else dict(seq_len=8)
    return Cell("serving", "lora", 8, batch=8, impl=SERVING_METHODS[method], method=method, n_adapters=k, order=order,
                **shape, **kw)


@pytest.mark.parametrize("method", SERVING_METHODS)
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_each_method_matches_every_request_through_its_own_adapter_alone(models, method, phase):
    cell = _cell(method, phase)
    base = models.for_impl(cell.impl).base("tiny", "float32", "cpu")
    inputs = make_inputs(cell, base)
    with torch.inference_mode():
        bank = Bank(method, base, adapter_ranks(8, 4, "hetero" if method != "peft" else None), 1, "cpu")
        ids = row_adapters(8, 4, "shuffled")
        result = check(bank.call(ids, inputs), bank, ids, inputs, logits(base, inputs), "float32")
        assert result["matches_per_request"] and result["max_abs_err"] <= result["check_tolerance"]
        assert result["adapter_effect"] > 3 * result["check_tolerance"]  # the check can fail: see below
        wrong = [(k + 1) % 4 for k in ids]  # every request through another adapter
        with pytest.raises(MixedBatchMismatch, match="differs from the per-request reference"):
            check(bank.call(wrong, inputs), bank, ids, inputs, logits(base, inputs), "float32")


def test_a_call_that_ignores_adapter_names_is_caught():
    """What the check caught while this workload was written: calling a PeftModel's inner LoraModel passes
    ``adapter_names`` on to transformers, which ignores it; every row then runs the active adapter."""
    cache = ModelCache().for_impl("hf")
    base = cache.base("tiny", "float32", "cpu")
    cell = _cell("peft", k=2, order="grouped")
    inputs = make_inputs(cell, base)
    with torch.inference_mode():
        bank = Bank("peft", base, [8, 8], 1, "cpu")
        ids = row_adapters(8, 2, "grouped")
        from perfsuite.workloads.decode import hf_call

        inner = lambda: hf_call(bank.model.model, inputs.tokens, inputs.kv, inputs.position.view(1, 1),  # noqa: E731
                                adapter_names=[f"a{k}" for k in ids])
        with pytest.raises(MixedBatchMismatch):
            check(inner, bank, ids, inputs, logits(base, inputs), "float32")


def test_adapters_too_weak_to_tell_apart_make_the_check_refuse(models):
    base = models.base("tiny", "float32", "cpu")
    cell = _cell("gathered")
    inputs = make_inputs(cell, base)
    with torch.inference_mode():
        bank = Bank("gathered", base, [8] * 4, 1, "cpu")
        for p in (bank.model.h[0].attn.c_attn.bank_bq, bank.model.h[0].attn.c_attn.bank_bv):
            p.zero_()
        for s in bank.singles:
            s.h[0].attn.c_attn.lora_B_q.zero_(), s.h[0].attn.c_attn.lora_B_v.zero_()
        for p in [*(m.h[1].attn.c_attn.lora_B_q for m in bank.singles), *(m.h[1].attn.c_attn.lora_B_v for m in bank.singles)]:
            p.zero_()
        mb = bank.model.h[1].attn.c_attn
        mb.bank_bq.zero_(), mb.bank_bv.zero_()
        ids = row_adapters(8, 4, "shuffled")
        with pytest.raises(MixedBatchMismatch, match="could not tell adapters apart"):
            check(bank.call(ids, inputs), bank, ids, inputs, logits(base, inputs), "float32")
    assert BANK_B_STD > 0


# --- the workload's records -----------------------------------------------------------------------------------


def _planted_loop(monkeypatch, ratios: dict):
    """round_robin replaced by planted rounds: each member's time = plain time × its ratio (by method and K)."""
    import perfsuite.workloads.serving as serving

    def fake(loop, *, device, policy):
        out = {}
        for key in loop:
            ratio = 1.0 if key in (serving.PLAIN, serving.PROBE) else ratios[key[0], key[1]]
            out[key] = [ratio * (1.0 + 0.001 * i) for i in range(12)]
        return out

    monkeypatch.setattr(serving, "round_robin", fake)


def test_a_record_holds_its_slowdown_over_the_plain_model_and_over_k1(monkeypatch):
    _planted_loop(monkeypatch, {("gathered", 1): 1.2, ("gathered", 4): 1.5})
    cells = [Cell("serving", "none", 0, batch=8, phase="decode", kv_len=16), _cell("gathered")]
    ctx = CellContext(cells=cells)
    record = run_serving_cell(FakeBenchmark(), cells[1], ctx)
    assert record.get("slowdown_pct") == pytest.approx(50.0) and record.get("slowdown_vs_k1_pct") == pytest.approx(25.0)
    assert record.get("k1_cell") == "serving[gathered-K1-grouped-r8-b8-L16]"  # timed in the loop, though not selected
    assert record.get("reference_cell") == "serving[none-r0-b8-L16]" and record.get("host_syncs") == 0
    assert record.get("matches_per_request") and record.get("checked_rows") == 8
    plain = run_serving_cell(FakeBenchmark(), cells[0], ctx)
    assert plain.get("slowdown_pct") is None and plain.get("time_ms") == pytest.approx(1.0055)


def test_a_member_that_differs_fails_its_cell_and_is_not_timed(monkeypatch):
    import perfsuite.workloads.serving as serving

    real = serving.Bank.call

    def off_by_one(self, ids, inputs):
        return real(self, [(k + 1) % max(2, len(self.ranks)) for k in ids], inputs)

    monkeypatch.setattr(serving.Bank, "call", off_by_one)
    timed = []
    monkeypatch.setattr(serving, "round_robin", lambda loop, **kw: timed.append(set(loop)) or {k: [1.0] * 4 for k in loop})
    cell = _cell("loop")
    ctx = CellContext(cells=[cell])
    bench = FakeBenchmark()
    with pytest.raises(MixedBatchMismatch, match="loop-K4-shuffled"):
        run_serving_cell(bench, cell, ctx)
    assert bench.skipped and all(("loop", 4, "shuffled", 8, None) not in members for members in timed)


def test_a_serving_record_is_judged_on_time_and_on_its_slowdown_like_a_latency_cell(monkeypatch):
    from perfsuite.compare.estimates import cell_metrics

    _planted_loop(monkeypatch, {("gathered", 1): 1.2, ("gathered", 4): 1.5})
    cells = [Cell("serving", "none", 0, batch=8, phase="decode", kv_len=16), _cell("gathered")]
    ctx = CellContext(cells=cells)
    # (and its peak memory, where the machine records one)
    assert cell_metrics(run_serving_cell(FakeBenchmark(), cells[1], ctx))[:3] == ("norm_time", "time", "slowdown")
    assert cell_metrics(run_serving_cell(FakeBenchmark(), cells[0], ctx))[:2] == ("norm_time", "time")
    assert "slowdown" not in cell_metrics(run_serving_cell(FakeBenchmark(), cells[0], ctx))  # the plain model


# --- decode steps -------------------------------------------------------------------------------------------


def test_a_decode_step_is_the_models_own_forward_after_its_cache(models):
    from perfsuite.workloads.decode import kv_cache, position_of, reference_step, step_fn

    model = models.base("tiny", "float32", "cpu")
    tokens = torch.randint(0, 512, (3, 1), generator=torch.Generator().manual_seed(0))
    kv = kv_cache(model, 3, 16, dtype=torch.float32, device="cpu")
    with torch.inference_mode():
        step = step_fn(model, tokens, kv, 16)()
        forward = model(tokens, past=kv)[0]
        assert torch.allclose(step, forward, atol=1e-6)
        hf = models.for_impl("hf").base("tiny", "float32", "cpu")  # transformers' twin, the same weights
        assert torch.allclose(step_fn(hf, tokens, kv, 16)(), step, atol=1e-4)
        assert reference_step(model, tokens, kv, torch.tensor([15])).shape == (3, 1, 512)
    assert position_of(2048, 1024) == 1023 and position_of(512, 1024) == 512


# --- quantized bases ----------------------------------------------------------------------------------------


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_torchao = pytest.mark.skipif(not _has("torchao"), reason="the quant extra (torchao) is not installed")


@needs_torchao
@pytest.mark.parametrize("quant,kind", [("ao-int8", "Int8Tensor"), ("ao-int4", "IntxUnpackedToInt8Tensor")])
def test_torchao_quantizes_the_block_linears_and_lora_runs_on_top(quant, kind):
    cache = ModelCache()
    base = cache.base("tiny", "float32", "cpu", quant)
    plain = cache.base("tiny", "float32", "cpu")
    assert base is not plain and type(plain.h[0].attn.c_attn.weight).__name__ == "Parameter"  # left as it was
    assert {type(m.weight).__name__ for b in base.h for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)} == {kind}
    assert base.lm_head.weight is base.wte.weight  # the tied head stays in the model's dtype
    lora = cache.build_adapted("tiny", "float32", "cpu", "lora", 8, quant)
    assert lora.h[0].attn.c_attn.lora_A.dtype == torch.float32
    x = torch.randint(0, 512, (2, 8))
    with torch.inference_mode():
        q, p, a = base(x)[0], plain(x)[0], lora(x)[0]
    assert 0 < (q - p).abs().max() < 0.2 and (a - q).abs().max() > 1e-4  # quantized, close; the adapter acts


@needs_torchao
def test_torchao_int4_weight_only_has_no_cpu_path_so_the_cpu_uses_intx():
    """Why ao-int4 uses IntxWeightOnlyConfig: torchao's Int4WeightOnlyConfig packings need mslk or CUDA."""
    from perfsuite.workloads.quant import import_torchao, torchao_config

    api = import_torchao()
    layer = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(torch.bfloat16)
    with pytest.raises((ImportError, NotImplementedError, AssertionError, ValueError, RuntimeError)):
        api.quantize_(layer, api.Int4WeightOnlyConfig(group_size=32))
    assert type(torchao_config("ao-int4", api)).__name__ == "IntxWeightOnlyConfig"


def _fake_bnb():
    """bitsandbytes' layers as the seam sees them (the real ones quantize when moved to a GPU): constructors and
    moves recorded, the forward in float, so the replacement can be checked on a CPU."""
    import types

    calls = []

    class Params(torch.nn.Parameter):
        def __new__(cls, data, requires_grad=False, **kw):
            calls.append((cls.__name__, kw))
            return torch.nn.Parameter.__new__(cls, data, requires_grad)

    class Params4bit(Params):
        pass

    class Int8Params(Params):
        pass

    class Layer(torch.nn.Linear):
        def __init__(self, i, o, bias=True, **kw):
            super().__init__(i, o, bias=bias)
            calls.append((type(self).__name__, kw))
            self.compute_dtype = kw.get("compute_dtype")

        def to(self, *a, **k):
            calls.append(("to", a))
            return super().to(*a, **k)

    class Linear4bit(Layer):
        pass

    class Linear8bitLt(Layer):
        pass

    nn_ns = types.SimpleNamespace(Linear4bit=Linear4bit, Linear8bitLt=Linear8bitLt, Params4bit=Params4bit,
                                  Int8Params=Int8Params)
    return types.SimpleNamespace(nn=nn_ns), calls


BNB = {"bnb-nf4": ("Linear4bit", {"quant_type": "nf4"}),
       "bnb-int8": ("Linear8bitLt", {"has_fp16_weights": False, "threshold": 6.0})}


@pytest.mark.parametrize("on", [pytest.param("cuda", marks=pytest.mark.gpu), "seam"])
@pytest.mark.parametrize("quant", list(BNB))
def test_bitsandbytes_replaces_every_block_linear_and_lora_runs_on_top(quant, on):
    """On CUDA, the real library: the quantized base and LoRA on top differ, the block linears are its layers. Its CPU
    twin through a fake bitsandbytes: every block linear replaced by the library's layer with the same weights, moved
    to the model's device, LoRA on top."""
    from perfsuite.models.adapters import attach
    from perfsuite.models.model import build_model
    from perfsuite.workloads.quant import block_linears, quantize_base

    layer, kw = BNB[quant]
    if on == "cuda":
        pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
        cache = ModelCache()
        base = cache.base("tiny", "float16", "cuda", quant)
        lora = cache.build_adapted("tiny", "float16", "cuda", "lora", 8, quant)
        x = torch.randint(0, 512, (2, 8), device="cuda")
        with torch.inference_mode():
            assert (lora(x)[0] - base(x)[0]).abs().max() > 0
        assert layer in type(base.h[0].attn.c_attn).__name__
        return
    model = build_model("tiny")
    before = {name: p.detach().clone() for name, p in model.named_parameters() if name.startswith("h.")}
    n = len(block_linears(model))
    api, calls = _fake_bnb()
    quantize_base(model, quant, api=api)
    made = [c for c in calls if c[0] == layer]
    assert len(made) == n == 4 * model.config.n_layer and all(kw.items() <= c[1].items() for c in made)
    assert sum(1 for c in calls if c[0] == "to") == n
    assert all(type(b.attn.c_attn).__name__ == layer for b in model.h) and type(model.lm_head).__name__ == "Linear"
    after = dict(model.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the same weights
    attach(model, "lora", 8)
    with torch.inference_mode():
        assert model(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 512)


# --- a real serving-smoke run, the report and the estimate ----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A slice of serving-smoke end to end: every method at K = 1 and 4, decode b8, the ao-int8 cells, 4 rounds."""
    from perfsuite import api

    out = tmp_path_factory.mktemp("served")
    options = api.RunOptions(profile="serving-smoke", rounds=4, warmup=1, out_dir=str(out),
                             cells="(workload == 'serving' and batch == 8 and phase == 'decode' and n_adapters in "
                                   "(None, 1, 4) and rank_mix is None) or quant == 'ao-int8'")
    return api.run(options)


def test_a_serving_smoke_slice_runs_checks_and_draws(served):
    assert served.exit_code == 0, served.summary
    records = served.load_results().ok()
    serving = [r for r in records if r.cell.workload == "serving"]
    assert {r.cell.method for r in serving} == {None, *SERVING_METHODS}
    assert all(r.get("matches_per_request") for r in serving if r.cell.method)
    assert all(r.get("slowdown_vs_k1_pct") is not None for r in serving if r.cell.n_adapters == 4)
    quantized = _has("torchao")  # else its cells are recorded missing_extra, with the command that installs it
    assert any(r.cell.quant == "ao-int8" and r.cell.phase == "decode" for r in records) == quantized
    names = {p.name for p in Path(served.report).parent.iterdir()}
    assert {"serving-gathered.png", "serving-loop.png", "serving-peft.png", "serving-k1-vs-mixed.png",
            *(["quant-ao-int8.png"] if quantized else [])} <= names


def test_the_report_tables_show_the_recorded_slowdowns(served):
    from perfsuite.report.serving import method_data

    frame = served.load_results().frame
    data = {d.method: d for d in method_data(frame)}
    grid = data["gathered"].panels["decode L64", "shuffled"]
    rec = next(r for r in served.load_results().ok() if r.cell.method == "gathered" and r.cell.n_adapters == 4
               and r.cell.order == "shuffled")
    assert grid.rows == (1, 4) and grid.cols == (8,)
    assert grid.values[1, 0] == pytest.approx(rec.get("slowdown_pct"))


def test_the_estimate_prices_every_serving_member_in_whole_cycles():
    from perfsuite.estimate import DeviceRates, HostCosts, count_ops, estimate
    from perfsuite.workloads.serving_cost import member_ops

    host = HostCosts(svd_1024_s=0.5, dispatch_op_s=1e-5, meta_op_s=1e-4, init_param_s=1e-8)
    profile = get_profile("serving-smoke")
    cells = select(profile.cells(device="cpu"), "workload == 'serving' and impl == 'ref' and batch == 16")
    e = estimate(profile, cells, lambda c: DeviceRates(1e-5, 1e-12), how="test", host=host)
    # one group: the plain model + 2 methods × 7 (K, order) members + the probe = 16, rounds 30 → 100 in cycles of 16
    assert e.forwards_min == 15 * 32 and e.forwards_max == 15 * 112
    assert {"correctness checks (per-request references)", "timed rounds", "model builds"} <= set(e.steps)
    g1, g2, g4 = (member_ops(count_ops, "tiny", "ref", "decode", "gathered", k) for k in (1, 2, 4))
    assert g1 == g2 == g4  # one batched matmul whatever K
    l1, l2, l4 = (member_ops(count_ops, "tiny", "ref", "decode", "loop", k) for k in (1, 2, 4))
    assert l4[1] - l2[1] == 2 * (l2[1] - l1[1]) > 0  # the loop's ops once per distinct adapter


@pytest.mark.parametrize("model", ["llama-tiny", "qwen2-tiny"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_peft_mixed_batches_on_todays_families_match_their_requests(model, phase):
    """The GPU profile's Llama-3-8B-shaped peft cells, on the tiny twins: q_proj/v_proj LoRAs, a grouped-query KV
    cache (fewer key/value heads than query heads) for the decode step."""
    cache = ModelCache().for_impl("hf")
    base = cache.base(model, "float32", "cpu")
    cell = replace(_cell("peft", phase, k=3), model=model)
    inputs = make_inputs(cell, base)
    if phase == "decode":
        assert inputs.kv[0][0].shape[1] == 2  # the family's two KV heads
    with torch.inference_mode():
        bank = Bank("peft", base, [8, 4, 16], 1, "cpu")
        ids = row_adapters(8, 3, "shuffled")
        assert check(bank.call(ids, inputs), bank, ids, inputs, logits(base, inputs), "float32")["matches_per_request"]
