"""What a pytest session of perfsuite cells holds: its settings, the cells it runs, its journal and its progress.

Kept in ``config.stash[STATE]`` (pytest's supported place for a plugin's state).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace

import pytest

from perfsuite.cells.grid import Cell, Profile, names_field, no_match_message, select
from perfsuite.cells.shard import run_cells
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.journal import Journal
from perfsuite.formats.record import CellRecord, not_run

# What makes a journal's cell ids mean the same measurement.
RESUME_MUST_MATCH = ("profile", "device", "dtype", "weights")


@dataclass
class SessionState:
    profile: Profile
    device: str  # the device cells are built for
    device_missing: str | None  # why that device cannot run here, or None
    dtype: str | None  # --perfsuite-dtype, or None: the profile's
    rounds: int | None  # --perfsuite-rounds, or None: the profile's (per part of a composite profile)
    warmup: int | None
    selection: str | None
    threads: int = 1  # torch CPU threads for cells on the CPU (0: torch's default)
    shard: tuple[int, int] | None = None
    journal: Journal | None = None
    done: set[str] = field(default_factory=set)  # cells a resumed journal already holds
    not_run: list[CellRecord] = field(default_factory=list)
    context: object = None  # perfsuite.workloads.context.CellContext, built on first use (it imports torch)
    cell_nodeids: dict[str, Cell] = field(default_factory=dict)  # node id -> cell of the collected cell items
    benchmarks: list[dict] = field(default_factory=list)  # pytest-benchmark entries of the cells timed so far
    checkpoint: object = None  # perfsuite.models.checkpoint.Checkpoint of --perfsuite-weights, or None: random weights
    adapters: str | None = None  # --perfsuite-adapters MODULE:OBJECT (contributed adapters not installed as packages)

    def policy(self, cell: Cell):
        """The rounds policy of ``cell``'s loop: exactly the command line's rounds when given, else its profile's
        range (a floor, a ceiling, stopping once precise)."""
        from perfsuite.measure.timing import RoundPolicy

        low, high, warmup = self.profile.timing(cell)
        warmup = warmup if self.warmup is None else self.warmup
        return RoundPolicy.fixed(self.rounds, warmup) if self.rounds else RoundPolicy(low, high, warmup)

    def profile_cells(self) -> list[Cell]:
        """The profile's cells; with a checkpoint, each one's model is the checkpoint's label."""
        cells = self.profile.cells(device=self.device, dtype=self.dtype,
                                   all_modes=names_field(self.selection, "mode"))  # opt-in modes, when named
        if self.checkpoint is None:
            return cells
        return [replace(c, model=self.checkpoint.label) for c in cells]

    def all_cells(self) -> list[Cell]:
        """The profile's cells after selection and sharding (resumed cells included)."""
        from perfsuite.workloads import estimated_cost

        return run_cells(self.profile_cells(), self.selection, self.shard, cost=estimated_cost)

    def cells(self, workload: str) -> list[Cell]:
        return [c for c in self.all_cells() if c.workload == workload and c.id not in self.done]

    def record_not_run(self, cell: Cell, status: str, reason: str, **metrics) -> CellRecord:
        record = not_run(cell, status, reason, **metrics)
        self.not_run.append(record)
        if self.journal:
            self.journal.append_not_run(record)
        return record

    def settings(self) -> dict:
        """The run settings every results document and journal header carries."""
        return {
            "profile": self.profile.name,
            "device": self.device,
            "dtype": self.dtype or self.profile.dtype,
            "rounds": self.rounds,  # None: the profile's policy (min_rounds..max_rounds, per part when composite)
            "warmup": self.warmup,
            "min_rounds": self.profile.rounds, "max_rounds": self.profile.max_rounds or self.profile.rounds,
            "selection": self.selection,
            "threads": self.threads,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "weights": self.checkpoint.label if self.checkpoint else None,
            "weights_path": str(self.checkpoint.path) if self.checkpoint else None,
            **({"adapters": self.adapters} if self.adapters else {}),
        }

    def check(self, *, resume: bool) -> None:
        """Refuse, before collection, a selection that picks no cell and a resume of a journal of other settings."""
        every = self.profile_cells()
        if self.selection and not select(every, self.selection):
            raise PerfsuiteError(no_match_message(self.profile, every, self.selection))
        headers = self.journal.headers() if resume and self.journal else []
        if headers:
            before, now = headers[0]["perfsuite"], self.settings()
            differ = [f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in RESUME_MUST_MATCH if before.get(k) != now.get(k)]
            if differ:
                raise PerfsuiteError(f"cannot resume {self.journal.path} with other settings ({', '.join(differ)}); "
                                     "use the journal's settings or start a new journal")


STATE = pytest.StashKey[SessionState]()


def state_of(config: pytest.Config) -> SessionState | None:
    return config.stash.get(STATE, None)


def run_header(config: pytest.Config) -> dict:
    """What pytest-benchmark writes about the machine, the commit and itself, and when."""
    from pytest_benchmark import __version__ as pb_version
    from pytest_benchmark.plugin import pytest_benchmark_generate_commit_info, pytest_benchmark_generate_machine_info

    return {"machine_info": pytest_benchmark_generate_machine_info(),
            "commit_info": pytest_benchmark_generate_commit_info(config), "pytest_benchmark_version": pb_version,
            "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat()}
