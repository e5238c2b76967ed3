"""hhjax: differentiable Hodgkin–Huxley simulation and fitting on JAX and Diffrax.

Units everywhere: mV, ms, µA/cm², mS/cm², µF/cm², °C.
"""

from . import _kinetics as kinetics
from . import fitting as fitting
from . import io as io
from . import models as models
from ._fast import AdaptiveSpikes as AdaptiveSpikes
from ._fast import BatchFeatures as BatchFeatures
from ._fast import ExponentialEuler as ExponentialEuler
from ._fast import simulate_batch as simulate_batch
from ._fast import spike_times_adaptive as spike_times_adaptive
from ._fast import value_and_grad_forward as value_and_grad_forward
from ._features import FICurve as FICurve
from ._features import fi_curve as fi_curve
from ._features import firing_rate as firing_rate
from ._features import spike_count as spike_count
from ._features import spike_times as spike_times
from ._model import AbstractModel as AbstractModel
from ._params import FIELDS as FIELDS
from ._params import HHParams as HHParams
from ._simulate import SimulationError as SimulationError
from ._simulate import Trajectory as Trajectory
from ._simulate import currents as currents
from ._simulate import rest_state as rest_state
from ._simulate import simulate as simulate
from ._simulate import steady_state as steady_state
from ._stimulus import AbstractStimulus as AbstractStimulus
from ._stimulus import OUNoise as OUNoise
from ._stimulus import Pulses as Pulses
from ._stimulus import Sampled as Sampled
from ._stimulus import Step as Step
from ._stimulus import SumStimulus as SumStimulus
from ._vector_field import Currents as Currents
from ._vector_field import HHState as HHState
from ._vector_field import gates_inf as gates_inf
from ._vector_field import ionic_currents as ionic_currents
from ._vector_field import vector_field as vector_field

__version__ = "0.1.0"

__all__ = [
    "AbstractModel",
    "AbstractStimulus",
    "AdaptiveSpikes",
    "BatchFeatures",
    "ExponentialEuler",
    "Currents",
    "FICurve",
    "FIELDS",
    "HHParams",
    "HHState",
    "OUNoise",
    "Pulses",
    "Sampled",
    "SimulationError",
    "Step",
    "SumStimulus",
    "Trajectory",
    "currents",
    "fi_curve",
    "firing_rate",
    "gates_inf",
    "ionic_currents",
    "kinetics",
    "rest_state",
    "simulate",
    "simulate_batch",
    "spike_count",
    "spike_times",
    "spike_times_adaptive",
    "steady_state",
    "value_and_grad_forward",
    "vector_field",
]
