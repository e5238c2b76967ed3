"""Membrane models as compositions of channels, all on the [`hhjax.AbstractModel`][] contract.

Units: mV, ms, mS/cm², µF/cm², µA/cm²; membrane area in cm².

- `_channels`: the channels (leak, the 1952 squid-axon Na and K, the Traub–Miles Na and K_d,
  M, Ca-L, Ca-T, h); each owns gates and reads its parameters from the model.
- `_hh`: [`hhjax.HHParams`][] = HH Na + HH K + leak, with its fused fast step.
- `_cortical`: [`Pospischil`][], the cortical family of Pospischil et al. (2008).
- `_membrane`: [`Membrane`][], any composition of channels a user chooses.
- `_stepper`: fixed-grid exponential-Euler integration (loaded on first use). The
  step-protocol fitting preset (`fit_steps`, `step_sweep`, ...) lives in `hhjax.fitting` and is
  aliased here.

Every model is accepted by every hhjax entry point (`simulate`, `simulate_batch`,
`spike_times_adaptive`, `rest_state`, `steady_state`, `currents`, `fi_curve`, `hhjax.plot`,
`hhjax.fitting.fit`).
"""

import importlib as _importlib

from ._channels import AbstractChannel as AbstractChannel
from ._channels import CaL as CaL
from ._channels import CaT as CaT
from ._channels import HCurrent as HCurrent
from ._channels import HHPotassium as HHPotassium
from ._channels import HHSodium as HHSodium
from ._channels import KdTraub as KdTraub
from ._channels import Leak as Leak
from ._channels import MSlow as MSlow
from ._channels import NaTraub as NaTraub
from ._channels import traub_rates as traub_rates
from ._cortical import GATES as GATES
from ._cortical import CorticalState as CorticalState
from ._cortical import Pospischil as Pospischil
from ._cortical import density_to_pa as density_to_pa
from ._cortical import pa_to_density as pa_to_density
from ._hh import HHParams as HHParams
from ._hh import HHState as HHState
from ._membrane import Membrane as Membrane
from ._membrane import MembraneState as MembraneState

# The step-protocol preset lives in hhjax.fitting (it is a preset of hhjax.fitting.fit); these
# names stay here as aliases, loaded on first use (the fitting package imports the models).
_LAZY = {
    **dict.fromkeys(
        (
            "FREE",
            "FitResult",
            "StepSweep",
            "SweepFeatures",
            "choose_training",
            "data_features",
            "fit_steps",
            "passive_start",
            "plot_steps",
            "predict_steps",
            "simulate_step",
            "step_sweep",
        ),
        "..fitting._steps",
    ),
    **dict.fromkeys(("exp_euler_step", "integrate"), "._stepper"),
}


__all__ = [
    "AbstractChannel",
    "CaL",
    "CaT",
    "CorticalState",
    "GATES",
    "HCurrent",
    "HHParams",
    "HHPotassium",
    "HHSodium",
    "HHState",
    "KdTraub",
    "Leak",
    "MSlow",
    "Membrane",
    "MembraneState",
    "NaTraub",
    "Pospischil",
    "density_to_pa",
    "pa_to_density",
    "traub_rates",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hhjax.models' has no attribute {name!r}")
