"""The Pospischil et al. (2008) single-compartment cortical model family.

Units: mV, ms, mS/cm², µF/cm², µA/cm²; membrane area in cm².

$$C_m \\frac{dv}{dt} = -g_L (v - E_L) - \\sum_{c \\in \\text{channels}} I_c(v, \\text{gates})
+ I_{stim}(t)$$

The channels ([`NaTraub`][], [`KdTraub`][], [`MSlow`][], optionally [`CaL`][], [`CaT`][]) are
composed: the model is the leak plus the sum of its `channels`, and each variant (regular
spiking, fast spiking, bursting, low-threshold) is the same class with another channel tuple and
other parameter values. Every model carries all parameters; a channel that is not in `channels`
is simply not evaluated and its gates stay constant.

Recorded currents are in pA; the model works in densities. With the membrane `area` (cm²),
$I\\,[\\mu A/cm^2] = 10^{-6}\\, I\\,[pA] / \\text{area}\\,[cm^2]$: 1 pA on $10^{-8}$ cm² (1 µm²) is
100 µA/cm², 100 pA on a typical soma of $10^{-4}$ cm² is 1 µA/cm². The total capacitance is
$C_m \\cdot \\text{area}$ (1 µF/cm² × 1e-4 cm² = 100 pF), so when fitting recordings `area` is
the free parameter and `c_m` stays at 1 µF/cm².
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._checks import check_parameters
from .._model import AbstractModel
from ._channels import (
    AbstractChannel,
    CaL,
    CaT,
    HCurrent,
    KdTraub,
    Leak,
    MSlow,
    NaTraub,
    check_channels,
)

__all__ = ["CorticalState", "Pospischil", "GATES", "pa_to_density", "density_to_pa"]

GATES = ("m", "h", "n", "p", "q", "r", "u", "w")
"""Gate names of [`CorticalState`][], in order."""

_UNITS = dict(
    g_na="mS/cm²",
    g_kd="mS/cm²",
    g_m="mS/cm²",
    g_l="mS/cm²",
    g_cal="mS/cm²",
    g_cat="mS/cm²",
    g_h="mS/cm²",
    e_na="mV",
    e_k="mV",
    e_l="mV",
    e_ca="mV",
    e_h="mV",
    v_t="mV",
    v_x="mV",
    tau_max="ms",
    c_m="µF/cm²",
    area="cm²",
)
_NONNEGATIVE = ("g_na", "g_kd", "g_m", "g_l", "g_cal", "g_cat", "g_h")
_POSITIVE = ("c_m", "area", "tau_max")


def pa_to_density(current_pa: ArrayLike, area_cm2: ArrayLike) -> Array:
    """Convert a current in pA to a density in µA/cm² on a membrane of `area_cm2` (cm²)."""
    return jnp.asarray(current_pa) * 1e-6 / jnp.asarray(area_cm2)


def density_to_pa(density: ArrayLike, area_cm2: ArrayLike) -> Array:
    """Convert a density in µA/cm² on `area_cm2` (cm²) back to pA."""
    return jnp.asarray(density) * jnp.asarray(area_cm2) * 1e6


class CorticalState(eqx.Module):
    """State of the cortical model: voltage (mV) and the gates m, h (Na), n (K_d), p (M),
    q, r (Ca-L), u (Ca-T) and w (I_h). Gates of channels the model does not use stay constant."""

    v: Array
    m: Array
    h: Array
    n: Array
    p: Array
    q: Array
    r: Array
    u: Array
    w: Array


def _field(default):
    return eqx.field(converter=jnp.asarray, default=default)


class Pospischil(AbstractModel):
    """A single-compartment cortical neuron (Pospischil et al. 2008), as composed channels.

    Defaults are the regular-spiking cell of Pospischil et al. 2008 (their Fig. 2/Table 1:
    61.4 µm cylinder, $V_T = -56.2$ mV, $\\bar g_M = 0.075$ mS/cm², $\\tau_{max} = 608$ ms);
    presets [`Pospischil.regular_spiking`][], [`Pospischil.fast_spiking`][],
    [`Pospischil.intrinsically_bursting`][], [`Pospischil.low_threshold`][].

    **Fields** (scalars, or arrays with a leading batch axis):

    - `g_na`, `g_kd`, `g_m`, `g_l`, `g_cal`, `g_cat`, `g_h`: maximal conductances (mS/cm²).
    - `e_na`, `e_k`, `e_l`, `e_ca`, `e_h`: reversal potentials (mV).
    - `v_t`: threshold shift of the Na and K_d kinetics (mV); `v_x`: shift of Ca-T (mV).
    - `tau_max`: slowest time constant of the M current (ms).
    - `c_m`: specific capacitance (µF/cm²); `area`: membrane area (cm²), used only to convert
      currents in pA (see [`pa_to_density`][]); the dynamics are per unit area.
    - `channels` (static): the tuple of [`AbstractChannel`][]s besides the leak.

    Concrete values are checked on construction as for [`hhjax.HHParams`][]: a non-finite
    field, a negative conductance or a non-positive `c_m`, `area` or `tau_max` raises
    `ValueError` naming the field; fields whose batch shapes do not broadcast together, or an
    empty field, raise `ValueError` listing the shapes; a complex field raises `TypeError`.
    """

    g_na: Array = _field(56.0)
    g_kd: Array = _field(6.0)
    g_m: Array = _field(0.075)
    g_l: Array = _field(0.0205)
    g_cal: Array = _field(0.0)
    g_cat: Array = _field(0.0)
    g_h: Array = _field(0.0)
    e_na: Array = _field(50.0)
    e_k: Array = _field(-90.0)
    e_l: Array = _field(-70.3)
    e_ca: Array = _field(120.0)
    e_h: Array = _field(-43.0)
    v_t: Array = _field(-56.2)
    v_x: Array = _field(2.0)
    tau_max: Array = _field(608.0)
    c_m: Array = _field(1.0)
    area: Array = _field(np.pi * 61.4e-4 * 61.4e-4)
    channels: tuple[AbstractChannel, ...] = eqx.field(
        static=True, converter=tuple, default=(NaTraub(), KdTraub(), MSlow())
    )

    def __check_init__(self):
        check_channels("Pospischil", self.channels)
        values = {n: getattr(self, n) for n in self.field_names}
        check_parameters("Pospischil", values, _UNITS, _NONNEGATIVE, _POSITIVE)

    # ------------------------------------------------------------------ presets
    @classmethod
    def regular_spiking(cls, **overrides) -> Pospischil:
        """Regular spiking with adaptation (Na, K_d, M, leak): the defaults."""
        return cls(**overrides)

    @classmethod
    def fast_spiking(cls, **overrides) -> Pospischil:
        """Fast spiking (Pospischil 2008, FS cell: no M current to speak of, higher V_T)."""
        values = dict(
            g_na=58.0,
            g_kd=3.9,
            g_m=0.0787,
            g_l=0.038,
            e_l=-70.4,
            v_t=-57.9,
            tau_max=502.0,
            area=np.pi * 56.9e-4 * 56.9e-4,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def regular_spiking_h(cls, **overrides) -> Pospischil:
        """Regular spiking plus the h current [`HCurrent`][] (sag), $\bar g_h$ = 0.02 mS/cm²."""
        values = dict(g_h=0.02, channels=(NaTraub(), KdTraub(), MSlow(), HCurrent()))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def intrinsically_bursting(cls, **overrides) -> Pospischil:
        """Intrinsically bursting: regular spiking plus the high-threshold Ca current I_L.

        Values are illustrative (of the order of Pospischil et al. 2008, Fig. 8); check them
        against the paper before quantitative use.
        """
        values = dict(
            g_na=50.0,
            g_kd=4.2,
            g_m=0.042,
            g_l=0.01,
            g_cal=0.12,
            e_l=-70.0,
            v_t=-58.0,
            tau_max=1000.0,
            area=np.pi * 96e-4 * 96e-4,
            channels=(NaTraub(), KdTraub(), MSlow(), CaL()),
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def low_threshold(cls, **overrides) -> Pospischil:
        """Low-threshold spiking: regular spiking plus the T-type Ca current I_T.

        Values are illustrative (of the order of Pospischil et al. 2008, Fig. 9); check them
        against the paper before quantitative use.
        """
        values = dict(
            g_na=50.0,
            g_kd=4.0,
            g_m=0.028,
            g_l=0.019,
            g_cat=0.4,
            e_l=-50.0,
            v_t=-50.0,
            v_x=-7.0,
            tau_max=4000.0,
            area=np.pi * 96e-4 * 96e-4,
            channels=(NaTraub(), KdTraub(), MSlow(), CaT()),
        )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ the model contract
    @property
    def mechanisms(self) -> tuple:
        """The [`Leak`][] followed by `channels`."""
        return (_LEAK,) + self.channels

    def make_state(self, v, gates: dict) -> CorticalState:
        """A [`CorticalState`][]; gates of channels the model does not use are 0."""
        zero = jnp.zeros_like(v)
        return CorticalState(v, *(gates.get(g, zero) for g in GATES))

    def inf_rate(self, v) -> dict:
        """`{gate: (x_inf, 1/tau)}` at voltage `v` for every gate the channels own."""
        # Rates at v clipped to [-250, 250] mV, far outside any physiological state (zero
        # gradient only out there). Overflow no longer needs it: the Traub and M channels clip
        # their own fused exponentials and the others use overflow-free forms; the clip keeps
        # the Ca and h channels' rates beyond ±250 mV as they have always been here.
        return super().inf_rate(jnp.clip(v, -250.0, 250.0))

    def channel_currents(self, state) -> dict:
        """`{"leak": ..., channel.name: ...}` current densities (µA/cm²) at `state` (the leak
        is `"l"` in [`hhjax.AbstractModel.currents`][])."""
        out = self.currents(state)
        return {("leak" if k == "l" else k): x for k, x in out.items()}


_LEAK = Leak()
