import pytest
import torch

from perfsuite.models.model import PRESETS, build_model, get_config, truncate_cache


def test_presets_have_the_papers_dimensions():
    cfg = PRESETS["gpt2-medium"]
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_inner, cfg.vocab_size) == (24, 1024, 16, 4096, 50257)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'gpt3'"):
        get_config("gpt3")


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = build_model("tiny", seed=1), build_model("tiny", seed=1), build_model("tiny", seed=2)
    assert torch.equal(a.h[0].attn.c_attn.weight, b.h[0].attn.c_attn.weight)
    assert not torch.equal(a.h[0].attn.c_attn.weight, c.h[0].attn.c_attn.weight)


def test_forward_shapes_and_cache():
    model = build_model("tiny")
    idx = torch.randint(0, model.config.vocab_size, (3, 7))
    logits, cache = model(idx)
    assert logits.shape == (3, 7, model.config.vocab_size)
    assert len(cache) == model.config.n_layer
    assert cache[0][0].shape == (3, model.config.n_head, 7, model.config.head_dim)


@torch.inference_mode()
def test_incremental_decoding_matches_full_forward():
    """Token-by-token with the KV cache, and a multi-token chunk after a cache, give the full pass's logits."""
    model = build_model("tiny", seed=3, dtype=torch.float64)
    idx = torch.randint(0, model.config.vocab_size, (2, 12))
    full, _ = model(idx)
    logits, cache = model(idx[:, :5])
    steps = [logits]
    for t in range(5, 9):
        step, cache = model(idx[:, t : t + 1], cache)
        steps.append(step)
    chunk, cache = model(idx[:, 9:], cache)  # several new tokens after a cache: bottom-right causal mask
    steps.append(chunk)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@torch.inference_mode()
def test_truncate_cache_rolls_back():
    model = build_model("tiny", dtype=torch.float64)
    idx = torch.randint(0, model.config.vocab_size, (1, 10))
    _, cache = model(idx)
    rolled = truncate_cache(cache, 6)
    nxt, _ = model(idx[:, 6:7], rolled)
    full, _ = model(idx[:, :7])
    torch.testing.assert_close(nxt[:, -1], full[:, -1])


def test_too_long_sequence_is_refused():
    model = build_model("tiny")
    with pytest.raises(ValueError, match="longer than n_positions"):
        model(torch.zeros(1, model.config.n_positions + 1, dtype=torch.long))
