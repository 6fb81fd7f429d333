"""An installed wheel, not the checkout: ``perfsuite run`` in an empty folder measures, compares and reports.

The wheel is built from the package's own files (setuptools of the test environment, no network) and installed
with ``pip install --target`` (its dependencies come from the test environment, the checkout is off the path).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CELLS = "workload == 'latency' and adapter in ('none', 'lora') and batch == 1"


def build_and_install(tmp_path: Path) -> Path:
    """The folder the wheel was installed into (``--target``)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "perfsuite", src / "perfsuite", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, cwd=src)
    wheel = next((tmp_path / "dist").glob("perfsuite-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    return site


def test_an_installed_wheel_runs_a_job_in_an_empty_folder(tmp_path):
    site = build_and_install(tmp_path)
    assert (site / "perfsuite" / "py.typed").exists() and (site / "perfsuite" / "benchmarks" / "test_latency.py").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path),
           "PERFSUITE_DISABLE_ADAPTER_ENTRY_POINTS": "1"}  # the built-in grid, whatever else is installed
    where = subprocess.run([sys.executable, "-c", "import perfsuite; print(perfsuite.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's perfsuite, not the checkout's
    proc = subprocess.run([sys.executable, "-m", "perfsuite.cli", "run", "--cells", CELLS, "--rounds", "5",
                           "--warmup", "1"], cwd=empty, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = empty / "perfsuite-out" / "smoke"
    doc = json.loads((out / "results.json").read_text())
    assert sorted(b["extra_info"]["cell_id"] for b in doc["benchmarks"]) == [
        "latency[lora-r8-b1-s32]", "latency[none-r0-b1-s32]"]
    # node ids from the folder that holds the package: a re-measurement runs them again from there
    assert all(b["fullname"].startswith("perfsuite/benchmarks/test_latency.py::") for b in doc["benchmarks"])
    assert (out / "report" / "index.html").exists()
    assert "no baseline for this machine in baselines" in proc.stdout
