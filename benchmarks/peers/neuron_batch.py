"""NEURON fixed step: `n` single-compartment hh sections in one run (features via NetCon)."""

import numpy as np
from _common import amplitudes, emit, timed, workload
from neuron import h

h.load_file("stdrun.hoc")
w = workload()
amps = amplitudes(w)
area_cm2 = 1e-4  # L = diam = 56.419 µm: 10,000 µm²
sections, clamps, netcons, vectors = [], [], [], []
for i, amp in enumerate(amps):
    sec = h.Section(name=f"soma{i}")
    sec.L = sec.diam = 56.41895835477563
    sec.nseg = 1
    sec.insert("hh")
    clamp = h.IClamp(sec(0.5))
    clamp.delay, clamp.dur = w["t_on"], 1e9
    clamp.amp = amp * area_cm2 * 1e3  # µA/cm² -> nA
    nc = h.NetCon(sec(0.5)._ref_v, None, sec=sec)
    nc.threshold = 0.0
    vec = h.Vector()
    nc.record(vec)
    sections.append(sec), clamps.append(clamp), netcons.append(nc), vectors.append(vec)
h.celsius = 6.3
h.usetable_hh = int(w.get("neuron_usetable", 1))
h.dt = w["dt_ms"]
h.steps_per_ms = 1.0 / w["dt_ms"]
h.cvode_active(0)


def run():
    h.finitialize(-65.0)
    h.continuerun(w["t_ms"])
    return [np.array(v) for v in vectors]


first, times, spikes = timed(run, w["repeats"])
sub = w["subset"]
emit(
    w,
    "NEURON fixed step (one run, n sections)",
    h.nrnversion(),
    first,
    times,
    [len(spikes[i]) for i in sub],
    [spikes[i][: w["max_spikes"]] for i in sub],
    usetable_hh=int(h.usetable_hh),
    note="spike times from NetCon threshold detection (step resolution)",
)
