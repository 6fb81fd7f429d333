"""Faults: races run with real processes. A second writer is refused at once (naming the holder) or waits its turn
with --wait; two `history add` at once both land; nothing is lost."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import synthetic as syn

from perfsuite.formats.baseline import load_baseline
from perfsuite.history.store import open_store
from perfsuite.locks import LockHeld, lock_path, writer_lock

ROOT = Path(__file__).parents[2]
TRIALS = 20  # concurrent history adds: the issue saw a failure in 3 of 8 trials before the fix


def perfsuite(*args, **kw):
    return subprocess.run([sys.executable, "-m", "perfsuite.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          **kw)


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "perfsuite.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


HOLDER = textwrap.dedent("""
    import sys, time
    from perfsuite.locks import writer_lock
    with writer_lock(sys.argv[1], "it", folder=sys.argv[2] == "folder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
""")


def hold(target: Path, *, folder: bool, seconds: float = 60.0) -> subprocess.Popen:
    """Another process holding ``target``'s lock until killed (or ``seconds`` pass)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), "folder" if folder else "file", str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL: it skips every cleanup, so the kernel alone releases the lock."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_a_held_lock_refuses_at_once_naming_the_holder_and_dies_with_it(tmp_path):
    holder = hold(tmp_path / "out", folder=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=rf"output folder x is in use by PID {holder.pid} \(.*\).*pass --wait"):
            with writer_lock(tmp_path / "out", "output folder x", folder=True):
                pass
        assert time.monotonic() - t0 < 5  # refused at once, not after a timeout
        with pytest.raises(LockHeld, match=f"PID {holder.pid}"):
            with writer_lock(tmp_path / "out", "output folder x", folder=True, wait=0.2):
                pass
    finally:
        kill(holder)
    with writer_lock(tmp_path / "out", "output folder x", folder=True) as lock:
        assert lock == lock_path(tmp_path / "out", folder=True)
        info = json.loads(lock.with_name(lock.name + ".info").read_text())
        assert info["pid"] == os.getpid()
    assert not lock.with_name(lock.name + ".info").exists()  # the holder's note goes with the lock


def test_a_second_run_on_a_live_out_is_refused_and_the_first_keeps_its_results(tmp_path):
    out = tmp_path / "run"
    cells = "workload == 'recompute' and batch == 1"  # seconds of importing and measuring after it takes its lock
    first = popen("run", "--rounds", "10", "--warmup", "1", "--cells", cells, "--out", str(out), "--no-compare",
                  "--no-report")
    wait_for(lambda: (out / ".perfsuite.lock.info").exists(), "the first run's lock")
    # the second and third run in this process: the lock they meet is another process's, which is what counts
    others = [syn.cli("run", "--fresh", "--rounds", "3", "--cells", "workload == 'latency'", "--out", str(out)),
              syn.cli("run", "--resume", "--out", str(out))]
    assert first.poll() is None, "the first run ended before the others tried: nothing was tested"
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stdout[-2000:] + stderr[-2000:]
    for other in others:
        assert other.returncode == 2, other.stderr[-1000:]
        assert other.stderr.startswith(f"perfsuite run: error: output folder {out} is in use by PID {first.pid} (")
        assert "Traceback" not in other.stderr
    doc = json.loads((out / "results.json").read_text())
    assert {b["extra_info"]["cell"]["workload"] for b in doc["benchmarks"]} == {"recompute"}
    assert len(doc["benchmarks"]) == 2 and doc["perfsuite"]["rounds"] == 10  # the first run's, whole
    headers = [x for x in (out / "journal.jsonl").read_text().splitlines() if '"kind": "header"' in x]
    assert len(headers) == 1  # nobody else wrote a header into its journal


def test_two_baseline_updates_at_once_keep_both_runs(tmp_path):
    files = [syn.write(tmp_path / f"r{k}.json", [syn.record(syn.cell("lora"), seed=k)]) for k in range(2)]
    base = tmp_path / "baselines"
    procs = [popen("baseline", "update", str(f), "--dir", str(base), "--name", "b", "--wait") for f in files]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(load_baseline(base / "b.json").runs) == 2

    holder = hold(base / "b.json", folder=False)
    try:
        refused = perfsuite("baseline", "update", str(files[0]), "--dir", str(base), "--name", "b")
    finally:
        kill(holder)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"perfsuite baseline: error: baseline {base / 'b.json'} is in use by PID "
                                     f"{holder.pid}")
    assert len(load_baseline(base / "b.json").runs) == 2  # untouched


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from perfsuite.formats.results import load_results
    from perfsuite.history.store import add_files, open_store, run_key

    go, stores, mine, shared, via_lock = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
    while not Path(go).exists():
        time.sleep(0.001)
    for k in range(int(sys.argv[6])):
        store = f"{stores}/store-{k}.sqlite"
        for f in (mine, shared):
            if via_lock:  # `history add`'s own path: perfsuite's lock, then SQLite's
                add_files(store, [f])
            else:  # a writer that bypasses perfsuite's lock: SQLite's BEGIN IMMEDIATE alone must keep it right
                with open_store(store, create=True) as s:
                    s.add(load_results([f]), [f], run_key([f]))
    print("done", flush=True)
""")


def test_two_history_adds_at_once_both_land_every_time(tmp_path):
    """Two processes race on TRIALS fresh stores: schema creation, each its own run, and the same run twice."""
    files = [syn.write(tmp_path / f"{name}.json", [syn.record(syn.cell("lora"), seed=k)])
             for k, name in enumerate(("a", "b", "shared"))]
    go, stores = tmp_path / "go", tmp_path / "stores"
    stores.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(stores), str(files[k]), str(files[2]),
                               str(k), str(TRIALS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (0, 1)]
    time.sleep(1.0)  # both imported and waiting
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    for k in range(TRIALS):
        with open_store(stores / f"store-{k}.sqlite") as store:
            assert len(store.runs()) == 3, f"trial {k}: a run is missing or doubled"


def test_two_history_add_commands_at_once_both_land(tmp_path):
    files = [syn.write(tmp_path / f"n{k}.json", [syn.record(syn.cell("lora"), seed=k)]) for k in range(2)]
    store = tmp_path / "h.sqlite"
    procs = [popen("history", "add", str(f), "--store", str(store)) for f in files]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    again = perfsuite("history", "add", str(files[0]), "--store", str(store))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    with open_store(store) as s:
        assert len(s.runs()) == 2


def test_plain_pytest_on_a_journal_in_use_is_a_usage_error(tmp_path, pytester):
    """Plain pytest (pytester's in-process session) on a journal another process holds."""
    pytester.makepyfile(test_latency=(ROOT / "perfsuite" / "benchmarks" / "test_latency.py").read_text())
    journal = tmp_path / "journal.jsonl"
    holder = hold(journal, folder=False)
    try:
        result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", f"--perfsuite-journal={journal}",
                                              "--perfsuite-cells=adapter == 'lora'")
    finally:
        kill(holder)
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:] + err[-2000:]
    assert f"journal {journal} is in use by PID {holder.pid}" in err and "Traceback" not in err
    assert not journal.exists()
