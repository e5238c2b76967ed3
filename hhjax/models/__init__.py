"""Membrane models beyond the classic squid axon: the Pospischil et al. (2008) cortical family.

Units: mV, ms, mS/cm², µF/cm², µA/cm²; membrane area in cm². Every model is an
[`hhjax.AbstractModel`][], so [`hhjax.simulate`][] integrates it like `HHParams`.
"""

from ._channels import AbstractChannel as AbstractChannel
from ._channels import CaL as CaL
from ._channels import CaT as CaT
from ._channels import KdTraub as KdTraub
from ._channels import MSlow as MSlow
from ._channels import NaTraub as NaTraub
from ._channels import traub_rates as traub_rates
from ._cortical import GATES as GATES
from ._cortical import CorticalState as CorticalState
from ._cortical import Pospischil as Pospischil
from ._cortical import density_to_pa as density_to_pa
from ._cortical import pa_to_density as pa_to_density
from ._stepper import exp_euler_step as exp_euler_step
from ._stepper import integrate as integrate

__all__ = [
    "AbstractChannel",
    "CaL",
    "CaT",
    "CorticalState",
    "GATES",
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
