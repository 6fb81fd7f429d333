"""Every adapter design the suite measures, in one registry.

Rank ``r`` is the bottleneck width (the LoRA rank); r = 0 is the plain model.
``attach(model, name, rank)`` changes a :class:`~perfsuite.models.model.GPT2` in place
and returns it. Adapter weights are drawn from ``seed``; ``init="zero"`` gives the
identity initialisations of the papers (output equal to the base model), while
the default ``"random"`` keeps every weight non-zero so that timing never runs on
zeros.

Over 350 lines on purpose: every adapter design sits beside the others in one registry, so a reader compares
Houlsby, Lin, Pfeiffer, parallel, Spectral-r and LoRA in one sitting, as the papers' tables do.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils.weak
from torch import nn

from perfsuite.errors import PerfsuiteError
from perfsuite.models.model import GPT2

INIT_STD = 0.02  # std of the random initialisation of adapter weights


class UnknownAdapterError(PerfsuiteError, ValueError):
    pass


class Bottleneck(nn.Module):
    """h + up(act(down(h))): the bottleneck adapter of Houlsby et al. (2019), optionally after a LayerNorm."""

    is_adapter = True

    def __init__(self, d: int, r: int, *, layernorm: bool = False, residual: bool = True):
        super().__init__()
        self.ln = nn.LayerNorm(d) if layernorm else None
        self.down = nn.Linear(d, r)
        self.up = nn.Linear(r, d)
        self.residual = residual

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.ln(h) if self.ln is not None else h
        out = self.up(F.gelu(self.down(z), approximate="tanh"))
        return h + out if self.residual else out


class LoRAQKV(nn.Module):
    """Unmerged LoRA on W_q and W_v of GPT-2's fused ``c_attn``: h = Wx + (α/r)·B(Ax) (Hu et al. 2021, eq. 3).

    ``A`` stacks A_q and A_v (2r × d) so the down-projection is one product, as in loralib's MergedLinear.
    """

    is_adapter = True

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        d = base.in_features
        self.base = base
        self.r = r
        self.scaling = alpha / r
        # on a quantized base (integer storage) the adapter computes in the layer's compute dtype
        like = dict(dtype=_compute_dtype(base), device=base.weight.device)
        self.lora_A = nn.Parameter(torch.empty(2 * r, d, **like))
        self.lora_B_q = nn.Parameter(torch.empty(d, r, **like))
        self.lora_B_v = nn.Parameter(torch.empty(d, r, **like))

    def delta_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ΔW_q, ΔW_v) = (α/r)·B·A, each d × d."""
        a_q, a_v = self.lora_A[: self.r], self.lora_A[self.r :]
        return self.scaling * self.lora_B_q @ a_q, self.scaling * self.lora_B_v @ a_v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.base(x)
        d = self.lora_B_q.shape[0]
        z = F.linear(x, self.lora_A) * self.scaling  # (B, T, 2r)
        dq = F.linear(z[..., : self.r], self.lora_B_q)
        dv = F.linear(z[..., self.r :], self.lora_B_v)
        return torch.cat([qkv[..., :d] + dq, qkv[..., d : 2 * d], qkv[..., 2 * d :] + dv], dim=-1)


def _compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype an adapter on ``layer`` computes in: its weight's, or on a quantized layer (integer storage)
    its ``compute_dtype`` (bitsandbytes' 4-bit), else its bias's (perfsuite.workloads.quant)."""
    weight = layer.weight
    if weight.dtype.is_floating_point:
        return weight.dtype
    own = getattr(layer, "compute_dtype", None)
    bias = getattr(layer, "bias", None)
    return own if own is not None else bias.dtype if bias is not None else torch.float16


class SpectralRotation(nn.Module):
    """Spectral AdapterR (Zhang & Pilanci 2024): rotate the top-r singular vectors of W.

    With W = U S Vᵀ and orthogonal r × r rotations R_U, R_V (Cayley maps of skew matrices),
    W' = W + U_r (R_U S_r R_Vᵀ − S_r) V_rᵀ; unmerged, that is the rank-r correction
    x → V_rᵀx → M → U_r with M = R_U S_r R_Vᵀ − S_r. Applied to W_q and W_v, like LoRA.
    """

    is_adapter = True

    def __init__(self, base: nn.Linear, r: int, generator: torch.Generator, init: str):
        super().__init__()
        d = base.in_features
        self.base = base
        like = dict(dtype=base.weight.dtype, device=base.weight.device)
        if base.weight.is_meta:  # shapes only (FLOPs are counted on the meta device): no SVD of data there is not
            self.v_r = nn.Parameter(torch.empty(2 * r, d, **like), requires_grad=False)
            self.m_q, self.m_v = (nn.Parameter(torch.empty(r, r, **like)) for _ in range(2))
            self.u_q, self.u_v = (nn.Parameter(torch.empty(d, r, **like), requires_grad=False) for _ in range(2))
            self.r = r
            return
        blocks_u, blocks_v, blocks_m = [], [], []
        for u, s, vh in top_singular_vectors(base.weight, r):  # W_q and W_v inside the fused c_attn
            u_r, s_r, v_r = u[:, :r], s[:r], vh[:r].T
            if init == "zero":
                m = torch.zeros(r, r)
            else:
                m = _cayley(generator, r) @ torch.diag(s_r) @ _cayley(generator, r).T - torch.diag(s_r)
            blocks_u.append(u_r)
            blocks_v.append(v_r)
            blocks_m.append(m)
        self.v_r = nn.Parameter(torch.cat(blocks_v, dim=1).T.contiguous().to(**like), requires_grad=False)  # (2r, d)
        self.m_q = nn.Parameter(blocks_m[0].to(**like))
        self.m_v = nn.Parameter(blocks_m[1].to(**like))
        self.u_q = nn.Parameter(blocks_u[0].contiguous().to(**like), requires_grad=False)  # (d, r)
        self.u_v = nn.Parameter(blocks_u[1].contiguous().to(**like), requires_grad=False)
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.base(x)
        d = self.u_q.shape[0]
        z = F.linear(x, self.v_r)  # (B, T, 2r)
        dq = F.linear(F.linear(z[..., : self.r], self.m_q), self.u_q)
        dv = F.linear(F.linear(z[..., self.r :], self.m_v), self.u_v)
        return torch.cat([qkv[..., :d] + dq, qkv[..., d : 2 * d], qkv[..., 2 * d :] + dv], dim=-1)


SVD_KEPT_RANK = 256  # singular vectors kept per decomposed weight: every rank a grid asks for, from one SVD
_SVDS = torch.utils.weak.WeakIdKeyDictionary()  # base weight → (its version, kept rank, [(U, S, Vh) of W_q, W_v])


def top_singular_vectors(weight: torch.Tensor, r: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The fp32 CPU SVDs of W_q and W_v inside a fused c_attn ``weight`` (3d × d), truncated to at least ``r``
    singular vectors: computed once per base weight and process (a 1024 × 1024 SVD takes ~0.7 s on one core,
    and every shape group and rank of a grid attaches spectral-r to the same base weights). The cache is keyed on
    the tensor itself (weakly: it dies with its model) and its version counter (a hash of its bytes for an
    inference tensor, which has none), so a weight changed in place is decomposed again."""
    d = weight.shape[1]
    hit, version = _SVDS.get(weight), _version_of(weight)
    if hit is not None and hit[0] == version and hit[1] >= min(r, d):
        return hit[2]
    keep = min(d, max(r, SVD_KEPT_RANK))
    w = weight.detach().float().cpu()
    parts = []
    for rows in (slice(0, d), slice(2 * d, 3 * d)):
        u, s, vh = torch.linalg.svd(w[rows], full_matrices=False)
        parts.append((u[:, :keep].clone(), s[:keep].clone(), vh[:keep].clone()))
    _SVDS[weight] = (version, keep, parts)
    return parts


def _version_of(t: torch.Tensor):
    try:
        return t._version
    except RuntimeError:  # an inference tensor tracks no version: its content says whether it changed
        import hashlib

        return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _cayley(generator: torch.Generator, r: int) -> torch.Tensor:
    """A random rotation near the identity: (I − K)(I + K)⁻¹ for a small skew-symmetric K."""
    a = torch.randn(r, r, generator=generator) * INIT_STD
    k = a - a.T
    eye = torch.eye(r)
    return torch.linalg.solve(eye + k, eye - k)


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    attach: Callable[..., None]  # (model, rank, generator, init, **options) -> None
    doc: str
    trains_block_layernorms: bool = False  # fine-tunes ln_1 and ln_2 of adapted blocks (Houlsby et al.)


def _bottleneck_init(mod: Bottleneck, generator: torch.Generator, init: str) -> None:
    with torch.no_grad():
        for lin in (mod.down, mod.up):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * INIT_STD)
            lin.bias.zero_()
        if init == "zero":
            mod.up.weight.zero_()  # Houlsby's near-identity start: the adapter adds nothing


def _new_bottleneck(model: GPT2, rank: int, generator: torch.Generator, init: str, **kw) -> Bottleneck:
    p = model.wte.weight
    if p.is_meta:  # shapes only (FLOPs and ops are counted on the meta device): no values to draw
        with torch.device("meta"):
            return Bottleneck(model.config.n_embd, rank, **kw).to(dtype=p.dtype)
    mod = Bottleneck(model.config.n_embd, rank, **kw)
    _bottleneck_init(mod, generator, init)
    return mod.to(dtype=p.dtype, device=p.device)


def _attach_houlsby(model: GPT2, rank: int, generator, init, drop_layers: int = 0) -> None:
    for i, block in enumerate(model.h):
        if i < drop_layers:
            continue
        block.adapter_attn = _new_bottleneck(model, rank, generator, init)
        block.adapter_mlp = _new_bottleneck(model, rank, generator, init)


def _attach_lin(model: GPT2, rank: int, generator, init) -> None:
    for block in model.h:
        block.adapter_mlp = _new_bottleneck(model, rank, generator, init, layernorm=True)


def _attach_pfeiffer(model: GPT2, rank: int, generator, init) -> None:
    for block in model.h:
        block.adapter_mlp = _new_bottleneck(model, rank, generator, init)


def default_drop_layers(n_layer: int) -> int:
    """AdapterDrop's default: drop the lowest 5/12 of the layers (Rücklé et al. 2021 drop 5 of 12 in BERT-base)."""
    return round(n_layer * 5 / 12)


def _attach_adapterdrop(model: GPT2, rank: int, generator, init, drop_layers: int | None = None) -> None:
    n = model.config.n_layer
    drop = default_drop_layers(n) if drop_layers is None else drop_layers
    if not 0 <= drop < n:
        raise ValueError(f"adapterdrop: drop_layers={drop} must be in [0, {n})")
    _attach_houlsby(model, rank, generator, init, drop_layers=drop)


def _attach_parallel(model: GPT2, rank: int, generator, init) -> None:
    for block in model.h:
        block.parallel_mlp = _new_bottleneck(model, rank, generator, init, residual=False)


def _attach_lora(model: GPT2, rank: int, generator, init, alpha: float | None = None) -> None:
    for block in model.h:
        mod = LoRAQKV(block.attn.c_attn, rank, alpha=float(rank if alpha is None else alpha))
        if mod.lora_A.is_meta:  # shapes only: no values to draw
            block.attn.c_attn = mod
            continue
        with torch.no_grad():
            # LoRA's init (Hu et al. 2021 §4.1): A Gaussian, B zero. "random" draws B too.
            mod.lora_A.copy_(torch.randn(mod.lora_A.shape, generator=generator) / math.sqrt(mod.lora_A.shape[1]))
            for b in (mod.lora_B_q, mod.lora_B_v):
                b.copy_(torch.randn(b.shape, generator=generator) * INIT_STD if init != "zero" else torch.zeros(b.shape))
        block.attn.c_attn = mod


def _attach_lora_merged(model: GPT2, rank: int, generator, init, alpha: float | None = None) -> None:
    _attach_lora(model, rank, generator, init, alpha=alpha)
    merge_lora(model)


def merge_lora(model: GPT2) -> GPT2:
    """Fold every unmerged LoRA into its weight (W' = W + (α/r)·B·A), leaving a plain model: zero added latency.

    W' is a new tensor: the base layer, which an adapted copy may share with the plain model
    (:func:`adapted_copy`), is left as it was."""
    for block in model.h:
        mod = block.attn.c_attn
        if isinstance(mod, LoRAQKV) and mod.base.weight.is_meta:  # shapes only: merged, it is the base's shape
            block.attn.c_attn = copy.copy(mod.base)
            continue
        if isinstance(mod, LoRAQKV):
            d = mod.lora_B_q.shape[0]
            dq, dv = mod.delta_weights()
            merged = nn.Linear(mod.base.in_features, mod.base.out_features, bias=mod.base.bias is not None,
                               dtype=mod.base.weight.dtype, device=mod.base.weight.device)
            with torch.no_grad():
                merged.weight.copy_(mod.base.weight)
                merged.weight[:d] += dq.to(merged.weight.dtype)
                merged.weight[2 * d :] += dv.to(merged.weight.dtype)
                if mod.base.bias is not None:
                    merged.bias.copy_(mod.base.bias)
            block.attn.c_attn = merged
    return model


def adapted_copy(model: GPT2) -> GPT2:
    """A copy of ``model`` whose modules are new but whose weights are the same tensors: an adapter attached to it
    adds only its own weights, so every adapter of a shape can sit beside the plain model in device memory.
    Adapters never write into the base weights (``merge_lora`` makes new ones)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)


def _attach_spectral(model: GPT2, rank: int, generator, init) -> None:
    if rank > model.config.n_embd:
        raise ValueError(f"spectral-r: rank {rank} exceeds the model width {model.config.n_embd}")
    for block in model.h:
        block.attn.c_attn = SpectralRotation(block.attn.c_attn, rank, generator, init)


ADAPTERS: dict[str, AdapterSpec] = {
    s.name: s
    for s in [
        AdapterSpec("none", lambda *a, **k: None, "The plain model (r = 0)."),
        AdapterSpec("houlsby", _attach_houlsby,
                    "AdapterH (Houlsby et al. 2019): two bottleneck adapters per block, after attention and after "
                    "the MLP, each before its residual add.", trains_block_layernorms=True),
        AdapterSpec("lin", _attach_lin,
                    "AdapterL (Lin et al. 2020): one bottleneck adapter per block after the MLP, behind an extra "
                    "LayerNorm."),
        AdapterSpec("pfeiffer", _attach_pfeiffer,
                    "AdapterP (Pfeiffer et al. 2021): one bottleneck adapter per block on the MLP output."),
        AdapterSpec("adapterdrop", _attach_adapterdrop,
                    "AdapterD (Rücklé et al. 2021): Houlsby adapters with those of the lowest layers dropped "
                    "(option drop_layers, default 5/12 of the layers).", trains_block_layernorms=True),
        AdapterSpec("parallel", _attach_parallel,
                    "Parallel adapter (He et al. 2022): a bottleneck beside the MLP, fed the same input, its output "
                    "added to the MLP's."),
        AdapterSpec("spectral-r", _attach_spectral,
                    "Spectral AdapterR (Zhang & Pilanci 2024): rotates the top-r singular vectors of W_q and W_v; "
                    "unmerged, a rank-r correction through r × r matrices."),
        AdapterSpec("lora", _attach_lora,
                    "LoRA (Hu et al. 2021), unmerged, on W_q and W_v: h = Wx + (α/r)·B(Ax); option alpha "
                    "(default r)."),
        AdapterSpec("lora-merged", _attach_lora_merged,
                    "LoRA merged into W_q and W_v before inference: the same weights as the base model's shapes, "
                    "so its overhead should measure ≈ 0."),
    ]
}


def get_adapter(name: str) -> AdapterSpec:
    """A built-in adapter, or one another package contributes (:mod:`perfsuite.extensions`), as the same record."""
    if name in ADAPTERS:
        return ADAPTERS[name]
    from perfsuite.extensions import contributed_names, get_plugin

    plugin = get_plugin(name)
    if plugin is None or plugin.attach is None:
        known = [*ADAPTERS, *contributed_names("ref")]
        raise UnknownAdapterError(f"unknown adapter {name!r}; known: {', '.join(known)}")
    return AdapterSpec(plugin.name, plugin.attach, plugin.doc, trains_block_layernorms=plugin.trains_block_layernorms)


def attach(model: GPT2, name: str, rank: int, *, seed: int = 0, init: str = "random", **options) -> GPT2:
    """Add adapter ``name`` of rank ``rank`` to ``model`` in place; r = 0 (or name "none") leaves it plain."""
    spec = get_adapter(name)
    if init not in ("random", "zero"):
        raise ValueError(f"init must be 'random' or 'zero', not {init!r}")
    if rank < 0:
        raise ValueError(f"rank must be >= 0, not {rank}")
    if rank == 0 or name == "none":
        return model
    generator = torch.Generator().manual_seed(seed)
    spec.attach(model, rank, generator, init, **options)
    return model


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an adapter added (the frozen SVD bases of spectral-r are buffers-in-all-but-name and excluded)."""
    params = []
    for mod in model.modules():
        if getattr(mod, "is_adapter", False):
            base = getattr(mod, "base", None)
            base_ids = {id(p) for p in base.parameters()} if base is not None else set()
            params += [p for p in mod.parameters() if p.requires_grad and id(p) not in base_ids]
    return params


def trainable_parameter_count(model: GPT2, name: str) -> int:
    """|Θ| as the LoRA paper counts it: adapter weights plus the LayerNorms the method fine-tunes."""
    n = sum(p.numel() for p in adapter_parameters(model))  # lin's extra LayerNorm is inside its adapter
    if get_adapter(name).trains_block_layernorms:
        adapted = [b for b in model.h if b.adapter_attn is not None]
        n += sum(p.numel() for b in adapted for ln in (b.ln_1, b.ln_2) for p in ln.parameters())
    return n
