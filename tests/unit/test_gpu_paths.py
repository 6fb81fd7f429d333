"""GPU-path fixes proven through CPU seams: cuBLAS warmed before peak readings, one SVD per base weight,
a balanced order with the garbage collector off in the timed loop."""

import gc

import pytest
import torch
from fake_gpu import MIB, FakeCudaMemory

import perfsuite.measure.device as device_module
import perfsuite.measure.timing as timing
from perfsuite.measure.device import peak_memory_above
from perfsuite.measure.timing import RoundPolicy, round_robin, williams_orders


def test_the_first_peak_reading_does_not_carry_cublass_workspace(monkeypatch):
    mem = FakeCudaMemory()
    mem.install(monkeypatch)
    mem.alloc(100 * MIB)  # the resident weights

    def forward():  # a forward: 4 MiB of activations around a matmul
        mem.alloc(4 * MIB)
        mem.matmul()
        mem.free(4 * MIB)

    assert peak_memory_above(forward, "cuda") == 4 * MIB  # the first reading: no 32 MiB workspace in it
    assert peak_memory_above(forward, "cuda") == 4 * MIB
    assert mem.allocated == 132 * MIB  # the workspace was made (once), before the first reading


def test_cublas_is_warmed_once_per_device_and_never_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(device_module, "_device_matmuls", calls.append)
    monkeypatch.setattr(device_module, "_CUBLAS_WARM", set())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    for device in ("cpu", "cuda", "cuda", "cuda:1"):
        device_module.warm_cublas(device)
    assert calls == ["cuda", "cuda:1"]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_a_williams_design_balances_positions_and_predecessors(k):
    orders = williams_orders(k)
    assert len(orders) == (2 * k if k % 2 and k > 1 else k)
    for start in range(0, len(orders), k):  # every cycle of k orders is a Latin square
        block = orders[start:start + k]
        assert all(sorted(col) == list(range(k)) for col in zip(*block))
    follows = {}
    for row in orders:
        for a, b in zip(row, row[1:]):
            follows[(a, b)] = follows.get((a, b), 0) + 1
    if k > 1:  # every ordered pair adjacent, equally often: no model always follows the same predecessor
        assert len(follows) == k * (k - 1) and len(set(follows.values())) == 1


def test_the_round_robin_runs_a_balanced_order_with_the_collector_off():
    order, gc_states = [], []
    fns = {k: (lambda k=k: order.append(k) or gc_states.append(gc.isenabled())) for k in "abc"}
    assert gc.isenabled()
    samples = round_robin(fns, device="cpu", policy=RoundPolicy.fixed(6, warmup=1),
                          clock=iter([0.0] * 1000).__next__)
    assert "".join(order) == "abc" + "abc" + "bca" + "cab" + "cba" + "acb" + "bac"  # warm-up, then 2 cycles
    assert not any(gc_states) and gc.isenabled()  # off while timed, on again after
    assert all(len(v) == 6 for v in samples.values())
    predecessor = {}
    for rnd in ["abc", "bca", "cab", "cba", "acb", "bac"]:
        for a, b in zip(rnd, rnd[1:]):
            predecessor.setdefault(b, set()).add(a)
    assert all(len(p) == 2 for p in predecessor.values())  # each follows both others


def test_the_collector_is_back_on_after_a_failing_loop():
    def boom():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        round_robin({"a": boom}, device="cpu", policy=RoundPolicy.fixed(2))
    assert gc.isenabled()


def test_the_loop_reports_the_end_of_its_warm_up():
    events = []
    fns = {"a": lambda: events.append("call")}
    with timing.after_warmup(lambda: events.append("warm")):
        round_robin(fns, device="cpu", policy=RoundPolicy.fixed(2, warmup=2))
    assert events == ["call", "call", "warm", "call", "call"]
    round_robin(fns, device="cpu", policy=RoundPolicy.fixed(1))
    assert events.count("warm") == 1  # outside the block, nobody is told


def test_spectral_r_decomposes_each_base_weight_once_per_process(monkeypatch):
    import perfsuite.models.adapters as adapters
    from perfsuite.models.adapters import adapted_copy, attach
    from perfsuite.models.model import build_model

    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    base = build_model("tiny")
    per_build = 2 * base.config.n_layer  # W_q and W_v of every block
    first = attach(adapted_copy(base), "spectral-r", 4, seed=1)
    for rank in (4, 8, 2):  # more groups and ranks of the same base: no SVD more
        attach(adapted_copy(base), "spectral-r", rank, seed=1)
    assert len(calls) == per_build
    monkeypatch.setattr(adapters, "_SVDS", torch.utils.weak.WeakIdKeyDictionary())  # a fresh process, same weights
    again = attach(adapted_copy(base), "spectral-r", 4, seed=1)
    assert len(calls) == 2 * per_build
    for a, b in zip(first.h, again.h):  # the cached decomposition gives the same adapter
        assert torch.equal(a.attn.c_attn.u_q, b.attn.c_attn.u_q) and torch.equal(a.attn.c_attn.m_v, b.attn.c_attn.m_v)
    with torch.no_grad():
        base.h[0].attn.c_attn.weight.mul_(2.0)  # changed in place: decomposed again
    attach(adapted_copy(base), "spectral-r", 4, seed=1)
    assert len(calls) == 2 * per_build + 2
