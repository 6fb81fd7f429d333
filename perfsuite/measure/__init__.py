"""How it is measured: the timing loop, devices and device time, syncs, the probe, GPU state, machine, statistics."""
