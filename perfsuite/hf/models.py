"""transformers' GPT-2 for hf cells: built from the reference model's weights (or loaded from a checkpoint), wrapped
so the workloads use it as they use the reference model, and cached between cells like the reference's.

Random weights are the reference model's own (same preset, same seed), converted to the Hugging Face layout, so
the ``ref`` and ``hf`` plain models of a cell compute the same function: their times compare like with like.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from perfsuite.cells.grid import MODERN_MODELS
from perfsuite.models.caches import LastAdapted, torch_dtype
from perfsuite.models.checkpoint import config_to_hf, hf_state_dict
from perfsuite.errors import PerfsuiteError
from perfsuite.hf.facade import ModelFacade
from perfsuite.hf.adapters import attach_hf
from perfsuite.models.model import GPT2Config


def hf_config(cfg: GPT2Config):
    """transformers' GPT2Config for the reference config (dropouts 0, tanh GELU, tied head)."""
    import transformers

    return transformers.GPT2Config.from_dict(config_to_hf(cfg))


def hf_model_from_reference(model):
    """A ``GPT2LMHeadModel`` holding the reference ``model``'s weights (float32, CPU, eval mode)."""
    import transformers

    core = transformers.GPT2LMHeadModel(hf_config(model.config))
    state = {k: v.detach().to(device="cpu", dtype=torch.float32) for k, v in hf_state_dict(model).items()}
    missing, unexpected = core.load_state_dict(state, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise PerfsuiteError(f"reference → transformers weights: missing {missing}, unexpected {unexpected}")
    core.tie_weights()
    return core.eval()


def hf_model_from_checkpoint(path):
    """``GPT2LMHeadModel.from_pretrained`` of a local folder (float32, CPU, eval mode); never downloads."""
    import transformers
    from transformers.utils import logging

    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a benchmark's output
    try:
        return transformers.GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True).eval()
    finally:
        if bar:
            logging.enable_progress_bar()


class _BlockView:
    """A transformers GPT2Block under the reference Block's names (what the recompute decoder calls)."""

    def __init__(self, block, n_head: int):
        self.ln_1, self.ln_2, self.mlp = block.ln_1, block.ln_2, block.mlp
        self.attn = SimpleNamespace(c_attn=block.attn.c_attn, c_proj=block.attn.c_proj, n_head=n_head)

    def after_attention(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = x + a  # as GPT2Block.forward: residual adds around attention and MLP (dropouts are off in eval)
        return x + self.mlp(self.ln_2(x))


class HFGPT2(ModelFacade):
    """A transformers GPT-2 — plain, a PeftModel, or merged — as the workloads use a model.

    Calling it runs transformers' (and peft's) own forward, ``model(input_ids=idx)``: what latency cells time.
    Its attributes give the same modules under the reference model's names — ``config`` (perfsuite's
    GPT2Config), ``wte``, ``wpe``, ``h`` (blocks with ``ln_1``, ``attn.c_attn``, ``attn.c_proj``,
    ``after_attention``), ``ln_f``, ``lm_head`` — so the recompute workload's ragged decoder drives
    transformers' layers with peft's adapters inside them (its attention and KV cache are perfsuite's).
    """

    def __init__(self, model, config: GPT2Config, *, adapterhub: bool = False):
        self.model = model
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # the GPT2LMHeadModel
        t = core.transformer
        self.config = config
        self.wte, self.wpe, self.ln_f, self.lm_head = t.wte, t.wpe, t.ln_f, core.lm_head
        self._blocks = t.h
        self._adapterhub = adapterhub

    @property
    def h(self) -> list[_BlockView]:
        if self._adapterhub:  # AdapterHub's bottlenecks live inside GPT2Block.forward, which the view bypasses
            raise PerfsuiteError("recompute cells cannot run AdapterHub adapters (the ragged decoder would skip them)")
        return [_BlockView(b, self.config.n_head) for b in self._blocks]

    def __call__(self, idx: torch.Tensor):
        return self.model(input_ids=idx)


class HFModelCache(LastAdapted):
    """The hf twin of :class:`perfsuite.workloads.context.ModelCache`, same methods: one plain model per
    (preset or checkpoint, dtype, device), and the last adapted copy."""

    def __init__(self, ref):
        super().__init__()
        self.ref = ref  # the session's ModelCache: its seed, its checkpoint, its plain models' weights

    def base(self, preset: str, dtype: str, device: str):
        """The plain model: a GPT-2 (:class:`HFGPT2`), or a Llama/Qwen2/Mistral shape (perfsuite.hf.families)."""
        key = (preset, dtype, device)
        if key not in self._base and preset in MODERN_MODELS:
            from perfsuite.hf.families import HFCausalLM, build_family_model, family_dims

            core = build_family_model(preset, seed=self.ref.seed, dtype=torch_dtype(dtype), device=device)
            self._base[key] = HFCausalLM(core, family_dims(preset))
        if key not in self._base:
            ckpt = self.ref.checkpoint if self.ref.trained(preset) else None
            if ckpt is not None:
                core, config = hf_model_from_checkpoint(ckpt.path), ckpt.config
            else:
                ref = self.ref.base(preset, dtype, device)
                core, config = hf_model_from_reference(ref), ref.config
            self._base[key] = HFGPT2(core.to(device=device, dtype=torch_dtype(dtype)), config)
        return self._base[key]

    def build_adapted(self, preset: str, dtype: str, device: str, adapter: str, rank: int) -> HFGPT2:
        """A new adapted model (not cached): a deep copy of the plain model per adapter (peft's merge writes into
        the weights, so they cannot be shared as the reference's are); the plain model itself for r = 0."""
        from perfsuite.hf import ADAPTERHUB_ADAPTERS

        base = self.base(preset, dtype, device)
        if rank == 0 or adapter == "none":
            return base
        model = attach_hf(base.model, adapter, rank, seed=self.ref.seed + 1)
        if preset in MODERN_MODELS:
            from perfsuite.hf.families import HFCausalLM

            return HFCausalLM(model, base.config)
        return HFGPT2(model, base.config, adapterhub=adapter in ADAPTERHUB_ADAPTERS)

    def trained(self, preset: str) -> bool:
        return self.ref.trained(preset)

