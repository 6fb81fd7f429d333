"""Machine identity: two machines never share a fingerprint; GPU fields come from the device, never guessed."""

from types import SimpleNamespace

import pytest
import synthetic as syn

from perfsuite.measure import machine
from perfsuite.measure.machine import Fingerprint, describe_cpu, driver_version, gpu_identity, host_id

MILAN = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1

processor\t: 1
vendor_id\t: AuthenticAMD
"""
GENOA = MILAN.replace("model\t\t: 1", "model\t\t: 17").replace("7B13", "9B14")


def test_the_cpu_is_vendor_family_model_stepping_and_name():
    assert describe_cpu(MILAN, "x") == "AuthenticAMD family 25 model 1 stepping 1: AMD EPYC 7B13"
    assert describe_cpu(GENOA, "x") != describe_cpu(MILAN, "x")  # both "AMD EPYC": told apart
    assert describe_cpu("Model\t: Raspberry Pi 5\n", "aarch64") == "Raspberry Pi 5"
    assert describe_cpu("", "aarch64") == "aarch64"


def test_the_live_identity_is_complete_on_this_cpu():
    env = machine.machine_env("cpu")
    assert env["cpu"] and env["cpu_isa"] and env["cpu_cores"] >= 1 and env["host"]
    assert env["gpu"] is None and env["gpu_driver"] is None  # never faked on a CPU
    assert env["torch_version"] and env["cuda_version"] is None


def test_host_is_the_machine_id_when_set_else_name_and_boot(monkeypatch):
    monkeypatch.setenv(machine.MACHINE_ID_ENV, "gpu-pool-h100")
    assert host_id() == "gpu-pool-h100"
    monkeypatch.delenv(machine.MACHINE_ID_ENV)
    assert host_id().startswith(machine.socket.gethostname())


class FakeNVML:
    def __init__(self, version=b"550.54.15", fail=False):
        self.version, self.fail = version, fail

    def nvmlInit(self):
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlSystemGetDriverVersion(self):
        return self.version


def test_driver_version_from_nvml_or_none():
    assert driver_version(FakeNVML()) == "550.54.15"
    assert driver_version(FakeNVML("555.42")) == "555.42"
    assert driver_version(FakeNVML(fail=True)) is None


def test_gpu_identity_from_the_device_properties(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                            total_memory=85_045_870_592)
    import torch

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    assert gpu_identity(nvml=FakeNVML()) == {"gpu": "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB",
                                             "gpu_driver": "550.54.15"}


def test_fingerprints_differ_in_any_field_and_say_how():
    a = Fingerprint.of(syn.env(), syn.cell())
    assert a == Fingerprint.of(syn.env(), syn.cell(batch=4))  # the same machine and setup for every cell
    for other in (syn.env(host="vm#boot-2"), syn.env(cpu="AuthenticAMD family 25 model 1 stepping 1: EPYC"),
                  syn.env(threads=2), syn.env(torch="2.14.1")):
        b = Fingerprint.of(other, syn.cell())
        assert b != a and len(a.differences(b)) == 1 and a.short_id() != b.short_id()
    assert Fingerprint.of(syn.env(), syn.cell(dtype="float16")).setup == ("cpu", "float16", "tiny")
    assert a.differences(a) == [] and a.short_id() == Fingerprint.from_dict(a.to_dict()).short_id()
    assert "Test CPU (AVX2) on host host-a#boot-0001, torch 2.13.0+cpu, float32, model tiny, 1 thread" in a.describe()
    with pytest.raises(ValueError, match="fingerprint lacks dtype"):
        Fingerprint.from_dict({"device": "cpu", "model": "tiny"})


def test_precision_switches_are_pinned_recorded_and_in_a_gpus_fingerprint():
    import torch

    from perfsuite.cells.grid import Cell
    from perfsuite.measure.machine import PRECISION_PINS, Fingerprint, machine_env

    torch.backends.cuda.matmul.allow_tf32 = True  # left set by someone else
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    try:
        env = machine_env("cpu")
        assert env["precision_flags"] == PRECISION_PINS and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    cpu = Fingerprint.of(env, Cell("latency", "none", 0, batch=1, seq_len=8, device="cpu"))
    assert cpu.precision is None and "precision" not in cpu.to_dict()  # a CPU's fingerprint as before
    gpu = Fingerprint.of(env, Cell("latency", "none", 0, batch=1, seq_len=8, device="cuda"))
    other = Fingerprint.of(env | {"precision_flags": env["precision_flags"] | {"matmul_allow_tf32": True}},
                           Cell("latency", "none", 0, batch=1, seq_len=8, device="cuda"))
    assert gpu.precision and "matmul_allow_tf32=False" in gpu.precision
    assert gpu != other and any(d.startswith("precision:") for d in gpu.differences(other))
    assert Fingerprint.from_dict(gpu.to_dict()) == gpu and Fingerprint.from_dict(cpu.to_dict()) == cpu
