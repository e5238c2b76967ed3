"""Brian2: `n` HH neurons in one NeuronGroup, exponential Euler, numpy or cython code generation."""

import sys

import brian2 as b2
import numpy as np
from _common import amplitudes, emit, timed, workload

w = workload()
target = w.get("brian2_target", "numpy")
b2.prefs.codegen.target = target
b2.defaultclock.dt = w["dt_ms"] * b2.ms
eqs = """
dv/dt = (I - gna*m**3*h*(v - ENa) - gk*n**4*(v - EK) - gl*(v - El)) / Cm : volt
I = i_amp * int(t >= t_on) : amp/meter**2
i_amp : amp/meter**2 (constant)
dm/dt = alpham*(1 - m) - betam*m : 1
dh/dt = alphah*(1 - h) - betah*h : 1
dn/dt = alphan*(1 - n) - betan*n : 1
alpham = 1/exprel(-(v + 40*mV)/(10*mV)) / ms : Hz
betam = 4*exp(-(v + 65*mV)/(18*mV)) / ms : Hz
alphah = 0.07*exp(-(v + 65*mV)/(20*mV)) / ms : Hz
betah = 1/(1 + exp(-(v + 35*mV)/(10*mV))) / ms : Hz
alphan = 0.1/exprel(-(v + 55*mV)/(10*mV)) / ms : Hz
betan = 0.125*exp(-(v + 65*mV)/(80*mV)) / ms : Hz
"""
namespace = dict(
    gna=120 * b2.msiemens / b2.cm**2,
    gk=36 * b2.msiemens / b2.cm**2,
    gl=0.3 * b2.msiemens / b2.cm**2,
    ENa=50 * b2.mV,
    EK=-77 * b2.mV,
    El=-54.3 * b2.mV,
    Cm=1 * b2.ufarad / b2.cm**2,
    t_on=w["t_on"] * b2.ms,
)
group = b2.NeuronGroup(
    w["n"],
    eqs,
    threshold="v > 0*mV",
    refractory="v > 0*mV",
    method="exponential_euler",
    namespace=namespace,
)
group.i_amp = amplitudes(w) * b2.uA / b2.cm**2


def x_inf(a, b):
    return a / (a + b)


v0 = -65.0
am, bm = 1 / np.expm1(2.5) * 2.5, 4.0
ah, bh = 0.07, 1 / (1 + np.exp(3.0))
an, bn = 0.1 * 1.0 / np.expm1(1.0), 0.125
group.v = v0 * b2.mV
group.m, group.h, group.n = x_inf(am, bm), x_inf(ah, bh), x_inf(an, bn)
spikes = b2.SpikeMonitor(group)
net = b2.Network(group, spikes)
net.store()


def run():
    net.restore()
    net.run(w["t_ms"] * b2.ms)
    return spikes.spike_trains()


first, times, trains = timed(run, w["repeats"])
sub = w["subset"]
emit(
    w,
    f"Brian2 ({target}), exponential Euler",
    b2.__version__,
    first,
    times,
    [len(trains[i]) for i in sub],
    [np.asarray(trains[i] / b2.ms)[: w["max_spikes"]] for i in sub],
    note="spike times at step resolution (threshold v > 0 mV)",
    python=sys.version.split()[0],
)
