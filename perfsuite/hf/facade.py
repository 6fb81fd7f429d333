"""What perfsuite's workloads ask of a model, answered for a wrapped transformers model: both hf wrappers
(:class:`perfsuite.hf.models.HFGPT2` and :class:`perfsuite.hf.families.HFCausalLM`) keep it in ``self.model``."""

from __future__ import annotations


class ModelFacade:
    """``eval()``, ``parameters()`` and ``buffers()`` of the wrapped ``self.model``, as the reference GPT2 has them."""

    model: object

    def eval(self):
        self.model.eval()
        return self

    def parameters(self):
        return self.model.parameters()

    def buffers(self):
        return self.model.buffers()
