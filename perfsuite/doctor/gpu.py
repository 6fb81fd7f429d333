"""The doctor's GPU checks: memory accounting, NVML under a known kernel, fp16 and bf16 attention."""

from __future__ import annotations

import contextlib
import time

from perfsuite.doctor.check import FAILED, OK, PAPER_MODEL, SKIPPED, Check, small_model

MEMORY_AGREE_BYTES = 2 ** 20  # two peak readings of one forward agree within 1 MiB
def check_memory(device: str, model=None, tokens=None) -> Check:
    """With cuBLAS warmed, two peak readings of one forward agree (the first carries no workspace)."""
    if not device.startswith("cuda"):
        return Check("memory", "-", SKIPPED, "the CPU has no device memory accounting")
    import torch

    from perfsuite.measure.device import peak_memory_above

    if model is None:
        model, tokens = small_model(device)
    with torch.inference_mode():
        first = peak_memory_above(lambda: model(tokens), device)
        second = peak_memory_above(lambda: model(tokens), device)
    figure = f"peak {first / 2 ** 20:.2f} MiB then {second / 2 ** 20:.2f} MiB above the weights"
    values = {"first_bytes": first, "second_bytes": second}
    if abs(first - second) > MEMORY_AGREE_BYTES:
        return Check("memory", figure, FAILED, "the first peak reading differs from the second: something allocates "
                     "on first use inside peak_memory_above (warm it in perfsuite.measure.device.warm_cublas)", values)
    return Check("memory", figure, OK, None, values)


NVML_BUSY_MS = 400.0  # the known kernel NVML is read under ...
NVML_SETTLE_S = 0.15  # ... after this long (the clocks ramp up and NVML's sample moves on)


def check_nvml(device: str, monitor=None, busy=None) -> Check:
    """NVML readable: clocks, power limit, and not throttled — read while a known kernel runs (``busy()``: a
    context in which the GPU works; a seam), since an idle GPU's clock says nothing about throttling."""
    if not device.startswith("cuda"):
        return Check("nvml", "-", SKIPPED, "no GPU: nothing for NVML to read")
    from perfsuite.measure.gpu_state import IDLE, monitor_for, throttled

    monitor = monitor or monitor_for(device)
    if monitor is None:
        return Check("nvml", "unreadable", FAILED, "NVML cannot be read: install nvidia-ml-py (pip install -e "
                     "'.[gpu]') and check the driver, or cells record no clocks and no throttling")
    try:
        with (busy or _gpu_busy)():
            state = monitor.read()
        limit_w = monitor.power_limit_w()
    except Exception as e:  # a driver that answers nothing: the nightly would record nothing either
        return Check("nvml", "unreadable", FAILED, f"NVML read failed ({e}): check the driver and permissions")
    why = throttled(state)
    figure = (f"SM {state['sm_clock_mhz']}/{state['max_sm_clock_mhz']} MHz, {state['power_w']:.0f} W of "
              f"{limit_w if limit_w is None else f'{limit_w:.0f}'} W limit, {state['temperature_c']} °C, "
              f"{'throttled: ' + why if why else 'not throttled'}")
    values = {"state": state, "power_limit_w": limit_w}
    if why:
        return Check("nvml", figure, FAILED, f"the GPU is throttled under a known kernel ({why}): let it cool, check "
                     "its fans and power limit, or use another runner", values)
    if IDLE in state["throttle_reasons"]:
        return Check("nvml", figure, FAILED, "NVML says the GPU is idle while a known kernel runs on it: the "
                     "monitor reads another GPU than torch uses (check CUDA_VISIBLE_DEVICES)", values)
    return Check("nvml", figure, OK, None, values)


@contextlib.contextmanager
def _gpu_busy():
    """A known kernel (a spin of NVML_BUSY_MS) running on the GPU for the block, entered after NVML_SETTLE_S."""
    from perfsuite.measure.device_time import CudaTiming

    api = CudaTiming()
    api.synchronize()
    api.hold(NVML_BUSY_MS)
    time.sleep(NVML_SETTLE_S)
    try:
        yield
    finally:
        api.synchronize()




ATTENTION_SEQ_LEN = 512  # the paper grid's longest sequence
ATTENTION_BATCH = {"cuda": 32, "cpu": 1}  # its largest batch on a GPU; one sequence on a CPU (minutes otherwise)


def check_attention(device: str, attend=None) -> Check:
    """fp16 and bf16 attention at the paper model's shapes (its heads and head width, 512 tokens): the latency
    forward's causal call as torch picks its kernel, and the decoder's masked call under its pinned backends, each
    against fp32 math. ``attend`` is :func:`perfsuite.models.attention.check_attention` (a seam)."""
    import torch

    from perfsuite.models.attention import check_attention as one
    from perfsuite.models.model import get_config

    attend = attend or one
    cfg = get_config(PAPER_MODEL)
    batch = ATTENTION_BATCH["cuda" if device.startswith("cuda") else "cpu"]
    calls = {}
    for dtype in (torch.float16, torch.bfloat16):
        for masked in (False, True):
            name = f"{str(dtype).removeprefix('torch.')} {'decoder mask' if masked else 'causal'}"
            calls[name] = attend(device, dtype, batch=batch, seq_len=ATTENTION_SEQ_LEN, n_head=cfg.n_head,
                                 head_dim=cfg.n_embd // cfg.n_head, masked=masked)
    worst = {d: max(100 * c["relative_error"] for n, c in calls.items() if n.startswith(d)) for d in ("float16",
                                                                                                      "bfloat16")}
    used = {kind: "/".join(sorted({c["backend"] for n, c in calls.items() if n.endswith(kind)}))
            for kind in ("causal", "decoder mask")}
    figure = (f"fp16 {worst['float16']:.2f} %, bf16 {worst['bfloat16']:.2f} % from fp32 at b{batch} s"
              f"{ATTENTION_SEQ_LEN} (causal: {used['causal']}; decoder: {used['decoder mask']})")
    values = {"batch": batch, "seq_len": ATTENTION_SEQ_LEN, "calls": calls}
    bad = [name for name, c in calls.items() if not c["ok"]]
    if bad:
        return Check("attention", figure, FAILED, f"attention {', '.join(bad)} is off from fp32 or ran on no "
                     "backend: check this torch build's SDPA kernels (and cuDNN) before trusting fp16/bf16 cells",
                     values)
    return Check("attention", figure, OK, None, values)
