"""Checkpoints in the Hugging Face GPT-2 layout, without transformers: round trips, labels, one-line refusals."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from perfsuite.cells.grid import get_profile
from perfsuite.models.checkpoint import (CheckpointError, hf_state_dict, load_reference_model, read_checkpoint,
                                  save_checkpoint)
from perfsuite.cli import main
from perfsuite.models.model import build_model
from perfsuite.plugin.session import SessionState
from perfsuite.measure.timing import RoundPolicy
from perfsuite.workloads.context import CellContext, ModelCache

TOKENS = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def ckpt_dir(tmp_path):
    save_checkpoint(build_model("tiny", seed=3), tmp_path / "tiny-ckpt")
    return tmp_path / "tiny-ckpt"


def logits(model):
    with torch.no_grad():
        return model(TOKENS)[0]


def test_a_saved_model_loads_back_with_the_same_logits(ckpt_dir):
    loaded = load_reference_model(ckpt_dir)
    assert torch.equal(logits(loaded), logits(build_model("tiny", seed=3)))
    assert loaded.lm_head.weight is loaded.wte.weight  # tied, as in GPT-2


def test_the_file_is_in_the_hf_layout(ckpt_dir):
    tensors = load_file(str(ckpt_dir / "model.safetensors"))
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)  # Conv1D: (in, out)
    assert tensors["transformer.h.1.mlp.c_fc.weight"].shape == (64, 256)
    assert "lm_head.weight" not in tensors
    config = json.loads((ckpt_dir / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_embd"] == 64 and config["n_inner"] == 256


def test_names_without_the_transformer_prefix_and_old_mask_buffers_load(tmp_path, ckpt_dir):
    model = build_model("tiny", seed=3)
    state = {k.removeprefix("transformer."): v for k, v in hf_state_dict(model).items()}
    state["h.0.attn.bias"] = torch.ones(1, 1, 4, 4)  # the causal-mask buffer older GPT-2 files carry
    state["lm_head.weight"] = state["wte.weight"].clone()
    (tmp_path / "hub").mkdir()
    save_file(state, str(tmp_path / "hub" / "model.safetensors"))
    (tmp_path / "hub" / "config.json").write_text((ckpt_dir / "config.json").read_text())
    assert torch.equal(logits(load_reference_model(tmp_path / "hub")), logits(model))


def test_the_label_names_the_folder_and_its_content(tmp_path, ckpt_dir):
    ckpt = read_checkpoint(ckpt_dir)
    assert ckpt.label == f"tiny-ckpt@{ckpt.sha256[:8]}" and len(ckpt.sha256) == 64
    other = save_checkpoint(build_model("tiny", seed=4), tmp_path / "b" / "tiny-ckpt")
    assert other.label != ckpt.label and other.label.startswith("tiny-ckpt@")
    assert ckpt.env() == {"weights": str(ckpt.path), "weights_sha256": ckpt.sha256}


def _break(d, kind):
    config = json.loads((d / "config.json").read_text())
    if kind == "no folder":
        return d / "absent"
    if kind == "no config":
        (d / "config.json").unlink()
    elif kind == "no weights":
        (d / "model.safetensors").unlink()
        (d / "pytorch_model.bin").write_bytes(b"")
    elif kind == "not json":
        (d / "config.json").write_text("{ nope")
    elif kind == "not gpt2":
        (d / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    elif kind == "wrong width":
        (d / "config.json").write_text(json.dumps(config | {"n_embd": 128}))
    elif kind == "extra layer":
        (d / "config.json").write_text(json.dumps(config | {"n_layer": 3}))
    elif kind == "other activation":
        (d / "config.json").write_text(json.dumps(config | {"activation_function": "relu"}))
    elif kind == "garbage weights":
        (d / "model.safetensors").write_bytes(b"\x00" * 40)
    elif kind == "untied head":
        state = load_file(str(d / "model.safetensors"))
        state["lm_head.weight"] = torch.zeros_like(state["transformer.wte.weight"])
        save_file(state, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("kind, words", [
    ("no folder", "not a folder"), ("no config", "no config.json"), ("no weights", "found pytorch_model.bin"),
    ("not json", "not valid JSON"), ("not gpt2", "is not a GPT-2"),
    ("wrong width", "has shape (512, 64), the config implies (512, 128)"),
    ("extra layer", "missing 12 tensor(s)"), ("other activation", "activation_function 'relu'"),
    ("garbage weights", "not a readable safetensors file"), ("untied head", "untied head is not supported"),
])
def test_a_malformed_or_mismatched_checkpoint_is_one_clear_line(ckpt_dir, kind, words):
    d = _break(ckpt_dir, kind)
    with pytest.raises(CheckpointError) as e:
        load_reference_model(d)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_cli_says_it_in_one_line(ckpt_dir, capsys):
    assert main(["checkpoint", "show", str(ckpt_dir)]) == 0
    assert f"{read_checkpoint(ckpt_dir).label}: GPT-2, 2 layers, d = 64" in capsys.readouterr().out
    _break(ckpt_dir, "not gpt2")
    assert main(["checkpoint", "show", str(ckpt_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfsuite checkpoint: error: ") and err.count("\n") == 1


def test_weights_relabel_every_cell_and_the_models_load_them(ckpt_dir):
    ckpt = read_checkpoint(ckpt_dir)
    state = SessionState(profile=get_profile("smoke"), device="cpu", device_missing=None, dtype=None, rounds=None,
                         warmup=None, selection="workload == 'latency'", checkpoint=ckpt)
    cells = state.all_cells()
    assert cells and {c.model for c in cells} == {ckpt.label}
    assert state.settings()["weights"] == ckpt.label and state.settings()["weights_path"] == str(ckpt.path)
    models = ModelCache(checkpoint=ckpt)
    assert models.trained(ckpt.label) and not models.trained("tiny")
    assert torch.equal(logits(models.base(ckpt.label, "float32", "cpu")), logits(build_model("tiny", seed=3)))
    assert models.env(cells[0]) == ckpt.env()


class DisabledBenchmark:
    """pytest-benchmark under --benchmark-disable: runs the function once, untimed."""

    disabled, stats = True, None

    def pedantic(self, fn, **_):
        fn()


def test_recompute_cells_run_on_a_briefly_trained_checkpoint(tmp_path):
    from perfsuite.cells.grid import Cell
    from perfsuite.models.train_tiny import train_tiny
    from perfsuite.workloads.recompute import run_recompute_cell

    trained = train_tiny(steps=30)
    assert trained.final_loss < trained.first_loss - 1.0  # it learned the chain's statistics, in part
    ckpt = save_checkpoint(trained.model, tmp_path / "trained")
    cell = Cell("recompute", "lora", 4, batch=2, seq_len=8, window=4, gen_len=12, model=ckpt.label)
    context = CellContext(models=ModelCache(checkpoint=ckpt), policy=lambda c: RoundPolicy.fixed(1))
    record = run_recompute_cell(DisabledBenchmark(), cell, context).to_dict()
    assert record["status"] == "ok" and record["output_head"] == "tied"  # trained weights decode with their head
    assert record["matches_fixed_schedule"] is True and record["output_tokens"] == 24


def test_a_checkpoint_run_is_re_measured_on_its_own_weights(monkeypatch, tmp_path):
    import subprocess

    import perfsuite.processes as runs
    from perfsuite.formats.results import Results

    seen = []

    def fake_run(cmd, **_):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "stopped here")

    monkeypatch.setattr(runs.subprocess, "run", fake_run)
    results = Results(runs=[{"profile": "smoke", "weights_path": "/ck"}])
    remeasure = runs.remeasurer(results, {"latency[lora-r8-b1-s32]": "t.py::test_latency[lora-r8-b1-s32]"},
                                tmp_path, tmp_path)
    with pytest.raises(runs.RunError):
        remeasure(["latency[lora-r8-b1-s32]"])
    assert seen[0][-2:] == ["--perfsuite-profile=smoke", "--perfsuite-weights=/ck"]


def test_perfsuite_run_refuses_a_bad_weights_folder_in_one_line(tmp_path, capsys):
    assert main(["run", "--weights", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"perfsuite run: error: {tmp_path / 'absent'}: not a folder (want a checkpoint folder with " \
                  "config.json and model.safetensors)\n"


def test_make_tiny_help_states_the_default_it_trains_for(capsys):
    """The help is built without importing torch, so it quotes the default: it must be train_tiny's."""
    from perfsuite.models.train_tiny import STEPS

    with pytest.raises(SystemExit):
        main(["checkpoint", "make-tiny", "--help"])
    assert f"(default: {STEPS}," in " ".join(capsys.readouterr().out.split())
