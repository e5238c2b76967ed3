"""Membrane models beyond the classic squid axon: the Pospischil et al. (2008) cortical family.

Units: mV, ms, mS/cm², µF/cm², µA/cm²; membrane area in cm². Every model is an
[`hhjax.AbstractModel`][], so [`hhjax.simulate`][] integrates it like `HHParams`.
"""

from ._channels import AbstractChannel as AbstractChannel
from ._channels import CaL as CaL
from ._channels import CaT as CaT
from ._channels import HCurrent as HCurrent
from ._channels import KdTraub as KdTraub
from ._channels import MSlow as MSlow
from ._channels import NaTraub as NaTraub
from ._channels import traub_rates as traub_rates
from ._cortical import GATES as GATES
from ._cortical import CorticalState as CorticalState
from ._cortical import Pospischil as Pospischil
from ._cortical import density_to_pa as density_to_pa
from ._cortical import pa_to_density as pa_to_density
from ._protocol import FREE as FREE
from ._protocol import FitResult as FitResult
from ._protocol import StepSweep as StepSweep
from ._protocol import SweepFeatures as SweepFeatures
from ._protocol import choose_training as choose_training
from ._protocol import data_features as data_features
from ._protocol import fit_steps as fit_steps
from ._protocol import passive_start as passive_start
from ._protocol import plot_steps as plot_steps
from ._protocol import predict_steps as predict_steps
from ._protocol import simulate_step as simulate_step
from ._protocol import step_sweep as step_sweep
from ._stepper import exp_euler_step as exp_euler_step
from ._stepper import integrate as integrate

__all__ = [
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
    "AbstractChannel",
    "CaL",
    "CaT",
    "CorticalState",
    "GATES",
    "HCurrent",
    "KdTraub",
    "MSlow",
    "NaTraub",
    "Pospischil",
    "density_to_pa",
    "exp_euler_step",
    "integrate",
    "pa_to_density",
    "traub_rates",
]
