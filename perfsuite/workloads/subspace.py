"""Subspace similarity of trained LoRA adapters across seeds and ranks (LoRA paper §7.2, Figs. 3, 4, 6, 7).

The task has real low-rank structure: a *teacher* differs from the reference model by
a planted update of W_q and of W_v in every layer, ΔW* = U diag(s) Vᵀ of rank
``planted_rank`` with distinct singular values (each half the previous). A *student*
(the reference model plus LoRA on W_q and W_v, with LoRA's own init: A Gaussian,
B zero) is trained with Adam to reproduce the teacher's q and v projections at every
layer, on fresh random tokens each step (intermediate-layer distillation). Distilling
the logits instead does not work on this random-weight model: its attention is near
uniform, so the logits barely depend on W_q and ΔW_q is never learned (measured: φ of
the q factors across seeds stays near chance while the logit loss falls to 1.5 %).
The loss is divided by that of the untrained student (the plain model), so it starts
at 1 and ``final_loss`` is the fraction of the planted change not yet learned.

Each cell (r_a, r_b) trains four students: ranks r_a and r_b, seeds 0 and 1, all with
LoRA's α = r_a (the paper sets α to the first r it tries), so the scaling α/r shrinks at
the larger rank. A run's seed draws its LoRA init and its batches; the init generator
also mixes in the rank, so runs at different ranks share no initial rows. Then, per layer and per matrix
(``"q"`` and ``"v"``: the rows of LoRA's stacked A that feed ΔW_q and ΔW_v):

- ``seed``: A_r seed 0 vs A′_r seed 1, for r_a and for r_b (paper Fig. 4);
- ``rank``: A_{r_a} seed 0 vs A_{r_b} seed 0 (paper Fig. 3);
- ``control``: two Gaussian matrices of shape max(r_a, r_b) × d (paper Fig. 4, right).

Training always runs in float32 whatever the cell's dtype (mixed precision would only
add noise to an analysis), the φ analysis in float64; pytest-benchmark times the
analysis (the SVDs and grids of every comparison), and ``train_time_s`` the training.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from perfsuite.models.adapters import LoRAQKV, adapter_parameters, attach
from perfsuite.cells.grid import Cell
from perfsuite.measure.machine import machine_env
from perfsuite.models.model import GPT2
from perfsuite.formats.record import CellRecord, model_dims
from perfsuite.subspace.phi import PhiGrid, compare, gaussian_pair
from perfsuite.measure.bench_bridge import record_rounds
from perfsuite.measure.device import cpu_threads
from perfsuite.measure.timing import round_robin
from perfsuite.workloads.context import CellContext

SEEDS = (0, 1)  # the two seeds of every rank
TASK_SEED = 20210617  # draws the planted update and the evaluation batch (LoRA paper's arXiv date)
CONTROL_SEED = 7  # draws the Gaussian control


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 80  # Adam steps per student
    batch: int = 8  # sequences per step
    seq_len: int = 32  # tokens per sequence
    lr: float = 1e-2  # Adam learning rate (LoRA factors only)
    alpha: float | None = None  # LoRA's α (scaling α/r); None: the cell's smaller rank, as the paper sets α
    #                             to the first r it tries and keeps it
    planted_rank: int = 2  # rank of the teacher's update ΔW* of W_q and of W_v
    planted_scale: float = 4.0  # largest singular value of ΔW*, in units of ‖W_q‖₂ of layer 0
    eval_batch: int = 16  # sequences of the fixed batch the final loss is measured on
    cpu_threads: int | None = None  # torch CPU threads while training on a CPU; None: leave torch's setting


# Per model preset: the smoke profile trains "tiny" on a CPU in a few seconds; GPU presets train longer.
TRAIN_CONFIGS: dict[str, TrainConfig] = {
    # One thread: 64-wide matmuls gain nothing from more, and threads thrash when the cores are shared
    # (measured on 2 busy cores: 5 s on one thread, 15 s on two).
    "tiny": TrainConfig(cpu_threads=1),
    # Checked on a CPU stand-in (2 layers of d = 768, ranks 8 and 64, but batch 4 × 16): φ(1,1) across seeds
    # 0.81-0.96 per layer and matrix, φ(64, 64) = 0.13, final loss ≈ 0.035. Not yet run on a GPU.
    "gpt2": TrainConfig(steps=300, batch=16, seq_len=128, lr=5e-3, planted_rank=4),
    "gpt2-medium": TrainConfig(steps=300, batch=16, seq_len=128, lr=5e-3, planted_rank=4),
}


def train_config(preset: str) -> TrainConfig:
    return TRAIN_CONFIGS.get(preset, TRAIN_CONFIGS["gpt2-medium"])


@dataclass(frozen=True)
class TrainedLoRA:
    """One student's learned A factors, per layer: a_q[ℓ] and a_v[ℓ], each (r, d) float32 on the CPU."""

    rank: int
    seed: int
    a_q: tuple[torch.Tensor, ...]
    a_v: tuple[torch.Tensor, ...]
    initial_loss: float
    final_loss: float
    train_time_s: float

    def a(self, matrix: str, layer: int) -> torch.Tensor:
        return {"q": self.a_q, "v": self.a_v}[matrix][layer]


def _orthonormal(d: int, k: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q


def planted_teacher(base: GPT2, cfg: TrainConfig) -> GPT2:
    """A copy of ``base`` with W_q += ΔW*_q and W_v += ΔW*_v in every layer, each of rank ``planted_rank``."""
    gen = torch.Generator().manual_seed(TASK_SEED)
    teacher = copy.deepcopy(base).requires_grad_(False)
    d = base.config.n_embd
    unit = torch.linalg.matrix_norm(base.h[0].attn.c_attn.weight[:d].double(), ord=2).item()  # a float: s stays on the CPU
    s = cfg.planted_scale * unit * 0.5 ** torch.arange(cfg.planted_rank, dtype=torch.float64)
    with torch.no_grad():
        for block in teacher.h:
            w = block.attn.c_attn.weight  # (3d, d): rows of W_q, W_k, W_v
            for rows in (slice(0, d), slice(2 * d, 3 * d)):
                u, v = _orthonormal(d, cfg.planted_rank, gen), _orthonormal(d, cfg.planted_rank, gen)
                w[rows] += ((u * s) @ v.T).to(dtype=w.dtype, device=w.device)
    return teacher


def _init_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _qv_outputs(model: GPT2, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The q and v projections of every layer for ``tokens``: [q_0, v_0, q_1, v_1, …], each (B, T, d)."""
    d = model.config.n_embd
    outs: list[torch.Tensor] = []

    def keep(module, inputs, output):  # output: (B, T, 3d) = q | k | v
        outs.extend((output[..., :d], output[..., 2 * d :]))

    hooks = [block.attn.c_attn.register_forward_hook(keep) for block in model.h]
    try:
        model(tokens)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _distill_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.mse_loss(s, t) for s, t in zip(student, teacher))


class PlantedTask:
    """The teacher, and a fixed evaluation batch with its targets; random tokens are the inputs."""

    def __init__(self, base: GPT2, cfg: TrainConfig):
        self.base, self.cfg = base, cfg
        self.teacher = planted_teacher(base, cfg)
        self.device = base.wte.weight.device
        gen = torch.Generator().manual_seed(TASK_SEED + 1)
        self.eval_tokens = self.tokens(cfg.eval_batch, gen)
        with torch.no_grad():
            self.eval_targets = _qv_outputs(self.teacher, self.eval_tokens)
            # The loss unit: the distance of the plain model (the untrained student, B = 0) from the teacher.
            self.unit = _distill_loss(_qv_outputs(base, self.eval_tokens), self.eval_targets).item()

    def tokens(self, n: int, generator: torch.Generator) -> torch.Tensor:
        shape = (n, self.cfg.seq_len)
        return torch.randint(0, self.base.config.vocab_size, shape, generator=generator).to(self.device)

    def eval_loss(self, student: GPT2) -> float:
        with torch.no_grad():
            return _distill_loss(_qv_outputs(student, self.eval_tokens), self.eval_targets).item() / self.unit


def train_lora(task: PlantedTask, rank: int, seed: int, alpha: float) -> TrainedLoRA:
    """Train LoRA of rank ``rank`` on W_q and W_v of a copy of the reference model to match the teacher."""
    cfg = task.cfg
    student = copy.deepcopy(task.base).requires_grad_(False)
    attach(student, "lora", rank, seed=_init_seed(seed, rank), init="zero", alpha=alpha)
    opt = torch.optim.Adam(adapter_parameters(student), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    initial = task.eval_loss(student)
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        tokens = task.tokens(cfg.batch, gen)
        with torch.no_grad():
            targets = _qv_outputs(task.teacher, tokens)
        loss = _distill_loss(_qv_outputs(student, tokens), targets) / task.unit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if task.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    mods = [block.attn.c_attn for block in student.h]
    if not all(isinstance(m, LoRAQKV) for m in mods):
        raise TypeError("expected LoRAQKV in every block's c_attn")
    a_q = tuple(m.lora_A[: m.r].detach().float().cpu().clone() for m in mods)
    a_v = tuple(m.lora_A[m.r :].detach().float().cpu().clone() for m in mods)
    return TrainedLoRA(rank, seed, a_q, a_v, initial, task.eval_loss(student), elapsed)


def train_students(base: GPT2, ranks: tuple[int, ...], cfg: TrainConfig) -> dict[tuple[int, int], TrainedLoRA]:
    """Every (rank, seed) student of a cell, trained against one planted teacher."""
    alpha = cfg.alpha if cfg.alpha is not None else min(ranks)
    on_cpu = base.wte.weight.device.type == "cpu"
    with cpu_threads(cfg.cpu_threads if on_cpu else None):
        task = PlantedTask(base, cfg)
        return {(r, s): train_lora(task, r, s, alpha) for r in dict.fromkeys(ranks) for s in SEEDS}


def _label(r_a: int, s_a: int, r_b: int, s_b: int) -> str:
    prime = "'" if r_a == r_b else ""
    return f"A_r={r_a} seed {s_a} vs A{prime}_r={r_b} seed {s_b}"


def analyse(students: dict[tuple[int, int], TrainedLoRA], r_a: int, r_b: int, n_layer: int,
            d: int) -> list[PhiGrid]:
    """Every comparison of a cell, in the order: per layer, per matrix (q, v): seed r_a, seed r_b, rank, control."""
    s0, s1 = SEEDS
    r_c = max(r_a, r_b)
    out = []
    for layer in range(n_layer):
        for matrix in ("q", "v"):
            def a(r, s):
                return students[(r, s)].a(matrix, layer)

            out.append(compare(layer, matrix, "seed", _label(r_a, s0, r_a, s1), a(r_a, s0), a(r_a, s1)))
            if r_b != r_a:
                out.append(compare(layer, matrix, "seed", _label(r_b, s0, r_b, s1), a(r_b, s0), a(r_b, s1)))
                out.append(compare(layer, matrix, "rank", _label(r_a, s0, r_b, s0), a(r_a, s0), a(r_b, s0)))
            g_a, g_b = gaussian_pair(r_c, r_c, d, seed=(CONTROL_SEED, layer, ("q", "v").index(matrix)))
            out.append(compare(layer, matrix, "control", f"Gaussian {r_c}×{d} vs Gaussian {r_c}×{d}", g_a, g_b))
    return out


def run_subspace_cell(benchmark, cell: Cell, ctx: CellContext, *, config: TrainConfig | None = None) -> CellRecord:
    """Train the cell's four students, time the φ analysis (recorded with pytest-benchmark); returns its record."""
    if cell.rank_b is None:
        raise ValueError(f"{cell.id}: a subspace cell needs rank_b")
    cfg = config or train_config(cell.model)
    base = ctx.models.base(cell.model, "float32", cell.device)
    students = train_students(base, (cell.rank, cell.rank_b), cfg)
    n_layer, d = base.config.n_layer, base.config.n_embd

    def analysis() -> list[PhiGrid]:
        return analyse(students, cell.rank, cell.rank_b, n_layer, d)

    comparisons = analysis()
    samples = round_robin({"analysis": analysis}, device=cell.device, policy=ctx.policy(cell))["analysis"]
    metrics: dict = {"subspace": [c.to_dict() for c in comparisons], "rounds": len(samples),
                     # each φ grid's mean, in order: the cell's deterministic outcome, kept by baselines and
                     # compared exactly (perfsuite.compare.outcomes)
                     "phi_means": [round(float(c.phi.mean()), 9) for c in comparisons]}
    if record_rounds(benchmark, samples):
        metrics["time_ms"] = statistics.median(samples)
        metrics["samples_ms"] = samples  # so compare can test the analysis time
    runs = sorted(students.values(), key=lambda t: (t.rank, t.seed))
    metrics |= {
        "train_time_s": sum(t.train_time_s for t in runs),
        "final_loss": max(t.final_loss for t in runs),
        "train_dtype": "float32",
        "train_config": asdict(cfg),
        "train_runs": [{"rank": t.rank, "seed": t.seed, "initial_loss": t.initial_loss,
                        "final_loss": t.final_loss, "train_time_s": t.train_time_s} for t in runs],
    }
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(base), metrics=metrics)
