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
from ._optax import CheckpointError as CheckpointError
from ._optax import default_optimizer as default_optimizer
from ._plot import plot_fit as plot_fit
from ._recording import Recording as Recording
from ._recording import estimate_noise as estimate_noise

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
    "AbstractSolver",
    "Auto",
    "Guess",
    "LevenbergMarquardt",
    "Linear",
    "MultiStart",
    "Nudge",
    "Optax",
    "Recording",
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
