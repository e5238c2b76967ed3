"""hhjax: differentiable Hodgkin–Huxley simulation and fitting on JAX and Diffrax.

Units everywhere: mV, ms, µA/cm², mS/cm², µF/cm², °C.

Layout: `_model` (the `AbstractModel` contract every path uses), `models/` (channels and the
models composed of them: HH, the cortical family, user-composed `Membrane`), `_solvers`
(the Diffrax term and exponential Euler), `_simulate` (`simulate` and model-generic helpers),
`_batch` (`simulate_batch`), `_scale` (local devices and processes), `_sweep` (resumable
sweeps), `_spikes` and `_features` (spike detection and features), `_stimulus`, `_kinetics`
(rate functions), `_checks` (validation), `fitting/`, `io`, `plot`, `cli`.

Public names load on first use (PEP 562), so that the `hhjax` command and `hhjax --help` answer
without importing JAX (3–8 s); `from hhjax import X` and `hhjax.X` work as usual.
"""

import importlib

__version__ = "0.1.0"

# Where each public name lives: {module: names}; a module listed with no names is itself public.
_EXPORTS = {
    "._batch": ("BatchFeatures", "batch_features", "simulate_batch"),
    "._features": (
        "FICurve", "coincidence_factor", "fi_curve", "firing_rate", "spike_count", "spike_times",
    ),
    "._model": ("AbstractModel",),
    "._simulate": (
        "Currents",
        "RESULTS",
        "SimulationError",
        "Trajectory",
        "currents",
        "rest_state",
        "simulate",
        "steady_state",
        "value_and_grad_forward",
    ),
    "._solvers": ("ExponentialEuler", "MembraneTerm"),
    "._spikes": ("AdaptiveSpikes", "spike_times_adaptive"),
    "._stimulus": ("AbstractStimulus", "OUNoise", "Pulses", "Sampled", "Step", "SumStimulus"),
    "._sweep": ("SweepAxis", "SweepConfig", "SweepError", "load_sweep", "sweep"),
    ".models._hh": ("FIELDS", "HHParams", "HHState", "gates_inf", "ionic_currents", "vector_field"),
}
_MODULES = {"kinetics": "._kinetics", "fitting": ".fitting", "io": ".io", "models": ".models"}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, "kinetics"])


def __getattr__(name):
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name], __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    else:
        raise AttributeError(f"module 'hhjax' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_MODULES))
