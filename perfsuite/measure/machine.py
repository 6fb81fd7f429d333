"""Machine identity: what a measurement was made on, precise enough that two different machines never share it.

Two VMs that both report "AMD EPYC" ran the same forward pass in 0.30 ms and 1.03 ms, and two VMs of one
CPU model still differ in load, clocks and neighbours. So a cell's ``env`` records, and a
:class:`Fingerprint` compares:

* the machine — the host (``PERFSUITE_MACHINE_ID`` when set, else the host name and this boot: VMs cloned
  from one image share a host name, and a machine rebooted may come back on other hardware), the CPU (vendor,
  family/model/stepping, model name), the ISA level torch dispatches to
  (``torch.backends.cpu.get_cpu_capability()``), the cores this process may use; on a GPU its name,
  compute capability, SM count, memory and driver;
* the software — torch, CUDA and cuDNN versions (and, for cells that use them, other libraries);
* the setup — device kind, dtype, model, torch threads (from the cell and the run).

Only a baseline with the same fingerprint can fail a run (:mod:`perfsuite.compare.verdicts`). A pool of
identical runners that should share baselines, or a machine whose baselines should outlive a reboot, sets
``PERFSUITE_MACHINE_ID`` (for a pool: the same on all of them, with the baseline's runs recorded across the
pool, so its spread includes the runners' differences).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

MACHINE_ID_ENV = "PERFSUITE_MACHINE_ID"


def describe_cpu(cpuinfo: str, fallback: str) -> str:
    """``vendor family F model M stepping S: model name`` from /proc/cpuinfo's first processor (x86); the model
    name alone, or ``fallback``, where those fields are absent (other architectures, other systems)."""
    fields_: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields_.setdefault(key.strip(), value.strip())
    name = fields_.get("model name") or fields_.get("Model") or fallback
    if "vendor_id" not in fields_:
        return name
    return (f"{fields_['vendor_id']} family {fields_.get('cpu family', '?')} model {fields_.get('model', '?')} "
            f"stepping {fields_.get('stepping', '?')}: {name}")


@functools.lru_cache(maxsize=1)
def cpu_identity() -> dict[str, Any]:
    """The CPU as /proc/cpuinfo and torch see it: ``cpu`` (vendor family/model/stepping and model name),
    ``cpu_isa`` (the vector ISA torch uses) and ``cpu_cores`` (cores this process may run on)."""
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:
        cpuinfo = ""
    cpu = describe_cpu(cpuinfo, platform.processor() or platform.machine())
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    return {"cpu": cpu, "cpu_isa": _cpu_isa(), "cpu_cores": cores}


def _cpu_isa() -> str | None:
    import torch

    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(get()) if get else None


def gpu_identity(index: int | None = None, nvml=None) -> dict[str, Any]:
    """The GPU a cell runs on: ``gpu`` (name, compute capability, SMs, memory) and ``gpu_driver`` (from NVML
    when the nvidia-ml-py package is installed; None otherwise, never guessed)."""
    import torch

    index = torch.cuda.current_device() if index is None else index
    p = torch.cuda.get_device_properties(index)
    gpu = (f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
           f"{p.total_memory / 2 ** 30:.1f} GiB")
    return {"gpu": gpu, "gpu_driver": driver_version(nvml)}


_NVML_STARTED: dict[int, Any] = {}  # id → the NVML module (or a test's fake) already initialised in this process


def nvml_initialised(nvml=None):
    """NVML, initialised once per process: ``nvml`` (a module with pynvml's API; tests pass a fake) or pynvml
    from the nvidia-ml-py package; None without the package or where NVML cannot start (no driver, no
    permission). ``nvmlInit`` is called on first use only, not for every cell."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    if _NVML_STARTED.get(id(nvml)) is nvml:
        return nvml
    try:
        nvml.nvmlInit()
    except Exception:  # NVML present but unusable: unknown, not an error
        return None
    _NVML_STARTED[id(nvml)] = nvml
    return nvml


def driver_version(nvml=None) -> str | None:
    """The NVIDIA driver version from NVML (``nvml``: a module with pynvml's API, for tests), or None."""
    nvml = nvml_initialised(nvml)
    if nvml is None:
        return None
    try:
        version = nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML present but unusable (no driver, no permission): unknown, not an error
        return None


# Reduced-precision switches that change what a matmul computes, and the values every cell pins them to:
# torch's documented defaults (fp32 matmuls without TF32 — "highest" — cuDNN convolutions with it, fp16/bf16
# matmuls allowed reduced-precision reductions), so a result and its time mean the same on every run whatever a
# library or an earlier test left set. They are recorded in every cell's env and, on a GPU, in its fingerprint.
PRECISION_PINS: dict[str, Any] = {
    "float32_matmul_precision": "highest",
    "matmul_allow_tf32": False,
    "cudnn_allow_tf32": True,
    "fp16_reduced_precision_reduction": True,
    "bf16_reduced_precision_reduction": True,
}


def _precision_switches(torch) -> dict[str, tuple[Any, str]]:
    """Each boolean switch: (the object holding it, its attribute)."""
    matmul = torch.backends.cuda.matmul
    return {"matmul_allow_tf32": (matmul, "allow_tf32"),
            "cudnn_allow_tf32": (torch.backends.cudnn, "allow_tf32"),
            "fp16_reduced_precision_reduction": (matmul, "allow_fp16_reduced_precision_reduction"),
            "bf16_reduced_precision_reduction": (matmul, "allow_bf16_reduced_precision_reduction")}


def pin_precision() -> dict[str, Any]:
    """Set the reduced-precision switches to :data:`PRECISION_PINS`; returns them as now set."""
    import torch

    torch.set_float32_matmul_precision(PRECISION_PINS["float32_matmul_precision"])
    for name, (holder, attr) in _precision_switches(torch).items():
        setattr(holder, attr, PRECISION_PINS[name])
    return precision_flags()


def precision_flags() -> dict[str, Any]:
    """The reduced-precision switches as they are now (recorded in every cell's ``env``)."""
    import torch

    flags: dict[str, Any] = {"float32_matmul_precision": torch.get_float32_matmul_precision()}
    return flags | {name: bool(getattr(holder, attr)) for name, (holder, attr) in _precision_switches(torch).items()}


def precision_summary(flags: Mapping[str, Any] | None) -> str | None:
    """The switches as one fingerprint field (``name=value`` in a fixed order), or None where none are recorded."""
    if not flags:
        return None
    return ", ".join(f"{k}={flags[k]}" for k in sorted(flags))


def host_id() -> str:
    """``PERFSUITE_MACHINE_ID``, else ``hostname#boot-xxxxxxxx`` (Linux's boot id; the host name alone elsewhere)."""
    if os.environ.get(MACHINE_ID_ENV):
        return os.environ[MACHINE_ID_ENV]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{socket.gethostname()}#boot-{f.read().strip()[:8]}"
    except OSError:
        return socket.gethostname()


def boot_id() -> str | None:
    """This boot of the machine (Linux's boot id, 8 characters), or None: a baseline notes it for every run, so
    runs of several reboots are told apart even where PERFSUITE_MACHINE_ID keeps them one machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8] or None
    except OSError:
        return None


def machine_env(device: str) -> dict[str, Any]:
    """What a cell's ``env`` carries about the machine and its software (see the module docstring)."""
    import torch

    on_gpu = device.startswith("cuda")
    env: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if on_gpu else "cpu: " + cpu_identity()["cpu"].split(": ", 1)[-1],
        "host": host_id(),
        "boot": boot_id(),  # not part of the fingerprint: see perfsuite.compare.quality
        **cpu_identity(),
        "gpu": None,
        "gpu_driver": None,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if on_gpu else None,
        "cudnn_version": (str(torch.backends.cudnn.version()) if on_gpu and torch.backends.cudnn.is_available()
                          else None),
        "threads": torch.get_num_threads(),
        "precision_flags": pin_precision(),  # pinned before every cell, and recorded
    }
    if on_gpu:
        env |= gpu_identity()
    return env


# The software fields of a fingerprint: a baseline differing from a run only in these is of the same machine and setup
# (an upgrade: judged as an environment change, perfsuite.compare.verdicts); a history series continues across them.
SOFTWARE_FIELDS = ("torch_version", "cuda_version", "cudnn_version", "gpu_driver", "libraries")


@dataclass(frozen=True, order=True)
class Fingerprint:
    """Machine + software + setup of a group of cells. Equal fingerprints: the same machine, software and setup,
    so absolute times compare and a verdict may fail a run."""

    host: str | None
    cpu: str | None
    cpu_isa: str | None
    cpu_cores: int | None
    gpu: str | None
    gpu_driver: str | None
    torch_version: str | None
    cuda_version: str | None
    cudnn_version: str | None
    libraries: str | None  # other libraries a cell's implementation depends on (e.g. "peft 0.21.2"), or None
    device: str  # "cpu" or "cuda"
    dtype: str
    model: str
    threads: int | None
    precision: str | None = None  # the reduced-precision switches on a GPU (None on a CPU: they change nothing)

    @classmethod
    def of(cls, env: Mapping[str, Any], cell) -> "Fingerprint":
        """The fingerprint of a cell's record: its ``env`` and the cell's device, dtype and model."""
        return cls(host=env.get("host"), cpu=env.get("cpu"), cpu_isa=env.get("cpu_isa"),
                   cpu_cores=env.get("cpu_cores"), gpu=env.get("gpu"), gpu_driver=env.get("gpu_driver"),
                   torch_version=env.get("torch_version"), cuda_version=env.get("cuda_version"),
                   cudnn_version=env.get("cudnn_version"), libraries=env.get("libraries"),
                   device="cuda" if str(cell.device).startswith("cuda") else "cpu", dtype=cell.dtype,
                   model=cell.model, threads=env.get("threads"),
                   precision=(precision_summary(env.get("precision_flags")) if str(cell.device).startswith("cuda")
                              else None))

    def to_dict(self) -> dict[str, Any]:
        """Every field; ``precision`` only where set (a GPU's), so a CPU's fingerprint, its short id and the history
        series keyed on it read exactly as before the field existed."""
        d = asdict(self)
        if d["precision"] is None:
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Fingerprint":
        names = {f.name for f in fields(cls)}
        missing = {"device", "dtype", "model"} - set(d)
        if missing:
            raise ValueError(f"fingerprint lacks {', '.join(sorted(missing))}")
        return cls(**{k: d.get(k) for k in names})

    @property
    def setup(self) -> tuple[str, str, str]:
        """(device kind, dtype, model): what a reference comparison across machines still needs in common."""
        return self.device, self.dtype, self.model

    def describe(self) -> str:
        where = self.gpu or self.cpu or "unknown machine"
        isa = f" ({self.cpu_isa})" if self.cpu_isa and not self.gpu else ""
        host = f" on host {self.host}" if self.host else ""
        return (f"{where}{isa}{host}, torch {self.torch_version}, {self.dtype}, model {self.model}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}")

    def differences(self, other: "Fingerprint") -> list[str]:
        """``field: self's vs other's`` for every field that differs."""
        return [f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}" for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]

    def short_id(self) -> str:
        """Eight hex digits of a hash of every field: tells baselines of one setup on different machines apart."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
