"""Host syncs counted on the CPU: what would make the host wait for a GPU, in every timed region's budget."""

import pytest
import torch

from perfsuite.models.adapters import ADAPTERS, attach
from perfsuite.models.model import build_model
from perfsuite.measure.syncs import READ_BACK_METHODS, count_host_syncs
from perfsuite.models.decoding import Schedule, decode_plain, decode_verified, device_ints
from perfsuite.workloads.recompute import untied_head

X = torch.arange(6)


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


@pytest.mark.parametrize("fn, kind", [
    (lambda: X[0].item(), "read_back"), (lambda: int(X[1]), "read_back"), (lambda: bool(X[2] > 1), "read_back"),
    (lambda: torch.equal(X, X), "read_back"),  # compares on the device, then reads the answer back
    (lambda: X.tolist(), "tolist"), (lambda: X.nonzero(), "data_dependent_shape"),
    (lambda: X[X > 2], "data_dependent_shape"), (lambda: torch.tensor([1, 2, 3]), "host_to_device"),
    (lambda: _set(X, X > 2, X[:3]), "data_dependent_shape"),  # x[mask] = t: nonzero of the mask on CUDA
    (lambda: X[[0, 1]], "host_to_device"),
    (lambda: _set(X, 0, 5), "host_to_device"),  # one element from a Python scalar: select + a blocking copy_
    (lambda: torch.tensor(5), "host_to_device"),  # a 0-dim tensor from host data, copied to the device
])
def test_each_kind_of_sync_is_counted(fn, kind):
    assert count_host_syncs(fn) == {kind: 1}


def test_every_element_written_from_the_host_is_a_copy():
    def element_by_element():
        out = torch.empty(3, dtype=torch.long)
        for i, v in enumerate([3, 1, 4]):
            out[i] = v

    assert count_host_syncs(element_by_element) == {"host_to_device": 3}


@pytest.mark.parametrize("fn", [lambda: device_ints([3, 1, 4], X.device), lambda: device_ints([], X.device),
                                lambda: _set(torch.zeros(2, 3), 0, 5.0),  # a row filled: the scalar is an argument
                                lambda: _set(X, X > 2, 7),  # x[mask] = scalar: a masked fill on CUDA, no nonzero
                                lambda: _set(X, 1, X[2]),  # one element from a device scalar: a device copy
                                lambda: X.clone().index_fill_(0, X[:2], 1),
                                lambda: torch.tensor([], dtype=torch.float32),  # transformers' lazy cache start
                                lambda: torch.arange(4) * 2, lambda: X.argmax(), lambda: X.gather(0, X[:2])])
def test_device_work_and_scalar_arguments_are_not_syncs(fn):
    assert count_host_syncs(fn) == {}


def test_device_ints_gives_the_values():
    assert device_ints([3, 1, 4], X.device).tolist() == [3, 1, 4]


def test_the_counter_restores_the_methods_it_wraps():
    originals = {name: getattr(torch.Tensor, name) for name in READ_BACK_METHODS}
    count_host_syncs(lambda: X.tolist())
    assert all(getattr(torch.Tensor, name) is f for name, f in originals.items()) and X.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("fn", [lambda x: x.sum().item(), lambda x: float(x.sum()), lambda x: int(x[0]),
                                lambda x: bool(x.sum() > 1), lambda x: [0, 1][x[0]]])
def test_read_backs_under_inference_mode_are_counted_once(fn):
    """Under inference_mode a CPU tensor's .item() skips the dispatcher: the wrapped methods still see it."""
    with torch.inference_mode():
        x = torch.ones(3, dtype=torch.long)
        assert count_host_syncs(lambda: fn(x)) == {"read_back": 1}
    assert count_host_syncs(lambda: fn(X)) == {"read_back": 1}  # outside it: once, not again for the dispatch


def test_tolist_counts_once_not_again_for_its_copy_to_the_cpu(monkeypatch):
    """On CUDA, ``tolist`` copies to the CPU inside (a cross-device ``_to_copy`` the dispatcher sees): one sync."""
    original = torch.Tensor.tolist

    def cuda_like_tolist(t, *args, **kwargs):
        t.to("meta")  # stands in for CUDA's device-to-CPU copy: a cross-device copy the counter would count
        return original(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "tolist", cuda_like_tolist)
    assert count_host_syncs(lambda: X.to("meta")) == {"device_copy": 1}  # the seam is seen outside tolist
    assert count_host_syncs(lambda: X.tolist()) == {"tolist": 1}


@pytest.mark.parametrize("name", ADAPTERS)
def test_a_latency_forward_never_syncs(name):
    model = attach(build_model("tiny"), name, 4)
    tokens = torch.randint(0, 512, (2, 16))
    with torch.inference_mode():
        assert count_host_syncs(lambda: model(tokens)) == {}


@pytest.mark.parametrize("window", [1, 4, 8])
def test_verified_decoding_reads_back_once_per_window_and_plain_decoding_never(window):
    model = build_model("tiny", dtype=torch.bfloat16)
    head = untied_head(model)
    prompts = [torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(n)) for n in (16, 9, 23)]
    schedule = Schedule(window=window, context=23 + 24, token_budget=64)
    result = []
    counts = count_host_syncs(lambda: result.append(decode_verified(model, prompts, 24, schedule, head=head,
                                                                     inject=[(1, 5)])))
    assert counts == {"tolist": result[0].windows}  # one read-back per verified window, nothing else
    assert count_host_syncs(lambda: decode_plain(model, prompts, 24, head=head)) == {}
