"""Conductance fitting: recover membrane parameters from current-clamp recordings.

Units: ms, mV, µA/cm², mS/cm², µF/cm².

```python
rec = hhjax.fitting.Recording(t, v, i_inj)              # ms, mV, µA/cm²
res = hhjax.fitting.fit(rec, free=("g_na", "g_k", "g_l", "e_l", "c_m"))
res.params, res.stderr, res.ci, res.loss_history, res.trace
hhjax.fitting.plot_fit(res)
```
"""

from ._config import NUDGE_SCHEDULE as NUDGE_SCHEDULE
from ._config import AbstractInit as AbstractInit
from ._config import AbstractSolver as AbstractSolver
from ._config import Auto as Auto
from ._config import CrossEntropy as CrossEntropy
from ._config import Electrode as Electrode
from ._config import Guess as Guess
from ._config import LevenbergMarquardt as LevenbergMarquardt
from ._config import Linear as Linear
from ._config import MultiStart as MultiStart
from ._config import Nudge as Nudge
from ._config import Optax as Optax
from ._fit import INITS as INITS
from ._fit import NOISE_MODELS as NOISE_MODELS
from ._fit import FitResult as FitResult
from ._fit import Trace as Trace
from ._fit import fit as fit
from ._fit import fit_batch as fit_batch
from ._free import DEFAULT_FREE as DEFAULT_FREE
from ._free import FreeParams as FreeParams
from ._grid import simulate_grid as simulate_grid
from ._linear import LINEAR_FIELDS as LINEAR_FIELDS
from ._linear import linear_estimate as linear_estimate
from ._linear import linear_fields as linear_fields
from ._linear import linear_system as linear_system
from ._lm import levenberg_marquardt as levenberg_marquardt
from ._objectives import AbstractObjective as AbstractObjective
from ._objectives import LeastSquares as LeastSquares
from ._objectives import SpikeFeatures as SpikeFeatures
from ._objectives import SpikeTiming as SpikeTiming
from ._objectives import SweepFeatures as SweepFeatures
from ._objectives import adaptive_threshold as adaptive_threshold
from ._objectives import crossing_times as crossing_times
from ._objectives import data_features as data_features
from ._objectives import stimulus_epoch as stimulus_epoch
from ._optax import CheckpointError as CheckpointError
from ._optax import default_optimizer as default_optimizer
from ._plot import plot_fit as plot_fit
from ._recording import CurrentSteps as CurrentSteps
from ._recording import Recording as Recording
from ._recording import current_steps as current_steps
from ._recording import estimate_noise as estimate_noise
from ._recording import estimate_series_resistance as estimate_series_resistance
from ._recording import response_lag as response_lag
from ._steps import StepSweep as StepSweep
from ._steps import choose_training as choose_training
from ._steps import fit_steps as fit_steps
from ._steps import passive_start as passive_start
from ._steps import plot_steps as plot_steps
from ._steps import predict_steps as predict_steps
from ._steps import simulate_step as simulate_step
from ._steps import step_recording as step_recording
from ._steps import step_sweep as step_sweep

__all__ = [
    "CheckpointError",
    "DEFAULT_FREE",
    "FitResult",
    "FreeParams",
    "INITS",
    "LINEAR_FIELDS",
    "NOISE_MODELS",
    "NUDGE_SCHEDULE",
    "AbstractInit",
    "AbstractObjective",
    "CrossEntropy",
    "Electrode",
    "estimate_series_resistance",
    "response_lag",
    "CurrentSteps",
    "current_steps",
    "LeastSquares",
    "SpikeFeatures",
    "SpikeTiming",
    "SweepFeatures",
    "adaptive_threshold",
    "crossing_times",
    "data_features",
    "stimulus_epoch",
    "AbstractSolver",
    "Auto",
    "Guess",
    "LevenbergMarquardt",
    "Linear",
    "MultiStart",
    "Nudge",
    "Optax",
    "Recording",
    "StepSweep",
    "choose_training",
    "fit_steps",
    "passive_start",
    "plot_steps",
    "predict_steps",
    "simulate_step",
    "step_recording",
    "step_sweep",
    "Trace",
    "default_optimizer",
    "estimate_noise",
    "fit",
    "fit_batch",
    "levenberg_marquardt",
    "linear_estimate",
    "linear_fields",
    "linear_system",
    "plot_fit",
    "simulate_grid",
]
