"""Reading and writing peft-layout LoRA checkpoints, and ``perfsuite subspace`` on them.

The committed fixtures under tests/fixtures/peft/ are tiny GPT-2-style adapters (2 layers, d = 16, fused c_attn,
peft's key names) made by :func:`fixture_factors`; ``python tests/unit/test_peft_io.py`` rewrites them, and
``test_committed_fixtures_are_what_the_generator_makes`` keeps them honest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from perfsuite.cli import main
from perfsuite.commands.subspace import parse_layers
from perfsuite.formats.subspace import FORMAT_VERSION, read_results_json
from perfsuite.subspace.checkpoints import compare_checkpoints
from perfsuite.errors import PerfsuiteError
from perfsuite.subspace.peft_io import (
    PeftFormatError,
    layer_of,
    module_names,
    read_lora_checkpoint,
    write_lora_checkpoint,
)
from perfsuite.subspace.phi import phi_grid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peft"
FIXTURE_RANKS = {"r4-seed0": (4, 0), "r4-seed1": (4, 1), "r2-seed2": (2, 2)}
D, N_LAYER = 16, 2
CONTRACT_KEYS = {"layer", "matrix", "comparison", "label", "r_a", "r_b", "phi", "phi_11", "top_agree"}


def fixture_factors(rank: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's lora_A: two task directions shared by every fixture (weights 3 and 2, plus a little noise),
    then rank − 2 rows of the fixture's own, smaller and random; lora_B random. Float32-exact values."""
    task = np.random.default_rng(100)
    own = np.random.default_rng(seed)
    out = {}
    for layer in range(N_LAYER):
        shared = task.standard_normal((2, D)) / np.sqrt(D) * np.array([[3.0], [2.0]])
        a = np.vstack([shared + 0.1 * own.standard_normal((2, D)) / np.sqrt(D),
                       0.5 * own.standard_normal((rank - 2, D)) / np.sqrt(D)])
        b = 0.1 * own.standard_normal((3 * D, rank))
        out[f"transformer.h.{layer}.attn.c_attn"] = (a.astype(np.float32), b.astype(np.float32))
    return out


def write_fixture(path: Path, rank: int, seed: int) -> Path:
    return write_lora_checkpoint(path, fixture_factors(rank, seed), lora_alpha=2 * rank, target_modules=["c_attn"],
                                 base_model="perfsuite-fixture-gpt2-d16", fan_in_fan_out=True)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["subspace", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# --- the committed fixtures ----------------------------------------------------------------------------

def test_committed_fixtures_are_what_the_generator_makes():
    for name, (rank, seed) in FIXTURE_RANKS.items():
        ckpt = read_lora_checkpoint(FIXTURES / name)
        expected = fixture_factors(rank, seed)
        assert list(ckpt.modules) == list(expected)
        for path, (a, b) in expected.items():
            np.testing.assert_array_equal(ckpt.modules[path].lora_A, a)
            np.testing.assert_array_equal(ckpt.modules[path].lora_B, b)
        assert ckpt.config["r"] == rank and ckpt.config["target_modules"] == ["c_attn"]
        assert sum(f.stat().st_size for f in (FIXTURES / name).iterdir()) < 8_000


def test_fixture_files_use_peft_key_names_and_shapes():
    tensors = load_file(str(FIXTURES / "r4-seed0" / "adapter_model.safetensors"))
    assert sorted(tensors) == [f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{f}.weight"
                               for i in range(N_LAYER) for f in "AB"]
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].shape == (4, D)
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (3 * D, 4)


EXPECTED_SEED_TABLE = """\
layer  matrix  r_a  r_b  phi_11  top_agree  control_phi_11
    0  c_attn    4    4   0.999          4           0.009
    1  c_attn    4    4   0.995          4           0.000
2 matrices compared on lora_A: φ(1,1) of unrelated directions is about 1/d; top_agree = largest i with φ(i,i) > 0.5
"""


def test_cli_on_committed_fixtures_prints_the_expected_table(capsys):
    rc, out, err = run_cli(capsys, FIXTURES / "r4-seed0", FIXTURES / "r4-seed1")
    assert (rc, err) == (0, "")
    assert out == EXPECTED_SEED_TABLE


def test_cli_writes_json_and_csv_in_the_data_contract_shape(tmp_path, capsys):
    rc, out, _ = run_cli(capsys, FIXTURES / "r4-seed0", FIXTURES / "r2-seed2", "--out", tmp_path / "res")
    assert rc == 0
    data = read_results_json(tmp_path / "res" / "subspace.json")
    assert data["perfsuite_subspace_format"] == FORMAT_VERSION and data["factor"] == "A"
    assert data["a"]["peft_config"]["r"] == 4 and data["b"]["peft_config"]["r"] == 2
    comps = data["subspace"]
    assert [(c["layer"], c["matrix"], c["comparison"]) for c in comps] == [
        (0, "c_attn", "rank"), (0, "c_attn", "control"), (1, "c_attn", "rank"), (1, "c_attn", "control")]
    for c in comps:
        assert set(c) == CONTRACT_KEYS
        assert (c["r_a"], c["r_b"]) == (4, 2)
        assert np.array(c["phi"]).shape == (4, 2)
    assert comps[0]["label"] == "r4-seed0 r=4 vs r2-seed2 r=2"
    assert comps[0]["phi_11"] > 0.9 > 0.2 > comps[1]["phi_11"]
    grid = (tmp_path / "res" / "subspace.csv").read_text().splitlines()
    assert grid[0] == "layer,matrix,comparison,label,r_a,r_b,i,j,phi"
    assert len(grid) == 1 + 4 * 4 * 2
    summary = (tmp_path / "res" / "subspace_summary.csv").read_text().splitlines()
    assert summary[0] == "layer,matrix,comparison,label,r_a,r_b,phi_11,top_agree" and len(summary) == 5
    assert f"wrote {tmp_path / 'res' / 'subspace.json'}" in out


def test_results_json_of_another_format_version_is_refused(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"perfsuite_subspace_format": 99, "subspace": []}))
    with pytest.raises(PerfsuiteError, match="format 99"):
        read_results_json(tmp_path / "s.json")


# --- reading and writing -------------------------------------------------------------------------------

def test_write_then_read_round_trips_factors_and_config(tmp_path):
    factors = {"model.layers.0.self_attn.q_proj": (np.ones((3, 8)), np.full((5, 3), 2.0)),
               "model.layers.0.self_attn.v_proj": (np.eye(2, 8), np.ones((5, 2)))}
    write_lora_checkpoint(tmp_path / "ck", factors, lora_alpha=16)
    ckpt = read_lora_checkpoint(tmp_path / "ck")
    assert list(ckpt.modules) == list(factors)
    q = ckpt.modules["model.layers.0.self_attn.q_proj"]
    assert (q.rank, q.in_features, q.out_features) == (3, 8, 5)
    assert q.lora_A.dtype == np.float64
    np.testing.assert_array_equal(ckpt.modules["model.layers.0.self_attn.v_proj"].lora_A, np.eye(2, 8))
    cfg = ckpt.config
    assert (cfg["peft_type"], cfg["lora_alpha"], cfg["target_modules"]) == ("LORA", 16, ["q_proj", "v_proj"])
    assert (cfg["r"], cfg["rank_pattern"]) == (2, {"model.layers.0.self_attn.q_proj": 3})
    assert ckpt.other_keys == ()


def test_reader_takes_peft_variants_it_did_not_write(tmp_path):
    """Adapter-named keys, embeddings, convolutions, bf16 and extra tensors, written straight with safetensors."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight": torch.randn(4, 8, generator=g),
        "base_model.model.model.layers.3.self_attn.q_proj.lora_B.default.weight": torch.randn(6, 4, generator=g),
        "base_model.model.model.embed_tokens.lora_embedding_A": torch.randn(2, 50, generator=g),
        "base_model.model.model.embed_tokens.lora_embedding_B": torch.randn(8, 2, generator=g),
        "base_model.model.conv.lora_A.weight": torch.randn(2, 3, 3, 3, generator=g).to(torch.bfloat16),
        "base_model.model.conv.lora_B.weight": torch.randn(5, 2, 1, 1, generator=g).to(torch.bfloat16),
        "base_model.model.model.layers.3.self_attn.q_proj.lora_magnitude_vector": torch.ones(6),
    }
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                              "rank_pattern": {"conv": 2, "embed_tokens": 2}}))
    ckpt = read_lora_checkpoint(tmp_path)
    assert set(ckpt.modules) == {"model.layers.3.self_attn.q_proj", "model.embed_tokens", "conv"}
    assert ckpt.modules["conv"].lora_A.shape == (2, 27) and ckpt.modules["conv"].lora_B.shape == (5, 2)
    assert ckpt.modules["model.embed_tokens"].lora_A.shape == (2, 50)
    assert ckpt.other_keys == ("base_model.model.model.layers.3.self_attn.q_proj.lora_magnitude_vector",)
    names = module_names(ckpt.modules)
    assert names["model.layers.3.self_attn.q_proj"] == (3, "q_proj")
    assert names["conv"] == (-1, "conv")


def test_module_names_are_the_shortest_unique_tail_within_a_layer():
    names = module_names(["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                          "transformer.h.1.attn.c_attn", "lm_head"])
    assert names == {"transformer.h.0.attn.c_attn": (0, "c_attn"), "transformer.h.0.attn.c_proj": (0, "attn.c_proj"),
                     "transformer.h.0.mlp.c_proj": (0, "mlp.c_proj"), "transformer.h.1.attn.c_attn": (1, "c_attn"),
                     "lm_head": (-1, "lm_head")}
    assert layer_of("encoder.block.7.layer.0.SelfAttention.q") == 7


def _write_raw(path: Path, tensors: dict, config: dict | None = None) -> Path:
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(config if config is not None else {"peft_type": "LORA"}))
    return path


KEY = "base_model.model.h.0.attn.c_attn"


@pytest.mark.parametrize("tensors, config, match", [
    ({f"{KEY}.lora_A.weight": torch.ones(2, 4)}, None, "has lora_A but no lora_B"),
    ({f"{KEY}.lora_A.weight": torch.ones(2, 4), f"{KEY}.lora_B.weight": torch.ones(6, 3)}, None,
     "lora_A has rank 2 but lora_B has rank 3"),
    ({f"{KEY}.lora_A.weight": torch.ones(2, 4), f"{KEY}.lora_B.weight": torch.ones(6, 2)},
     {"peft_type": "LORA", "r": 8}, "says r=8 but the weights have h.0.attn.c_attn"),
    ({f"{KEY}.lora_A.a.weight": torch.ones(2, 4), f"{KEY}.lora_B.a.weight": torch.ones(6, 2),
      f"{KEY}.lora_A.b.weight": torch.ones(2, 4), f"{KEY}.lora_B.b.weight": torch.ones(6, 2)}, None,
     "several adapters"),
    ({"base_model.model.h.0.ln.weight": torch.ones(4)}, None, "no LoRA factors"),
    ({f"{KEY}.lora_A.weight": torch.ones(2, 4), f"{KEY}.lora_B.weight": torch.ones(6, 2)},
     {"peft_type": "IA3"}, "only LoRA adapters"),
    ({f"{KEY}.lora_A.weight": torch.ones(2), f"{KEY}.lora_B.weight": torch.ones(6, 2)}, None, "expected \\(r, d_in\\)"),
    ({f"{KEY}.lora_A.weight": torch.ones(2, 4), f"{KEY}.lora_B.weight": torch.ones(6, 2, 3)}, None,
     "expected \\(d_out, r\\)"),
])
def test_malformed_checkpoints_give_a_clear_error(tmp_path, tensors, config, match):
    with pytest.raises(PeftFormatError, match=match):
        read_lora_checkpoint(_write_raw(tmp_path / "ck", tensors, config))


def test_missing_or_unreadable_files_give_a_clear_error(tmp_path):
    with pytest.raises(PeftFormatError, match="not a directory"):
        read_lora_checkpoint(tmp_path / "nope")
    with pytest.raises(PeftFormatError, match="no adapter_config.json"):
        read_lora_checkpoint(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(PeftFormatError, match="not valid JSON"):
        read_lora_checkpoint(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(PeftFormatError, match="pickle and is not read"):
        read_lora_checkpoint(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(PeftFormatError, match="cannot read safetensors"):
        read_lora_checkpoint(tmp_path)


# --- comparing checkpoints -----------------------------------------------------------------------------

def test_compare_checkpoints_matches_phi_of_the_raw_factors():
    a, b = (read_lora_checkpoint(FIXTURES / n) for n in ("r4-seed0", "r2-seed2"))
    comps = compare_checkpoints(a, b, control_seed=None)
    assert [c.comparison for c in comps] == ["rank", "rank"]
    raw_a, raw_b = fixture_factors(4, 0), fixture_factors(2, 2)
    for c, path in zip(comps, raw_a):
        np.testing.assert_allclose(c.phi, phi_grid(raw_a[path][0], raw_b[path][0]), atol=1e-12)
    by_b = compare_checkpoints(a, b, factor="B", layers=[1], control_seed=None, comparison="seed")
    assert [(c.layer, c.comparison, c.phi.shape) for c in by_b] == [(1, "seed", (4, 2))]
    path = "transformer.h.1.attn.c_attn"
    np.testing.assert_allclose(by_b[0].phi, phi_grid(raw_a[path][1].T, raw_b[path][1].T), atol=1e-12)


def test_mismatched_layers_are_an_error_unless_deselected(tmp_path, capsys):
    two = write_fixture(tmp_path / "two", 4, 0)
    one = write_lora_checkpoint(tmp_path / "one", dict(list(fixture_factors(2, 1).items())[:1]))
    rc, out, err = run_cli(capsys, two, one)
    assert rc == 2 and out == ""
    assert err == (f"perfsuite subspace: error: the checkpoints adapt different modules: only in {two}: "
                   "layer 1 c_attn (select common ones with --layers / --matrices)\n")
    rc, out, _ = run_cli(capsys, two, one, "--layers", "0")
    assert rc == 0 and out.splitlines()[1].split()[:4] == ["0", "c_attn", "4", "2"]


def test_mismatched_shapes_are_an_error(tmp_path, capsys):
    a = write_lora_checkpoint(tmp_path / "a", {"h.0.attn.c_attn": (np.ones((2, 16)), np.ones((48, 2)))})
    b = write_lora_checkpoint(tmp_path / "b", {"h.0.attn.c_attn": (np.ones((2, 32)), np.ones((96, 2)))})
    rc, _, err = run_cli(capsys, a, b)
    assert rc == 2
    assert err == (f"perfsuite subspace: error: layer 0 c_attn: the input dimensions differ: 16 in {a} but 32 in "
                   f"{b} (not adapters of the same model?)\n")


@pytest.mark.parametrize("args, match", [
    (["--layers", "3"], "no layer 3 in either checkpoint; they have: 0, 1"),
    (["--layers", "1-x"], "--layers: cannot read '1-x'"),
    (["--matrices", "q_proj"], "no matrix q_proj in either checkpoint; they have: c_attn"),
])
def test_bad_selections_are_one_line_errors(capsys, args, match):
    rc, out, err = run_cli(capsys, FIXTURES / "r4-seed0", FIXTURES / "r4-seed1", *args)
    assert rc == 2 and out == ""
    assert err.startswith("perfsuite subspace: error: ") and match in err and err.count("\n") == 1


def test_parse_layers():
    assert parse_layers("0, 5,10-12,5") == [0, 5, 10, 11, 12]
    with pytest.raises(PerfsuiteError, match="empty range"):
        parse_layers("4-2")


if __name__ == "__main__":  # rewrite the committed fixtures
    for fixture, (fixture_rank, fixture_seed) in FIXTURE_RANKS.items():
        print(write_fixture(FIXTURES / fixture, fixture_rank, fixture_seed))
