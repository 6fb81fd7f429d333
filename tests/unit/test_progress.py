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
    p = Progress(CELLS, cost=lambda c: 1.0 if c.batch == 1 else 3.0, tw=tw, live=False, clock=lambda: now[0])
    tw.write("..")  # pytest's dots: the next line starts on a line of its own
    p.starting(CELLS[0])
    now[0] += 10
    p.finished(CELLS[0])
    p.starting(CELLS[1])
    lines = tw.text.splitlines()
    assert lines == ["..", "[perfsuite 1/3] latency[lora-r8-b1-s32]  elapsed 0s, ~? left",
                     "[perfsuite 2/3] latency[lora-r8-b4-s32]  elapsed 10s, ~40s left"]  # 4 more units at 10 s each
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
