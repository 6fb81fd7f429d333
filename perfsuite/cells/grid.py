"""The grid: one :class:`Cell` per benchmark, grouped into named profiles, and selection expressions.

A cell's ``id`` is its pytest parameter id and its key everywhere downstream
(JSON, DataFrame, baselines), e.g. ``latency[houlsby-r10-b1-s128]``. No torch here:
listing, selecting and sharding cells costs nothing.
"""

from __future__ import annotations

import ast
import functools
import itertools
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterable

from perfsuite.errors import PerfsuiteError

WORKLOADS = ("latency", "recompute", "subspace")
# Every adapter design but the plain model, in the order the report draws them; the registry in
# perfsuite.adapters has these and "none" (a test keeps the two in step).
ADAPTER_NAMES = ("houlsby", "lin", "pfeiffer", "adapterdrop", "parallel", "spectral-r", "lora", "lora-merged")
# The implementations a cell can run on: "ref", perfsuite's own model and adapters (perfsuite.model,
# perfsuite.adapters); "hf", transformers' GPT2LMHeadModel with peft's adapters, or AdapterHub's bottlenecks
# (perfsuite.hf, the optional extra `pip install -e '.[hf]'`).
IMPLS = ("ref", "hf")
# The adapters of the hf implementation, in drawing order (perfsuite.hf.adapters has these and "none"; a test
# keeps them in step). The first three reach peft's LoRA; the next four are peft's other methods that accept
# GPT-2's Conv1D; the last three are AdapterHub bottlenecks (only where the `adapters` package is installed).
HF_ADAPTER_NAMES = ("lora", "lora-merged", "dora", "vera", "adalora", "fourierft", "ia3", "houlsby", "pfeiffer",
                    "parallel")
# Methods without a rank, recorded at this one rank (r = 0 means the plain model everywhere in perfsuite).
RANK_FREE = {"ia3": 1}


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid: what is run, on what, at which sizes. JSON scalars only, so it survives the round trip."""

    workload: str
    adapter: str
    rank: int
    batch: int | None = None
    seq_len: int | None = None  # latency: tokens per sequence; recompute: prompt length
    window: int | None = None  # recompute: tokens verified at a time
    gen_len: int | None = None  # recompute: output tokens per request
    rank_b: int | None = None  # subspace: the rank of the second adapter
    dtype: str = "float32"
    device: str = "cpu"
    model: str = "tiny"  # a preset of perfsuite.model, or a checkpoint's label (perfsuite.checkpoint)
    impl: str = "ref"  # "ref" (perfsuite's model) or "hf" (transformers + peft); see IMPLS

    def __post_init__(self) -> None:
        """Field types are checked: cells are read back from JSON files that may be malformed."""
        if self.impl not in IMPLS:
            raise ValueError(f"cell field impl = {self.impl!r} is not one of {', '.join(IMPLS)}")
        for f in fields(self):
            value = getattr(self, f.name)
            want_int = f.name in _INT_FIELDS
            ok = (isinstance(value, int) and not isinstance(value, bool)) if want_int else isinstance(value, str)
            if not ok and not (value is None and f.name in _OPTIONAL_FIELDS):
                raise ValueError(f"cell field {f.name} = {value!r} is not {'an integer' if want_int else 'a string'}")

    @property
    def param_id(self) -> str:
        """The pytest parameter id: the sizes that vary within a run (not dtype, device or model), then ``hf``
        for the hf implementation (ref cells keep the ids they had before implementations existed)."""
        parts = [self.adapter, f"r{self.rank}"]
        for prefix, value in (("b", self.batch), ("s", self.seq_len), ("w", self.window),
                              ("g", self.gen_len), ("R", self.rank_b)):
            if value is not None:
                parts.append(f"{prefix}{value}")
        if self.impl != "ref":
            parts.append(self.impl)
        return "-".join(parts)

    @property
    def id(self) -> str:
        return f"{self.workload}[{self.param_id}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"cell has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**d)


# --- the recompute workload's verification budget (LLM-42) ---------------------------------------

DEFAULT_TOKEN_BUDGET = 512  # tokens per verification pass (LLM-42 Fig. 13); batch × window above it is not run
# The smoke profile's tiny model runs a scaled-down Figure 13 (budget 512 / 8), so that
# its grid has cells over the budget and a verification pass costs a millisecond on a CPU.
TOKEN_BUDGETS = {"tiny": 64}


def budget_violation(batch: int, window: int, token_budget: int = DEFAULT_TOKEN_BUDGET) -> str | None:
    """Why ``batch`` requests of ``window`` tokens do not fit one verification pass, or None when they do."""
    if batch * window > token_budget:
        return (f"batch × window = {batch} × {window} = {batch * window} tokens exceeds the verification "
                f"token budget of {token_budget}")
    return None


def token_budget(cell: Cell) -> int:
    """The cell's verification budget: the default, or its model's scaled-down one (TOKEN_BUDGETS)."""
    return TOKEN_BUDGETS.get(cell.model, DEFAULT_TOKEN_BUDGET)


_INT_FIELDS = frozenset({"rank", "batch", "seq_len", "window", "gen_len", "rank_b"})
_OPTIONAL_FIELDS = _INT_FIELDS - {"rank"}


@dataclass(frozen=True)
class Profile:
    """A named grid. A composite profile (``parts``) is the union of others, each keeping its own dtype and
    rounds, so ``full`` runs the recompute grid in bf16 with few rounds and the latency grid with 100."""

    name: str
    description: str
    model: str
    dtype: str | None  # default dtype; --perfsuite-dtype overrides; None: each part's
    needs_gpu: bool
    rounds: int | None  # timed rounds per loop, at least (None: each part's)
    warmup: int | None  # untimed rounds first
    make_cells: Callable[[], list[Cell]] = list
    parts: tuple[str, ...] = ()
    max_rounds: int | None = None  # at most (the LoRA paper averaged 100 trials); None: exactly ``rounds``

    def cells(self, *, device: str, dtype: str | None = None) -> list[Cell]:
        if self.parts:
            return [c for p in self.parts for c in get_profile(p).cells(device=device, dtype=dtype)]
        return [replace(c, device=device, dtype=dtype or self.dtype) for c in self.make_cells()]

    def timing(self, cell: Cell) -> tuple[int, int, int]:
        """(at least, at most, warm-up) rounds for ``cell``'s loop: the profile's, or in a composite profile its
        part's. Between the two the loop stops once its medians are precise (perfsuite.timing.RoundPolicy)."""
        part = self.part_of(cell)
        profile = self if part == self.name else get_profile(part)
        return profile.rounds, profile.max_rounds or profile.rounds, profile.warmup

    def part_of(self, cell: Cell) -> str:
        """The profile a cell's numbers belong to: this one, or in a composite profile the part that has its
        workload (baselines and comparisons are kept part by part: each part has its own dtype and model)."""
        for p in self.parts:
            if cell.workload in _workloads(p):
                return p
        return self.name


def latency_cells(model: str, adapters: Iterable[str], ranks: Iterable[int], batches: Iterable[int],
                  seq_lens: Iterable[int], impl: str = "ref") -> list[Cell]:
    """The latency grid, ordered adapter → rank → seq → batch so one adapted model serves consecutive cells.

    r = 0 is one row of the plain model (adapter "none"), shared by every adapter; a rank-free method
    (RANK_FREE) has one row.
    """
    ranks = list(ranks)
    rows = [("none", 0)] if 0 in ranks else []
    for a in adapters:
        rows += [(a, RANK_FREE[a])] if a in RANK_FREE else [(a, r) for r in ranks if r > 0]
    return [Cell("latency", a, r, batch=b, seq_len=s, model=model, impl=impl)
            for (a, r), s, b in itertools.product(rows, list(seq_lens), list(batches))]


def recompute_cells(model: str, adapters: Iterable[str], rank: int, batches: Iterable[int],
                    windows: Iterable[int], prompt_len: int, gen_len: int, impl: str = "ref") -> list[Cell]:
    """The recompute grid (LLM-42, Gond et al. 2026, Fig. 13): batch × window for each adapter."""
    return [Cell("recompute", a, 0 if a == "none" else rank, batch=b, seq_len=prompt_len, window=w,
                 gen_len=gen_len, model=model, impl=impl)
            for a, b, w in itertools.product(list(adapters), list(batches), list(windows))]


def subspace_cells(model: str, rank_pairs: Iterable[tuple[int, int]]) -> list[Cell]:
    """LoRA subspace similarity (Hu et al. 2021 §7.2): one cell per (r_A, r_B) pair of trained adapters."""
    return [Cell("subspace", "lora", ra, rank_b=rb, model=model) for ra, rb in rank_pairs]


def _smoke() -> list[Cell]:
    return (latency_cells("tiny", ADAPTER_NAMES, ranks=(0, 8), batches=(1, 4), seq_lens=(32,))
            # LLM-42 Fig. 13 scaled down: the tiny model's 64-token verification budget
            # (TOKEN_BUDGETS) leaves b8 × w16 outside it, drawn blank.
            + recompute_cells("tiny", ("none",), rank=0, batches=(1, 8), windows=(4, 16), prompt_len=16, gen_len=16)
            + recompute_cells("tiny", ("lora",), rank=8, batches=(8,), windows=(4,), prompt_len=16, gen_len=16)
            + subspace_cells("tiny", [(4, 8)]))


def _paper() -> list[Cell]:
    # LoRA paper, Figure 5: r × batch × seq for AdapterH and AdapterL, here for every adapter.
    return latency_cells("gpt2-medium", ADAPTER_NAMES, ranks=(0, 10, 100, 250),
                         batches=(1, 2, 4, 8, 16, 32), seq_lens=(128, 256, 512))


def _recompute() -> list[Cell]:
    # LLM-42 Figure 13: batch × window, 512-token budget (cells over it are recorded, not run).
    return recompute_cells("gpt2-medium", ("none",), rank=0, batches=(1, 2, 4, 8, 16, 32),
                           windows=(16, 32, 64, 128, 256, 512), prompt_len=128, gen_len=512)


def _subspace() -> list[Cell]:
    # LoRA paper Figures 3-4 and 6-7: ranks 8 and 64, two seeds each.
    return subspace_cells("gpt2-medium", [(8, 64)])


def _hf_latency(model: str, ranks, batches, seq_lens) -> list[Cell]:
    """Every hf method against the plain hf model, and the ref twins of those the reference model has too
    (the report's implementation overhead: hf time / ref time per cell)."""
    twins = [a for a in HF_ADAPTER_NAMES if a in ADAPTER_NAMES]
    return (latency_cells(model, twins, ranks, batches, seq_lens, impl="ref")
            + latency_cells(model, HF_ADAPTER_NAMES, ranks, batches, seq_lens, impl="hf"))


def _hf_smoke() -> list[Cell]:
    recompute = [c for impl in IMPLS for c in recompute_cells("tiny", ("none", "lora"), rank=8, batches=(1, 8),
                                                              windows=(4,), prompt_len=16, gen_len=16, impl=impl)]
    return _hf_latency("tiny", ranks=(0, 8), batches=(1, 4), seq_lens=(32,)) + recompute


def _hf_paper() -> list[Cell]:
    return _hf_latency("gpt2-medium", ranks=(0, 10, 100, 250), batches=(1, 2, 4, 8, 16, 32), seq_lens=(128, 256, 512))


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("smoke", "tiny model, every adapter and workload, a few cells: about a minute on a CPU",
                model="tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_smoke,
                max_rounds=100),
        # 30 to 100 rounds per shape group (the LoRA paper averaged 100 trials): quiet GPU cells stop early.
        Profile("paper", "LoRA paper Figure 5 latency grid on gpt2-medium (GPU)",
                model="gpt2-medium", dtype="float16", needs_gpu=True, rounds=30, warmup=10, make_cells=_paper,
                max_rounds=100),
        # 5 rounds: the fewest with which the exact Mann-Whitney test can reach the comparison's 1 % level
        Profile("recompute", "LLM-42 Figure 13 recompute grid on gpt2-medium in bf16 (GPU)",
                model="gpt2-medium", dtype="bfloat16", needs_gpu=True, rounds=5, warmup=1, make_cells=_recompute),
        Profile("subspace", "LoRA subspace similarity, ranks 8 and 64 on gpt2-medium (GPU)",
                model="gpt2-medium", dtype="float32", needs_gpu=True, rounds=1, warmup=0, make_cells=_subspace),
        Profile("full", "paper + recompute + subspace, each with its own dtype and rounds (GPU)",
                model="gpt2-medium", dtype=None, needs_gpu=True, rounds=None, warmup=None,
                parts=("paper", "recompute", "subspace")),
        Profile("hf-smoke", "tiny model on transformers + peft (every hf method) and on the reference, latency "
                "and recompute: about a minute on a CPU (needs the hf extra)",
                model="tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_hf_smoke),
        Profile("hf-paper", "the paper latency grid on transformers + peft, with the reference's twins (GPU, "
                "needs the hf extra)",
                model="gpt2-medium", dtype="float16", needs_gpu=True, rounds=100, warmup=10, make_cells=_hf_paper),
    ]
}


@functools.lru_cache(maxsize=None)
def _workloads(profile: str) -> frozenset[str]:
    return frozenset(c.workload for c in get_profile(profile).cells(device="cpu"))


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise PerfsuiteError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


# --- selecting cells by expression ------------------------------------------------------------

_ALLOWED_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq,
                  ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot, ast.Name,
                  ast.Load, ast.Constant, ast.Tuple, ast.List, ast.Set)
_CELL_FIELDS = tuple(f.name for f in fields(Cell))


MAX_SELECTION_CHARS = 4096
MAX_SELECTION_DEPTH = 100  # syntax-tree levels; a real selection has fewer than ten


class SelectionError(PerfsuiteError, ValueError):
    pass


def compile_selection(expr: str) -> Callable[[Cell], bool]:
    """A predicate from an expression over cell fields, e.g. ``adapter in ('lora', 'houlsby') and batch <= 4``.

    Only comparisons, ``and``/``or``/``not``, literals and field names are allowed, at most
    MAX_SELECTION_CHARS long and MAX_SELECTION_DEPTH deep (a deeper tree would exhaust the parser's stack).
    """
    if len(expr) > MAX_SELECTION_CHARS:
        raise SelectionError(f"cell selection of {len(expr)} characters: at most {MAX_SELECTION_CHARS}")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise SelectionError(f"cannot parse cell selection {expr[:80]!r}: {e.msg}") from None
    except (RecursionError, MemoryError):
        raise SelectionError(f"cell selection nested deeper than {MAX_SELECTION_DEPTH} levels") from None
    stack, depth = [(tree, 1)], 0
    while stack:  # iterative: the depth check must not recurse itself
        node, d = stack.pop()
        depth = max(depth, d)
        if depth > MAX_SELECTION_DEPTH:
            raise SelectionError(f"cell selection nested deeper than {MAX_SELECTION_DEPTH} levels")
        stack += [(child, d + 1) for child in ast.iter_child_nodes(node)]
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise SelectionError(f"cell selection {expr!r}: {type(node).__name__} is not allowed "
                                 "(use field names, literals, comparisons, and/or/not)")
        if isinstance(node, ast.Name) and node.id not in _CELL_FIELDS + ("None", "True", "False"):
            raise SelectionError(f"cell selection {expr!r}: unknown field {node.id!r}; fields: {', '.join(_CELL_FIELDS)}")
    code = compile(tree, "<cells>", "eval")

    def predicate(cell: Cell) -> bool:
        try:
            return bool(eval(code, {"__builtins__": {}}, asdict(cell)))
        except TypeError as e:  # e.g. None <= 4 on a field this workload leaves empty
            if "not supported between" in str(e):
                return False
            raise SelectionError(f"cell selection {expr!r} on {cell.id}: {e}") from None

    return predicate


def select(cells: Iterable[Cell], expr: str | None) -> list[Cell]:
    cells = list(cells)
    if not expr:
        return cells
    pred = compile_selection(expr)
    return [c for c in cells if pred(c)]
