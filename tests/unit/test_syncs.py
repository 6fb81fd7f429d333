"""Host syncs counted on the CPU: what would make the host wait for a GPU, in every timed region's budget."""

import pytest
import torch

from perfsuite.adapters import ADAPTERS, attach
from perfsuite.model import build_model
from perfsuite.syncs import count_host_syncs
from perfsuite.decoding import Schedule, decode_plain, decode_verified, device_ints
from perfsuite.workloads.recompute import untied_head

X = torch.arange(6)


@pytest.mark.parametrize("fn, kind", [
    (lambda: X[0].item(), "read_back"), (lambda: int(X[1]), "read_back"), (lambda: bool(X[2] > 1), "read_back"),
    (lambda: X.tolist(), "tolist"), (lambda: X.nonzero(), "data_dependent_shape"),
    (lambda: X[X > 2], "data_dependent_shape"), (lambda: torch.tensor([1, 2, 3]), "host_to_device"),
    (lambda: X[[0, 1]], "host_to_device"),
])
def test_each_kind_of_sync_is_counted(fn, kind):
    assert count_host_syncs(fn) == {kind: 1}


@pytest.mark.parametrize("fn", [lambda: X.clone().__setitem__(0, 5), lambda: device_ints([3, 1, 4], X.device),
                                lambda: torch.tensor([], dtype=torch.float32),  # transformers' lazy cache start
                                lambda: torch.arange(4) * 2, lambda: X.argmax(), lambda: X.gather(0, X[:2])])
def test_device_work_and_scalar_fills_are_not_syncs(fn):
    assert count_host_syncs(fn) == {}


def test_the_counter_restores_tolist():
    original = torch.Tensor.tolist
    count_host_syncs(lambda: X.tolist())
    assert torch.Tensor.tolist is original and X.tolist() == [0, 1, 2, 3, 4, 5]


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
