"""The trust boundary, inputs (issue 27, probe 7): a checkpoint's config.json and the labels a report draws are data
anyone may have written. A config's dimensions are capped before any shape is built from them; a recorded name (a
φ matrix, a model, a contributed adapter) is plain text in a figure, never mathtext. Fuzzed configs and labels end
in a drawing or one line and exit 2, never a traceback."""

import io
import json
from pathlib import Path

import matplotlib
import pytest
import synthetic as syn
from hostile import mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsuite.models.checkpoint import CheckpointError, check_weights, config_to_hf, read_checkpoint
from perfsuite.models.model import PRESETS

matplotlib.use("Agg")

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def checkpoint_folder(path: Path, config: dict | str) -> Path:
    """A checkpoint folder with this config.json and a (tiny, valid) safetensors file: enough for the config to be
    read, hashed and checked against the file's tensors."""
    from safetensors.torch import save_file
    import torch

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    save_file({"transformer.wte.weight": torch.zeros(2, 2)}, str(path / "model.safetensors"))
    return path


def never_build_shapes(monkeypatch):
    def refuse(cfg):
        raise AssertionError(f"shapes built for {cfg.n_layer} layers: the caps were not checked first")

    monkeypatch.setattr("perfsuite.models.checkpoint._expected_shapes", refuse)


def test_a_billion_layers_is_refused_before_any_shape_is_built(tmp_path, monkeypatch):
    """The issue's reproduction: a config.json with n_layer 10**9 spent 17 s and 3 GB before a MemoryError in
    `checkpoint show` and `run --weights`."""
    never_build_shapes(monkeypatch)
    folder = checkpoint_folder(tmp_path / "huge", config_to_hf(PRESETS["tiny"]) | {"n_layer": 10 ** 9})
    for args in (["checkpoint", "show", str(folder)], ["run", "--weights", str(folder), "--out", str(tmp_path / "o")]):
        proc = syn.cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "n_layer=1000000000 (at most 1024)" in lines[0], \
            proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field, value", [("n_embd", 1 << 20), ("vocab_size", 10 ** 12), ("n_positions", 1 << 30),
                                          ("n_inner", 10 ** 9), ("n_head", 4096)])
def test_every_dimension_is_capped(tmp_path, monkeypatch, field, value):
    never_build_shapes(monkeypatch)
    folder = checkpoint_folder(tmp_path / field, config_to_hf(PRESETS["tiny"]) | {field: value})
    with pytest.raises(CheckpointError, match=f"{field}={value} \\(at most"):
        read_checkpoint(folder)


@FUZZ
@given(st.data())
def test_fuzzed_configs_are_read_or_refused_in_one_line(tmp_path_factory, data):
    folder = checkpoint_folder(tmp_path_factory.mktemp("ckpt"), data.draw(mutated(config_to_hf(PRESETS["tiny"]))))
    try:
        check_weights(read_checkpoint(folder))  # the tiny file never matches: a mismatch is one line too
    except CheckpointError as e:
        assert "\n" not in str(e)


# --- labels -----------------------------------------------------------------------------------------------------

def draws(*texts: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    ax.set_title(texts[0])
    ax.set_ylabel(texts[1 % len(texts)])
    fig.suptitle(texts[-1])
    fig.savefig(io.BytesIO(), format="png")


LABEL_TEXT = st.text(alphabet="$\\{}^_ab -.'\"", min_size=1, max_size=16)


@settings(max_examples=60, deadline=None)
@given(LABEL_TEXT)
def test_fuzzed_names_draw_as_plain_text(name):
    from perfsuite.report.data import adapter_label, setup_label
    from perfsuite.report.phi_data import matrix_label

    draws(matrix_label(name), adapter_label(name),
          setup_label({"model": name, "dtype": "float32", "device": "cpu", "impl": name, "mode": name}))


def test_a_matrix_name_that_is_not_mathtext_does_not_cost_the_report(tmp_path):
    """The issue's reproduction: a φ matrix named `q}\\frac{` crashed `perfsuite report` (a traceback, exit 1, no
    index.html)."""
    doc = json.loads((FIXTURES / "subspace_small.json").read_text())
    for bench in doc["benchmarks"]:
        for entry in bench["extra_info"].get("subspace") or []:
            entry["matrix"] = "q}\\frac{"
    (tmp_path / "r.json").write_text(json.dumps(doc))
    proc = syn.cli("report", str(tmp_path / "r.json"), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "report" / "index.html").is_file() and any((tmp_path / "report").glob("subspace-*.png"))


def test_a_model_name_with_dollars_does_not_cost_the_report(tmp_path):
    doc = json.loads((FIXTURES / "latency_partial.json").read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["cell"]["model"] = "tiny$x^$"
    (tmp_path / "r.json").write_text(json.dumps(doc))
    proc = syn.cli("report", str(tmp_path / "r.json"), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((tmp_path / "report").glob("latency*.png"))


# --- the commands on fuzzed files: a result, or one line, exit 2 and nothing written ------------------------------

RESULTS_DOC = json.loads((FIXTURES / "latency_partial.json").read_text())


@pytest.fixture(scope="module")
def a_baseline(tmp_path_factory) -> Path:
    from perfsuite.compare.baselines import add_runs
    from perfsuite.formats.results import load_results

    directory = tmp_path_factory.mktemp("baselines")
    (report,) = add_runs([load_results([FIXTURES / "latency_partial.json"])] * 2, directory=directory, name="b")
    return report.path


def one_line_or_result(proc, command: str, written: list[Path]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode == 0 or (proc.returncode == 1 and command == "compare"):  # a verdict (a cell dropped: missing)
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and 1 <= len(lines) <= (2 if command == "report" else 1), proc.stderr[-3000:]
    assert all(line.startswith(f"perfsuite {command}: error: ") for line in lines), proc.stderr[-3000:]
    assert not [p for p in written if p.exists()], "a refused input wrote something"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_results_through_compare_and_report(tmp_path_factory, a_baseline, data):
    tmp = tmp_path_factory.mktemp("cmd")
    path = tmp / "r.json"
    path.write_text(data.draw(mutated(RESULTS_DOC)))
    compared = syn.cli("compare", str(path), "--baseline", str(a_baseline), "--json", str(tmp / "c.json"),
                       "--markdown", str(tmp / "c.md"))
    one_line_or_result(compared, "compare", [tmp / "c.json", tmp / "c.md"])
    reported = syn.cli("report", str(path), "--out", str(tmp / "report"), "--vector", "none")
    one_line_or_result(reported, "report", [tmp / "report" / "index.html"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_configs_through_checkpoint_show(tmp_path_factory, data):
    folder = checkpoint_folder(tmp_path_factory.mktemp("ckpt"), data.draw(mutated(config_to_hf(PRESETS["tiny"]))))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    one_line_or_result(syn.cli("checkpoint", "show", str(folder)), "checkpoint", [])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
