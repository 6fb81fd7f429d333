"""Another package's adapter in the grid: examples/custom-adapter installed with pip, found through the entry-point
group ``perfsuite.adapters``, listed, measured beside LoRA and drawn in LoRA's figure; and ``--adapters`` for code
that is not packaged. Subprocesses: the registry of contributed adapters lives for a process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perfsuite.cells.grid import get_profile
from perfsuite.extensions import AdapterPlugin, ExtensionError, plugins_of, register

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom-adapter"
CELLS = "workload == 'latency' and adapter in ('none', 'lora', 'fused-lora') and batch == 1"


def perfsuite(*args, env_path: Path | str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(env_path), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "perfsuite.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def test_an_installed_adapter_package_joins_the_grid_and_is_drawn_beside_lora(tmp_path):
    site, src = tmp_path / "site", tmp_path / "custom-adapter"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__"))  # setuptools builds in its tree
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True, capture_output=True,
                   cwd=tmp_path)
    path = f"{site}:{ROOT}"  # the example from its install, perfsuite from this checkout
    listed = perfsuite("cells", "--cells", "adapter == 'fused-lora'", env_path=path, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[:2] == ["latency[fused-lora-r8-b1-s32]", "latency[fused-lora-r8-b4-s32]"]

    out = tmp_path / "out"
    run = perfsuite("run", "--cells", CELLS, "--rounds", "5", "--warmup", "1", "--out", str(out), "--no-compare",
                    env_path=path, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    records = {b["extra_info"]["cell_id"]: b["extra_info"] for b in doc["benchmarks"]}
    assert set(records) == {"latency[none-r0-b1-s32]", "latency[lora-r8-b1-s32]", "latency[fused-lora-r8-b1-s32]"}
    fused, lora = records["latency[fused-lora-r8-b1-s32]"], records["latency[lora-r8-b1-s32]"]
    assert fused["ref_time_ms"] and lora["ref_time_ms"]  # timed against the plain model, like LoRA
    assert fused["flops"] < lora["flops"]  # shared A: fewer multiply-adds than LoRA's two A's

    from perfsuite.formats.results import load_results
    from perfsuite.report.data import latency_data

    from perfsuite.report.figures import drawn_adapters

    figures = latency_data(load_results([out / "results.json"]).frame)
    # one figure: the plain model's row (in the tables), LoRA's rows, then the newcomer
    assert [f.adapters for f in figures] == [("none", "lora", "fused-lora")]
    assert drawn_adapters(figures[0]) == ("lora", "fused-lora")
    assert "fused-lora" in (out / "report" / "summary.md").read_text()


def test_adapters_option_adds_unpackaged_code_and_bad_specs_are_one_line(tmp_path):
    (tmp_path / "my_adapters.py").write_text(
        "from perfsuite_fused_lora import ADAPTER, attach\n"
        "from perfsuite.extensions import AdapterPlugin\n"
        "MINE = [AdapterPlugin('my-lora', 'a copy of fused-lora', attach=attach)]\n")
    path = f"{EXAMPLE}:{ROOT}"  # importable; my-lora has no entry point (whether fused-lora is installed or not)
    plain = perfsuite("cells", "--cells", "adapter == 'my-lora'", env_path=path, cwd=tmp_path)
    # without --adapters, my-lora is no cell of the grid: refused, naming the adapters there are
    assert plain.returncode == 2 and "matches none of the cells" in plain.stderr, plain.stderr
    assert "its cells have adapter:" in plain.stderr and "my-lora" not in plain.stderr.split("have adapter:")[1]
    listed = perfsuite("cells", "--adapters", "my_adapters:MINE", "--cells", "adapter == 'my-lora'",
                       env_path=path, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "latency[my-lora-r8-b1-s32]" in listed.stdout.splitlines()
    bad = perfsuite("cells", "--adapters", "my_adapters:NOPE", env_path=path, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "perfsuite cells: error: adapters 'my_adapters:NOPE': my_adapters has no NOPE"


def test_a_contributed_adapter_cannot_take_a_built_in_name(monkeypatch):
    from perfsuite import extensions
    from perfsuite.cells.grid import adapter_names

    monkeypatch.setattr(extensions, "_entry_points_read", True)
    monkeypatch.setitem(extensions._contributed, "lora", (AdapterPlugin("lora", "x", attach=print), "a test"))
    with pytest.raises(ExtensionError, match="adapter 'lora' from a test: a built-in adapter has that name"):
        adapter_names("ref")


@pytest.mark.parametrize("plugin, message", [
    (AdapterPlugin("My_Lora", "x", attach=print), "lower-case letters, digits and '-'"),
    (AdapterPlugin("nothing", "x"), "give attach (ref), peft_config (hf) or both"),
])
def test_a_contributed_adapter_is_checked_before_it_joins(plugin, message):
    with pytest.raises(ExtensionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        register(plugin, "a test")


def test_only_adapter_plugins_are_taken():
    with pytest.raises(ExtensionError, match="expected an AdapterPlugin or a list of them, got str"):
        plugins_of("lora", "a test")


def test_a_peft_config_adapter_joins_the_hf_grid_and_attaches(monkeypatch):
    """The hf side of a plugin: its peft config goes through peft.get_peft_model like a built-in method's."""
    pytest.importorskip("transformers", reason="the hf extra is not installed: pip install -e '.[hf]'")
    peft = pytest.importorskip("peft", reason="the hf extra is not installed: pip install -e '.[hf]'")
    import torch

    from perfsuite import extensions
    from perfsuite.hf.adapters import attach_hf, get_hf_adapter
    from perfsuite.hf.models import hf_model_from_reference
    from perfsuite.models.model import build_model

    rslora = AdapterPlugin("rslora", "peft LoRA with rank-stabilised scaling (α/√r)", peft_config=lambda rank, d, seed:
                           peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=["c_attn"], fan_in_fan_out=True,
                                           lora_dropout=0.0, use_rslora=True, task_type="CAUSAL_LM"))
    monkeypatch.setattr(extensions, "_entry_points_read", True)
    monkeypatch.setitem(extensions._contributed, "rslora", (rslora, "a test"))  # removed again after the test
    hf_cells = {c.id for c in get_profile("hf-smoke").cells(device="cpu") if c.impl == "hf"}
    assert {"latency[rslora-r8-b1-s32-hf]", "latency[rslora-r8-b4-s32-hf]"} <= hf_cells
    assert not any("rslora" in c.id for c in get_profile("smoke").cells(device="cpu"))  # no attach: no ref cells
    assert get_hf_adapter("rslora").doc.startswith("peft LoRA with rank-stabilised")
    base = hf_model_from_reference(build_model("tiny"))
    tokens = torch.randint(0, 512, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted, plain = attach_hf(base, "rslora", 8, seed=1)(input_ids=tokens).logits, base(input_ids=tokens).logits
    assert isinstance(attach_hf(base, "rslora", 8, seed=1), peft.PeftModel)
    assert not torch.allclose(adapted, plain, atol=1e-4)  # B drawn non-zero, as for the built-in methods


def test_a_re_measurement_repeats_the_runs_adapters():
    import synthetic as syn

    from perfsuite.formats.results import results_from_document
    from perfsuite.processes import repeat_settings

    records = [syn.record(syn.cell("lora"), seed=1)]
    results = results_from_document(syn.document(records, adapters="my_adapters:MINE"), "run.json")
    assert repeat_settings(results)["adapters"] == "my_adapters:MINE"


@pytest.mark.parametrize("value, joins", [("1", False), ("0", True), ("", True)])
def test_the_disable_variable_keeps_installed_adapters_out(monkeypatch, value, joins):
    """PERFSUITE_DISABLE_ADAPTER_ENTRY_POINTS: the built-in grid whatever is installed (this suite sets it)."""
    from perfsuite import extensions

    class EntryPoint:
        name, value = "mine", "mine:PLUGIN"

        def load(self):
            return AdapterPlugin("mine-lora", "an installed adapter", attach=print)

    monkeypatch.setattr(extensions, "_entry_points_read", False)
    monkeypatch.setattr(extensions, "_contributed", {})
    monkeypatch.setattr(extensions, "_entry_points", lambda: [EntryPoint()])
    monkeypatch.setenv(extensions.DISABLE_ENV, value)
    assert ("mine-lora" in [p.name for p in extensions.contributed()]) is joins
