"""NEURON CVODE on one hh section: wall time and spike-time error per tolerance (1 s run)."""

import json
import statistics
import sys
import time

import numpy as np
from neuron import h

h.load_file("stdrun.hoc")
cfg = json.loads(sys.argv[1])
sec = h.Section(name="soma")
sec.L = sec.diam = 56.41895835477563
sec.insert("hh")
clamp = h.IClamp(sec(0.5))
clamp.delay, clamp.dur, clamp.amp = cfg["t_on"], 1e9, cfg["amp"] * 0.1
h.celsius = 6.3
h.usetable_hh = 0
nc = h.NetCon(sec(0.5)._ref_v, None, sec=sec)
nc.threshold = 0.0
vec = h.Vector()
nc.record(vec)
cvode = h.CVode()
cvode.active(1)
cvode.condition_order(2)  # interpolated threshold crossings
ref = np.asarray(cfg["reference"])
rows = []
for tol in cfg["tolerances"]:
    cvode.rtol(tol)
    cvode.atol(tol)
    walls = []
    for _ in range(cfg["repeats"] + 1):
        start = time.perf_counter()
        h.finitialize(-65.0)
        h.continuerun(cfg["t_ms"])
        walls.append(time.perf_counter() - start)
    spikes = np.array(vec)
    n = min(len(spikes), len(ref))
    rows.append(
        dict(
            tol=tol,
            median_s=statistics.median(walls[1:]),
            n_spikes=len(spikes),
            max_abs_err_ms=float(np.max(np.abs(spikes[:n] - ref[:n]))) if n else None,
        )
    )
print("RESULT " + json.dumps(dict(name="NEURON CVODE", version=h.nrnversion(), rows=rows)))
