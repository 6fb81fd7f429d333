"""Progress of long runs: a live tqdm bar on a terminal, a plain line per cell otherwise (CI logs)."""

from perfsuite.plugin.progress import Progress, fmt_seconds
import synthetic as syn


class FakeWriter:
    """pytest's terminal writer, as the progress sees it."""

    def __init__(self):
        self.text, self.width_of_current_line = "", 0

    def write(self, text, flush=False):
        self.text += text
        self.width_of_current_line = len(self.text.rsplit("\n", 1)[-1])

    def line(self, text=""):
        self.write(text + "\n")

    def flush(self):
        pass


CELLS = [syn.cell("lora"), syn.cell("lora", batch=4), syn.cell("houlsby")]


def test_plain_lines_say_cell_elapsed_and_time_left():
    now, tw = [100.0], FakeWriter()
    cells = [*CELLS, syn.cell("pfeiffer")]
    p = Progress(cells, cost=lambda c: 1.0 if c.batch == 1 else 3.0, tw=tw, live=False, clock=lambda: now[0])
    tw.write("..")  # pytest's dots: the next line starts on a line of its own
    for c in cells[:3]:
        p.starting(c)
        now[0] += 10 if c.batch == 1 else 30
        p.finished(c)
    p.starting(cells[3])
    lines = tw.text.splitlines()
    assert lines == ["..", "[perfsuite 1/4] latency[lora-r8-b1-s32]  elapsed 0s, time left: estimating",
                     "[perfsuite 2/4] latency[lora-r8-b4-s32]  elapsed 10s, time left: estimating",  # 1 of 6 units
                     "[perfsuite 3/4] latency[houlsby-r8-b1-s32]  elapsed 40s, ~20s left",  # 2 more units at 10 s
                     "[perfsuite 4/4] latency[pfeiffer-r8-b1-s32]  elapsed 50s, ~10s left"]
    p.close()


def test_no_time_left_is_promised_from_the_start_up_of_the_first_cells():
    """The run the issue saw: 16 s of work, the first cell's 2 s mostly start-up; it read "~2m13s left" at 2 s. Until
    a quarter of the grid's cost has run, the time left is not guessed; after that it is within the run's length."""
    now, tw = [0.0], FakeWriter()
    cells = [syn.cell("lora", batch=b, seq_len=s) for b in (1, 2, 4, 8) for s in (16, 32, 64, 128)]  # 16 equal cells
    p = Progress(cells, cost=lambda c: 1.0, tw=tw, live=False, clock=lambda: now[0])
    seen = []
    for k, c in enumerate(cells):
        p.starting(c)
        seen.append(p.left())
        now[0] += 2.0 if k == 0 else 14.0 / 15  # start-up in the first cell, then the rest of the 16 s
        p.finished(c)
    assert seen[:4] == ["time left: estimating"] * 4  # 0 to 3 cells of 16 done: under a quarter
    lefts = [float(x.strip("~ left").rstrip("s")) for x in seen[4:]]
    assert all(0 < v <= 16 for v in lefts), seen  # never more than the whole run


def test_a_live_bar_shows_the_same_time_left():
    now, tw = [0.0], FakeWriter()
    p = Progress(CELLS, cost=lambda c: 1.0, tw=tw, live=True, clock=lambda: now[0])
    p.starting(CELLS[0])
    now[0] += 5
    p.finished(CELLS[0])
    assert "time left: estimating" in tw.text or "time left: estimating" in str(p.bar)
    p.starting(CELLS[1])
    now[0] += 5
    p.finished(CELLS[1])
    p.bar.refresh()
    assert "~5s left" in tw.text.rsplit("\r", 1)[-1]
    p.close()


def test_a_live_bar_redraws_one_line_and_ends_with_done():
    tw = FakeWriter()
    p = Progress(CELLS, cost=lambda c: 1.0, tw=tw, live=True)
    for c in CELLS:
        p.starting(c)
        p.finished(c)
    p.close()
    assert "\r" in tw.text and "[perfsuite 3/3] latency[houlsby-r8-b1-s32]" in tw.text
    assert "[perfsuite 3/3] done" in tw.text and "100%" in tw.text
    assert tw.text.count("\n") <= 2  # redrawn in place, not a line per update


def test_seconds_read_as_minutes_and_seconds():
    assert [fmt_seconds(s) for s in (0.4, 59, 61, 3600)] == ["0s", "59s", "1m01s", "60m00s"]


def test_the_summary_counts_a_designed_blank_apart_from_cells_that_could_not_run():
    """Every default run has one recompute cell over its token budget (LLM-42 Fig. 13 leaves it blank): it read
    "not run: 1" in every summary, as if something had failed."""
    from perfsuite.job import not_run_text

    blank = {"status": "outside_budget", "cell_id": "recompute[none-r0-b8-s16-w16-g16]"}
    oom = {"status": "oom", "cell_id": "latency[lora-r8-b8-s32]"}
    assert not_run_text([blank]) == "not run: 0 (and 1 blank by design: over the token budget)"
    assert not_run_text([blank, oom]) == "not run: 1 (and 1 blank by design: over the token budget)"
    assert not_run_text([oom]) == "not run: 1"
    assert not_run_text([]) == "not run: 0"
