"""The detector's self-measurement: its cheap mode runs end to end; its report counts and formats correctly."""

import json

import pytest
import torch

from perfsuite.cli import main
from perfsuite.selftest import Level, SelftestOptions, SelftestReport


def test_quick_selftest_runs_end_to_end(capsys, tmp_path):
    threads = torch.get_num_threads()
    assert main(["selftest", "--quick", "--device", "cpu", "--json", str(tmp_path / "s.json")]) == 0
    captured = capsys.readouterr()
    assert torch.get_num_threads() == threads  # the selftest's thread setting does not leak
    out = captured.out.splitlines()
    assert out[0].startswith("perfsuite selftest on cpu (1 thread): tiny lora r8 b1 s32, forward ")
    assert "metric slowdown:" in out and "metric time:" in out
    assert sum(line.startswith("  false-alarm rate (A/A regressions): ") for line in out) == 2
    assert "calibrated +20%: " in captured.err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [lv["nominal_pct"] for lv in doc["levels"]] == [0.0, 20.0]
    assert all(lv["trials"] == {"slowdown": 3, "time": 3} for lv in doc["levels"])
    assert doc["levels"][1]["extra_ops"] >= 1 and doc["levels"][1]["measured_pct"] > 0


def test_report_counts_rates_with_intervals():
    options = SelftestOptions(trials=300, effects_pct=(5.0,), metrics=("slowdown",))
    aa = Level(0.0, 0, verdicts={"slowdown": ["unchanged"] * 297 + ["regression"] * 2 + ["improvement"]},
               estimates={"slowdown": [0.0] * 300})
    five = Level(5.0, 8, measured_pct=5.1, verdicts={"slowdown": ["regression"] * 291 + ["inconclusive"] * 9},
                 estimates={"slowdown": [5.0] * 300})
    report = SelftestReport(options=options, device="cpu", forward_ms=0.3, extra_op_us=1.9, levels=[aa, five],
                            seconds=90.0, blocks=1000, threads=1)
    rate, low, high = report.rate(aa, "slowdown")
    assert rate == pytest.approx(2 / 300) and low < rate < high < 0.03
    table = report.table().splitlines()
    assert table[0] == ("perfsuite selftest on cpu (1 thread): tiny lora r8 b1 s32, forward 0.300 ms; 300 trials x 2 "
                        "levels, 30 rounds per block, 1000 blocks in 90 s")
    assert table[5].split()[:5] == ["A/A", "-", "2/300", "=", "0.7%"]
    assert table[6].split()[:5] == ["+5%", "+5.1%", "291/300", "=", "97.0%"]
    assert table[6].split()[-3:] == ["0", "9", "+5.0%"]
    assert table[7] == ("  false-alarm rate (A/A regressions): 0.7% (95% CI 0.2-2.4%); any A/A change (regression or "
                        "improvement): 3/300")


@pytest.mark.parametrize("argv,message", [
    (["--effects", "two"], "--effects 'two': give comma-separated percentages"),
    (["--metrics", "speed"], "--metrics: unknown ['speed']"),
    (["--model", "gpt5"], "unknown model preset 'gpt5'"),
    (["--adapter", "nope"], "unknown adapter 'nope'"),
    (["--trials", "0"], "need trials >= 1"),
])
def test_bad_options_are_one_line_errors(capsys, argv, message):
    assert main(["selftest", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfsuite selftest: error: ") and message in err and err.count("\n") == 1
