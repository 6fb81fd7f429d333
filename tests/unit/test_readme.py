"""The README's two commands are the ones CI runs and the ones a new user types."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_the_two_commands():
    commands = readme_commands()
    assert "pip install -e . && perfsuite run" in commands
    assert "pip install -e '.[test]' && pytest" in commands


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = next(c for c in readme_commands() if c.endswith("pytest"))
    assert ci[-1] == test_command
    torch_line = next(i for i, line in enumerate(ci) if line.startswith("python -m pip install") and "torch==" in line)
    assert torch_line < len(ci) - 1, "CPU torch first"
    assert "torch==2.13.0" in ci[torch_line] and "download.pytorch.org/whl/cpu" in ci[torch_line], (
        "the CPU build, from PyTorch's CPU index where it is reachable (PyPI's torch is the CUDA build)")
