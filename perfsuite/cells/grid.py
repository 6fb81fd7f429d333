"""The grid: one :class:`Cell` per benchmark, grouped into named profiles, and selection expressions.

A cell's ``id`` is its pytest parameter id and its key everywhere downstream
(JSON, DataFrame, baselines), e.g. ``latency[houlsby-r10-b1-s128]``. No torch here:
listing, selecting and sharding cells costs nothing.

Over 350 lines on purpose: the Cell, its id and every profile's grid are one contract (an id names a cell in
every file downstream); splitting the profiles off is left for when a profile grows (say so in an issue).
"""

from __future__ import annotations

import ast
import functools
import itertools
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Iterable

from perfsuite.errors import PerfsuiteError

PAPER_WORKLOADS = ("latency", "recompute", "subspace")  # what the smoke and full profiles cover
WORKLOADS = PAPER_WORKLOADS + ("serving",)  # serving: its own profiles (serving-smoke, serving)
# Every adapter design but the plain model, in the order the report draws them; the registry in
# perfsuite.models.adapters has these and "none" (a test keeps the two in step).
ADAPTER_NAMES = ("houlsby", "lin", "pfeiffer", "adapterdrop", "parallel", "spectral-r", "lora", "lora-merged")
# The implementations a cell can run on: "ref", perfsuite's own model and adapters (perfsuite.models.model,
# perfsuite.models.adapters); "hf", transformers' GPT2LMHeadModel with peft's adapters, or AdapterHub's bottlenecks
# (perfsuite.hf, the optional extra `pip install -e '.[hf]'`).
IMPLS = ("ref", "hf")
# The adapters of the hf implementation, in drawing order (perfsuite.hf.adapters has these and "none"; a test
# keeps them in step). The first three reach peft's LoRA; the next four are peft's other methods that accept
# GPT-2's Conv1D; the last three are AdapterHub bottlenecks (only where the `adapters` package is installed).
HF_ADAPTER_NAMES = ("lora", "lora-merged", "dora", "vera", "adalora", "fourierft", "ia3", "houlsby", "pfeiffer",
                    "parallel")
# Methods without a rank, recorded at this one rank (r = 0 means the plain model everywhere in perfsuite).
RANK_FREE = {"ia3": 1}
# How a latency cell's forward pass is executed (perfsuite.workloads.modes): "eager", PyTorch as the LoRA paper
# ran it (the default: eager cells keep their ids); "compile", torch.compile (default mode), compiled before the
# loop; "graphs", the forward captured once in a CUDA graph and replayed (CUDA only). Non-eager cells are
# opt-in: a selection keeps them only when it names ``mode`` (see select), since compiling costs tens of seconds.
MODES = ("eager", "compile", "graphs")
DEFAULT_MODE = "eager"
# Today's model families, hf implementation only (perfsuite.hf.families builds them from a config, random
# weights; a test keeps the two in step): model name → transformers family. The 8B/7B names are a few layers of
# the real width (perfsuite.hf.families says how many), so they fit one GPU and the grid keeps its time.
MODERN_MODELS = {"llama-tiny": "llama", "qwen2-tiny": "qwen2", "mistral-tiny": "mistral",
                 "llama-3-8b": "llama", "qwen2-7b": "qwen2"}
# The hf methods the modern families run: peft's methods that accept their nn.Linear projections.
MODERN_ADAPTER_NAMES = ("lora", "lora-merged", "dora", "vera", "adalora", "ia3")
# What one forward pass is (latency and serving cells): "prefill", seq_len new tokens (the default: prefill cells
# keep their ids), or "decode", one new token per request against a KV cache of kv_len tokens (id part L<kv_len>).
PHASES = ("prefill", "decode")
DEFAULT_PHASE = "prefill"
# The serving workload (perfsuite.workloads.serving): a batch whose requests use K different LoRAs. How the mixed
# batch is computed, its ``method``: "gathered", each row's A and B gathered by adapter index, then batched matmuls
# (Punica's BGMV/SGMV shape), and "loop", a loop over the batch's adapters with row masks (what peft does), both on
# perfsuite's own model; "peft", peft's own mixed batch (``adapter_names=``) on transformers' models (impl "hf").
SERVING_METHODS = {"gathered": "ref", "loop": "ref", "peft": "hf"}  # method → the implementation it runs on
ORDERS = ("grouped", "shuffled")  # requests sorted by adapter, or in arrival order (vLLM's sorted vs unsorted)
RANK_MIXES = ("hetero",)  # rank_mix None: every adapter of the batch at the cell's rank; "hetero": see serving
# The base model's weights (perfsuite.workloads.quant): "none" (the default: ids unchanged); torchao's weight-only
# int8 and int4 (CPU and CUDA); bitsandbytes' nf4 and LLM.int8 (CUDA: the path peft's QLoRA takes). Unmerged
# adapters sit on top; a merged LoRA on a quantized base is recorded unsupported.
QUANTS = ("none", "ao-int8", "ao-int4", "bnb-nf4", "bnb-int8")
DEFAULT_QUANT = "none"
CUDA_ONLY_QUANTS = ("bnb-nf4", "bnb-int8")


def adapter_names(impl: str = "ref") -> tuple[str, ...]:
    """The adapters of an implementation in drawing order: the built-in ones, then those other packages contribute
    (entry points ``perfsuite.adapters`` or ``--adapters``; :mod:`perfsuite.extensions`), which the latency grids
    take in like the built-in ones."""
    from perfsuite.extensions import contributed_names

    builtin = ADAPTER_NAMES if impl == "ref" else HF_ADAPTER_NAMES
    return builtin + contributed_names(impl, reserved=("none", *ADAPTER_NAMES, *HF_ADAPTER_NAMES))


@functools.total_ordering
@dataclass(frozen=True)
class Cell:
    """One point of the grid: what is run, on what, at which sizes. JSON scalars only, so it survives the round trip.
    Cells sort field by field, as a dataclass's order does, with an empty field before any value (a decode cell has
    no seq_len where a prefill cell of the same adapter has one)."""

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
    model: str = "tiny"  # a preset of perfsuite.models.model, or a checkpoint's label (perfsuite.models.checkpoint)
    impl: str = "ref"  # "ref" (perfsuite's model) or "hf" (transformers + peft); see IMPLS
    mode: str = DEFAULT_MODE  # how the forward is executed: eager, compile or graphs; see MODES
    # Fields added for serving-time cells; at their defaults a cell's id and its file form are as before them.
    phase: str = DEFAULT_PHASE  # latency, serving: "prefill" (seq_len tokens) or "decode" (one token); see PHASES
    kv_len: int | None = None  # decode: tokens already in each request's KV cache
    n_adapters: int | None = None  # serving: K, the distinct adapters in the batch
    order: str | None = None  # serving: how requests are ordered, "grouped" by adapter or "shuffled"; see ORDERS
    method: str | None = None  # serving: how the mixed batch is computed; see SERVING_METHODS
    rank_mix: str | None = None  # serving: None, every adapter at ``rank``; "hetero", ranks around it (RANK_MIXES)
    quant: str = DEFAULT_QUANT  # the base model's weights; see QUANTS

    def __post_init__(self) -> None:
        """Field types are checked: cells are read back from JSON files that may be malformed."""
        if self.impl not in IMPLS:
            raise ValueError(f"cell field impl = {self.impl!r} is not one of {', '.join(IMPLS)}")
        if self.mode not in MODES:
            raise ValueError(f"cell field mode = {self.mode!r} is not one of {', '.join(MODES)}")
        for name, allowed in (("phase", PHASES), ("order", ORDERS), ("method", tuple(SERVING_METHODS)),
                              ("rank_mix", RANK_MIXES), ("quant", QUANTS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"cell field {name} = {value!r} is not one of {', '.join(allowed)}")
        if (self.phase == "decode") != (self.kv_len is not None):
            raise ValueError("a decode cell has a kv_len (its KV cache) and a prefill cell none: "
                             f"phase = {self.phase!r}, kv_len = {self.kv_len!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            want_int = f.name in _INT_FIELDS
            ok = (isinstance(value, int) and not isinstance(value, bool)) if want_int else isinstance(value, str)
            if not ok and not (value is None and f.name in _OPTIONAL_FIELDS):
                raise ValueError(f"cell field {f.name} = {value!r} is not {'an integer' if want_int else 'a string'}")

    def __lt__(self, other: "Cell") -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def _sort_key(self) -> tuple:
        return tuple((0, 0) if v is None else (1, v) for v in (getattr(self, f.name) for f in fields(self)))

    @property
    def param_id(self) -> str:
        """The pytest parameter id: the sizes that vary within a run (not dtype or device), then ``hf`` for the
        hf implementation, the model when it is one of today's families (MODERN_MODELS), a quantized base, and the
        mode when not eager: GPT-2 eager cells keep the ids they had before implementations, families and modes
        existed. A serving cell starts with its method, K and order (``gathered-K4-shuffled-r8-b8-L64``); a decode
        cell has ``L<kv_len>`` where a prefill cell has ``s<seq_len>``."""
        parts = [self.method or self.adapter]
        parts += [f"K{self.n_adapters}"] if self.n_adapters is not None else []
        parts += [self.order] if self.order else []
        parts.append(f"r{self.rank}")
        for prefix, value in (("b", self.batch), ("s", self.seq_len), ("w", self.window),
                              ("g", self.gen_len), ("R", self.rank_b), ("L", self.kv_len)):
            if value is not None:
                parts.append(f"{prefix}{value}")
        if self.rank_mix:
            parts.append(self.rank_mix)
        if self.impl != "ref":
            parts.append(self.impl)
        if self.model in MODERN_MODELS:  # a profile may hold several families (GPT-2 cells keep their ids)
            parts.append(self.model)
        if self.quant != DEFAULT_QUANT:
            parts.append(self.quant)
        if self.mode != DEFAULT_MODE:
            parts.append(self.mode)
        return "-".join(parts)

    @property
    def id(self) -> str:
        return f"{self.workload}[{self.param_id}]"

    def to_dict(self) -> dict[str, Any]:
        """The cell as JSON; the serving-time fields only where they differ from their defaults, so results,
        baselines and history rows of every earlier cell keep their exact form."""
        d = asdict(self)
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        """A cell read back; files written before modes existed have no ``mode``: eager, as they ran."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"cell has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``cell`` cannot run on any machine like this one (its status is then "unsupported"), or None.
    Decided from the cell alone, before anything is built; a capture or compilation that fails while running
    is recorded the same way by the latency workload."""
    if cell.mode != DEFAULT_MODE and cell.workload != "latency":
        return f"only latency cells run in mode {cell.mode!r}: the {cell.workload} workload runs eagerly"
    if cell.mode == "graphs" and not cell.device.startswith("cuda"):
        return "CUDA graphs need a CUDA device; this cell runs on the CPU"
    if cell.quant != DEFAULT_QUANT:
        if cell.adapter == "lora-merged":
            return (f"merged LoRA on a {cell.quant} base: W + (α/r)·B·A cannot be folded into quantized weights "
                    "without re-quantizing the base, which changes the model (QLoRA serves adapters unmerged; "
                    "artidoro/qlora#29)")
        if cell.impl != "ref":
            return "quantized bases run on perfsuite's own model (impl ref) only"
        if cell.quant in CUDA_ONLY_QUANTS and not cell.device.startswith("cuda"):
            return f"{cell.quant}: bitsandbytes' kernels run on CUDA here (the path peft's QLoRA takes); this cell is on the CPU"
    return None


# --- the recompute workload's verification budget (LLM-42) ---------------------------------------

DEFAULT_TOKEN_BUDGET = 512  # tokens per verification pass (LLM-42 Fig. 13); batch × window above it is not run
# The smoke profile's tiny model (and the tiny Llama/Qwen2/Mistral shapes) runs a scaled-down Figure 13 (budget
# 512 / 8), so that its grid has cells over the budget and a verification pass costs a millisecond on a CPU.
TOKEN_BUDGETS = {"tiny": 64, "llama-tiny": 64, "qwen2-tiny": 64, "mistral-tiny": 64}


def budget_violation(batch: int, window: int, token_budget: int = DEFAULT_TOKEN_BUDGET) -> str | None:
    """Why ``batch`` requests of ``window`` tokens do not fit one verification pass, or None when they do."""
    if batch * window > token_budget:
        return (f"batch × window = {batch} × {window} = {batch * window} tokens exceeds the verification "
                f"token budget of {token_budget}")
    return None


def token_budget(cell: Cell) -> int:
    """The cell's verification budget: the default, or its model's scaled-down one (TOKEN_BUDGETS)."""
    return TOKEN_BUDGETS.get(cell.model, DEFAULT_TOKEN_BUDGET)


_INT_FIELDS = frozenset({"rank", "batch", "seq_len", "window", "gen_len", "rank_b", "kv_len", "n_adapters"})
_OPTIONAL_FIELDS = (_INT_FIELDS - {"rank"}) | {"order", "method", "rank_mix"}
# Fields added after files existed, with their defaults: Cell.to_dict leaves them out at these values.
LATER_FIELDS = {"phase": DEFAULT_PHASE, "kv_len": None, "n_adapters": None, "order": None, "method": None,
                 "rank_mix": None, "quant": DEFAULT_QUANT}


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

    def cells(self, *, device: str, dtype: str | None = None, all_modes: bool = False) -> list[Cell]:
        """The profile's cells: by default its eager ones (what a run without a selection measures); with
        ``all_modes``, its opt-in compile and graphs cells too (a selection that names ``mode`` picks among them)."""
        if self.parts:
            return [c for p in self.parts for c in get_profile(p).cells(device=device, dtype=dtype, all_modes=all_modes)]
        return [replace(c, device=device, dtype=dtype or self.dtype) for c in self.make_cells()
                if all_modes or c.mode == DEFAULT_MODE]

    def timing(self, cell: Cell) -> tuple[int, int, int]:
        """(at least, at most, warm-up) rounds for ``cell``'s loop: the profile's, or in a composite profile its
        part's. Between the two the loop stops once its medians are precise (perfsuite.measure.timing.RoundPolicy)."""
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
                  seq_lens: Iterable[int], impl: str = "ref", *, quant: str = DEFAULT_QUANT) -> list[Cell]:
    """The latency grid, ordered adapter → rank → seq → batch so one adapted model serves consecutive cells.

    r = 0 is one row of the plain model (adapter "none"), shared by every adapter; a rank-free method
    (RANK_FREE) has one row.
    """
    return [Cell("latency", a, r, batch=b, seq_len=s, model=model, impl=impl, quant=quant)
            for (a, r), s, b in itertools.product(_latency_rows(adapters, ranks), list(seq_lens), list(batches))]


def decode_cells(model: str, adapters: Iterable[str], ranks: Iterable[int], batches: Iterable[int],
                 kv_lens: Iterable[int], impl: str = "ref", *, quant: str = DEFAULT_QUANT) -> list[Cell]:
    """The latency grid's serving-time twin: one decode step (one token per request) against a KV cache of
    ``kv_len`` tokens, for the same rows as :func:`latency_cells`."""
    return [Cell("latency", a, r, batch=b, model=model, impl=impl, phase="decode", kv_len=L, quant=quant)
            for (a, r), L, b in itertools.product(_latency_rows(adapters, ranks), list(kv_lens), list(batches))]


def _latency_rows(adapters: Iterable[str], ranks: Iterable[int]) -> list[tuple[str, int]]:
    ranks = list(ranks)
    rows = [("none", 0)] if 0 in ranks else []
    for a in adapters:
        rows += [(a, RANK_FREE[a])] if a in RANK_FREE else [(a, r) for r in ranks if r > 0]
    return rows


def in_modes(cells: Iterable[Cell], modes: Iterable[str] = MODES) -> list[Cell]:
    """Each latency cell in every mode of ``modes`` (eager ones as they are), mode by mode; other workloads'
    cells once, eager (the recompute decoder and subspace training run eagerly)."""
    cells = list(cells)
    out = [c for c in cells if c.workload != "latency" or DEFAULT_MODE in modes]
    return out + [replace(c, mode=m) for m in modes if m != DEFAULT_MODE for c in cells if c.workload == "latency"]


def recompute_cells(model: str, adapters: Iterable[str], rank: int, batches: Iterable[int],
                    windows: Iterable[int], prompt_len: int, gen_len: int, impl: str = "ref") -> list[Cell]:
    """The recompute grid (LLM-42, Gond et al. 2026, Fig. 13): batch × window for each adapter."""
    return [Cell("recompute", a, 0 if a == "none" else rank, batch=b, seq_len=prompt_len, window=w,
                 gen_len=gen_len, model=model, impl=impl)
            for a, b, w in itertools.product(list(adapters), list(batches), list(windows))]


def subspace_cells(model: str, rank_pairs: Iterable[tuple[int, int]]) -> list[Cell]:
    """LoRA subspace similarity (Hu et al. 2021 §7.2): one cell per (r_A, r_B) pair of trained adapters."""
    return [Cell("subspace", "lora", ra, rank_b=rb, model=model) for ra, rb in rank_pairs]


def serving_cells(model: str, methods: Iterable[str], ks: Iterable[int], batches: Iterable[int], rank: int, *,
                  seq_lens: Iterable[int] = (), kv_lens: Iterable[int] = (), orders: Iterable[str] = ORDERS,
                  rank_mix: str | None = None, quant: str = DEFAULT_QUANT, with_plain: bool = True) -> list[Cell]:
    """Mixed-adapter batches (perfsuite.workloads.serving): per shape (prefill of s tokens, or a decode step after
    L cached) and batch, the plain model of each implementation (r = 0, the reference of every slow-down), then per
    method every K that fits the batch (K ≤ batch: each adapter has a request) in every order; K = 1, the
    single-adapter batch (the other reference), has one order."""
    shapes = [dict(seq_len=s) for s in seq_lens] + [dict(phase="decode", kv_len=L) for L in kv_lens]
    methods, orders = list(methods), list(orders)
    out = []
    for shape, b in itertools.product(shapes, list(batches)):
        if with_plain:
            out += [Cell("serving", "none", 0, batch=b, model=model, impl=impl, quant=quant, **shape)
                    for impl in dict.fromkeys(SERVING_METHODS[m] for m in methods)]
        out += [Cell("serving", "lora", rank, batch=b, model=model, impl=SERVING_METHODS[m], n_adapters=k, order=o,
                     method=m, rank_mix=rank_mix, quant=quant, **shape)
                for m in methods for k in ks if k <= b for o in (orders[:1] if k == 1 else orders)]
    return out


def _smoke() -> list[Cell]:
    return in_modes(latency_cells("tiny", adapter_names("ref"), ranks=(0, 8), batches=(1, 4), seq_lens=(32,))
                    # one decode step for every adapter (the serving-time twin), one shape: a few cells
                    + decode_cells("tiny", adapter_names("ref"), ranks=(0, 8), batches=(4,), kv_lens=(64,))
            # LLM-42 Fig. 13 scaled down: the tiny model's 64-token verification budget
            # (TOKEN_BUDGETS) leaves b8 × w16 outside it, drawn blank.
            + recompute_cells("tiny", ("none",), rank=0, batches=(1, 8), windows=(4, 16), prompt_len=16, gen_len=16)
            + recompute_cells("tiny", ("lora",), rank=8, batches=(8,), windows=(4,), prompt_len=16, gen_len=16)
            + subspace_cells("tiny", [(4, 8)]))


def _paper() -> list[Cell]:
    # LoRA paper, Figure 5: r × batch × seq for AdapterH and AdapterL, here for every adapter; compile and graphs
    # cells are opt-in (select names mode), so the nightly's default stays the paper's eager grid.
    return in_modes(latency_cells("gpt2-medium", adapter_names("ref"), ranks=(0, 10, 100, 250),
                                  batches=(1, 2, 4, 8, 16, 32), seq_lens=(128, 256, 512))
                    # one decode step against a KV cache of L tokens (L = 2048 is past GPT-2's 1024 learned
                    # positions: the new token takes the last one, perfsuite.workloads.decode)
                    + decode_cells("gpt2-medium", adapter_names("ref"), ranks=(0, 10), batches=(1, 8, 32),
                                   kv_lens=(128, 512, 2048)))


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
    hf_names = adapter_names("hf")
    twins = [a for a in hf_names if a in adapter_names("ref")]
    return (latency_cells(model, twins, ranks, batches, seq_lens, impl="ref")
            + latency_cells(model, hf_names, ranks, batches, seq_lens, impl="hf"))


def _hf_smoke() -> list[Cell]:
    recompute = [c for impl in IMPLS for c in recompute_cells("tiny", ("none", "lora"), rank=8, batches=(1, 8),
                                                              windows=(4,), prompt_len=16, gen_len=16, impl=impl)]
    return _hf_latency("tiny", ranks=(0, 8), batches=(1, 4), seq_lens=(32,)) + recompute


def _hf_paper() -> list[Cell]:
    return _hf_latency("gpt2-medium", ranks=(0, 10, 100, 250), batches=(1, 2, 4, 8, 16, 32), seq_lens=(128, 256, 512))


def _hf_modern_smoke() -> list[Cell]:
    # Llama- and Qwen2-shaped tiny models (random weights), peft's methods on q_proj/v_proj; recompute with LoRA
    # (verified against plain decoding of the same model) through the ragged decoder on their layers
    # (perfsuite.hf.families), one short cell per family so the profile stays under a minute on a CPU.
    recompute = [c for m in ("llama-tiny", "qwen2-tiny")
                 for c in recompute_cells(m, ("lora",), rank=8, batches=(1,), windows=(4,), prompt_len=16, gen_len=8,
                                          impl="hf")]
    latency = [c for m in ("llama-tiny", "qwen2-tiny")
               for c in latency_cells(m, MODERN_ADAPTER_NAMES, ranks=(0, 8), batches=(1, 4), seq_lens=(32,), impl="hf")]
    return in_modes(latency) + recompute


def _hf_modern() -> list[Cell]:
    # The layer shapes of Llama-3-8B and Qwen2-7B (a few layers at the real width: perfsuite.hf.families); recompute
    # with short outputs (64 tokens), so its cells take seconds at the latency grid's rounds.
    models = ("llama-3-8b", "qwen2-7b")
    latency = [c for m in models for c in latency_cells(m, MODERN_ADAPTER_NAMES, ranks=(0, 16), batches=(1, 8, 32),
                                                        seq_lens=(128, 512), impl="hf")]
    recompute = [c for m in models for c in recompute_cells(m, ("none", "lora"), rank=16, batches=(1, 8),
                                                            windows=(16, 64), prompt_len=128, gen_len=64, impl="hf")]
    return in_modes(latency) + recompute


def _quant_latency(model: str, quants: Iterable[str], rank: int, batch: int, seq_len: int, kv_len: int) -> list[Cell]:
    """Quantized bases: the plain quantized model, unmerged LoRA on it, and merged LoRA (recorded unsupported), one
    prefill and one decode shape per quantization."""
    return [c for q in quants for c in (
        latency_cells(model, ("lora", "lora-merged"), (0, rank), (batch,), (seq_len,), quant=q)
        + decode_cells(model, ("lora", "lora-merged"), (0, rank), (batch,), (kv_len,), quant=q))]


def _serving_smoke() -> list[Cell]:
    # Every method, K up to 8, both orders: decode at b8 and b16 (the heatmap's batch axis) and one prefill shape;
    # heterogeneous ranks on two cells per method; torchao's CPU quantizations under LoRA.
    mixed = (serving_cells("tiny", SERVING_METHODS, (1, 2, 4, 8), (8, 16), 8, kv_lens=(64,))
             + serving_cells("tiny", SERVING_METHODS, (1, 2, 4, 8), (8,), 8, seq_lens=(16,)))
    hetero = serving_cells("tiny", ("gathered", "loop"), (4, 8), (8,), 8, kv_lens=(64,), orders=("shuffled",),
                           rank_mix="hetero", with_plain=False)
    return mixed + hetero + _quant_latency("tiny", ("ao-int8", "ao-int4"), 8, 4, 32, 64)


def _serving() -> list[Cell]:
    # GPU: K up to 64, batch 1-32, both phases; GPT-2 medium for every method, Llama-3-8B's layer shapes for peft's
    # mixed batch; the quantized bases (torchao and bitsandbytes) under LoRA.
    ks, batches = (1, 2, 4, 8, 16, 64), (1, 4, 8, 16, 32, 64)  # K ≤ batch: K = 64 at batch 64
    gpt2 = serving_cells("gpt2-medium", SERVING_METHODS, ks, batches, 16, seq_lens=(128,), kv_lens=(512,))
    hetero = serving_cells("gpt2-medium", ("gathered", "loop"), (8, 16), (32,), 16, kv_lens=(512,),
                           orders=("shuffled",), rank_mix="hetero", with_plain=False)
    llama = serving_cells("llama-3-8b", ("peft",), ks, batches, 16, seq_lens=(128,), kv_lens=(512,))
    quant = _quant_latency("gpt2-medium", ("ao-int8", "ao-int4", "bnb-nf4", "bnb-int8"), 16, 8, 128, 512)
    return gpt2 + hetero + llama + quant


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("smoke", "tiny model, every adapter; latency (prefill and a decode step), recompute and subspace: "
                "under a minute on a CPU",
                model="tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_smoke,
                max_rounds=100),
        # 30 to 60 rounds per shape group, in whole cycles of 24 (23 models and the probe): 48 to 72 (the LoRA
        # paper averaged 100 trials; quiet GPU cells stop early); 5 warm-up rounds. Trimmed from 30-100 and 10 so
        # the night, its doctor and GPU tests included, is modelled within 10 minutes on one H100 (docs/timing.md).
        Profile("paper", "LoRA paper Figure 5 latency grid on gpt2-medium (GPU)",
                model="gpt2-medium", dtype="float16", needs_gpu=True, rounds=30, warmup=5, make_cells=_paper,
                max_rounds=60),
        # 5 rounds: the fewest with which the exact Mann-Whitney test can reach the comparison's 1 % level
        Profile("recompute", "LLM-42 Figure 13 recompute grid on gpt2-medium in bf16 (GPU)",
                model="gpt2-medium", dtype="bfloat16", needs_gpu=True, rounds=5, warmup=1, make_cells=_recompute),
        Profile("subspace", "LoRA subspace similarity, ranks 8 and 64 on gpt2-medium (GPU)",
                model="gpt2-medium", dtype="float32", needs_gpu=True, rounds=1, warmup=0, make_cells=_subspace),
        Profile("full", "paper + recompute + subspace, each with its own dtype and rounds (GPU)",
                model="gpt2-medium", dtype=None, needs_gpu=True, rounds=None, warmup=None,
                parts=("paper", "recompute", "subspace")),
        Profile("hf-smoke", "tiny model on transformers + peft (every hf method) and on the reference, latency "
                "and recompute: under a minute on a CPU (needs the hf extra)",
                model="tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_hf_smoke),
        Profile("hf-paper", "the paper latency grid on transformers + peft, with the reference's twins (GPU, "
                "needs the hf extra)",
                model="gpt2-medium", dtype="float16", needs_gpu=True, rounds=100, warmup=10, make_cells=_hf_paper),
        Profile("hf-modern-smoke", "Llama- and Qwen2-shaped tiny models on transformers + peft (LoRA, DoRA, VeRA, "
                "AdaLoRA, IA3, merged LoRA): under a minute on a CPU (needs the hf extra)",
                model="llama-tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_hf_modern_smoke,
                max_rounds=100),
        Profile("serving-smoke", "mixed-adapter batches (gathered, loop, peft; K up to 8; prefill and decode) and "
                "quantized bases on the tiny model: about a minute on a CPU (peft cells need the hf extra, "
                "quantized ones the quant extra)",
                model="tiny", dtype="float32", needs_gpu=False, rounds=30, warmup=3, make_cells=_serving_smoke,
                max_rounds=100),
        Profile("serving", "mixed-adapter batches (K up to 64, batch 1-32, prefill and decode) on gpt2-medium and "
                "Llama-3-8B shapes, quantized bases with torchao and bitsandbytes (GPU, needs the hf and quant extras)",
                model="gpt2-medium", dtype="float16", needs_gpu=True, rounds=30, warmup=10, make_cells=_serving,
                max_rounds=100),
        Profile("hf-modern", "Llama-3-8B and Qwen2-7B layer shapes (4 layers at full width) on transformers + peft "
                "(GPU, needs the hf extra)",
                model="llama-3-8b", dtype="bfloat16", needs_gpu=True, rounds=30, warmup=10, make_cells=_hf_modern,
                max_rounds=100),
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


def names_field(expr: str | None, name: str) -> bool:
    """Whether a selection expression mentions cell field ``name`` (it is checked by compile_selection first)."""
    if not expr:
        return False
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(ast.parse(expr, mode="eval")))


MAX_HINTED_VALUES = 12  # values of a field listed when a selection matches nothing


def no_match_message(profile: Profile, cells: Iterable[Cell], expr: str) -> str:
    """Why ``expr`` picked nothing, with the values the profile's cells have for each field the expression names
    (``adapter == 'LoRA'`` → "adapter: none, houlsby, …, lora"): the one message of ``perfsuite run`` and ``cells``."""
    cells = list(cells)
    named = [f for f in _CELL_FIELDS if names_field(expr, f)]
    hints = []
    for f in named:
        values = sorted({getattr(c, f) for c in cells}, key=lambda v: (v is None, str(v)))
        shown = ", ".join("None" if v is None else str(v) for v in values[:MAX_HINTED_VALUES])
        hints.append(f"{f}: {shown}" + (f" and {len(values) - MAX_HINTED_VALUES} more" if len(values) > MAX_HINTED_VALUES else ""))
    return (f"cell selection {expr!r} matches none of the cells of profile {profile.name!r}"
            + (f"; its cells have {'; '.join(hints)}" if hints else "")
            + f" (list them with: perfsuite cells --profile {profile.name})")


def selected_cells(profile: Profile, expr: str | None, *, device: str, dtype: str | None = None) -> list[Cell]:
    """A profile's cells that ``expr`` picks, its opt-in modes included when ``expr`` names ``mode``."""
    return select(profile.cells(device=device, dtype=dtype, all_modes=names_field(expr, "mode")), expr)


def select(cells: Iterable[Cell], expr: str | None) -> list[Cell]:
    """The cells ``expr`` picks. Cells in a non-eager mode are opt-in: kept only when ``expr`` names ``mode``
    (e.g. ``mode == 'compile'``), so a profile's default run, or a selection by adapter, stays eager."""
    cells = list(cells)
    pred = compile_selection(expr) if expr else (lambda c: True)
    opted_in = names_field(expr, "mode")
    return [c for c in cells if (opted_in or c.mode == DEFAULT_MODE) and pred(c)]
