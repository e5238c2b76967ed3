"""The protocol suite of the fitting studies: stimuli, perturbed truths and scipy reference data.

Every current is held over each sample interval (as a digitiser's command is), so the
recording's `i_inj` is exactly the current the reference solve applied. The reference is scipy's
DOP853 at rtol = atol = 1e-10, restarted at every change of the current (3–5× faster than Radau
at the same tolerance here; the two agree to 9e-10 mV on an HH OU trace and 7e-5 mV on a
cortical step trace); it never calls hhjax's
solvers (only the model's right-hand side, for the cortical truths; the HH right-hand side is
re-stated here in numpy).

Protocols (`PROTOCOLS`), each `make(seed, t1, dt) -> i_inj` on the sample grid:

- `steps`: the recovery study's train (20 ms at zero, then 50 ms steps of 3, 7, 12 and 20
  µA/cm² separated by 20 ms at zero), scaled to the truth's rheobase by `scale`.
- `random_steps`: a new level every 2–5 ms, uniform in [-2, 12] µA/cm² × scale; the first
  sample is already non-zero while the cell sat at rest under zero current.
- `ou`: Ornstein–Uhlenbeck current, mean 4, SD 4 µA/cm² × scale, correlation time 2 ms; the
  cell at rest under zero current before it.
- `ramp`: from 0 to 50 µA/cm² × scale over the recording (0.25 µA/cm²/ms over 200 ms). A
  ramp to 15 µA/cm² left 3 of 4 perturbed HH truths silent (accommodation); a silent trace
  cannot identify g_Na, and some truths stay silent even at 50 (HH seed 1: none up to 100).
"""

from __future__ import annotations

import numpy as np

PROTOCOLS = ("steps", "random_steps", "ou", "ramp")


def grid(t1: float, dt: float) -> np.ndarray:
    return np.round(np.arange(int(round(t1 / dt)) + 1) * dt, 10)


def current(protocol: str, seed: int, ts: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The protocol's current (µA/cm²) at the sample times `ts` (held until the next one)."""
    rng = np.random.default_rng(10_000 + seed)
    t1 = float(ts[-1])
    if protocol == "steps":
        i = np.zeros_like(ts)
        for amp, on in zip((3.0, 7.0, 12.0, 20.0), (20.0, 90.0, 160.0, 230.0)):
            on, off = on * t1 / 300.0, (on + 50.0) * t1 / 300.0
            i[(ts >= on - 1e-9) & (ts < off - 1e-9)] = amp
    elif protocol == "random_steps":
        edges = [0.0]
        while edges[-1] < t1:
            edges.append(edges[-1] + rng.uniform(2.0, 5.0))
        levels = rng.uniform(-2.0, 12.0, len(edges))
        levels[0] = rng.uniform(4.0, 12.0)  # never starts at zero
        i = levels[np.searchsorted(np.asarray(edges), ts, side="right") - 1]
    elif protocol == "ou":
        dt = float(ts[1] - ts[0])
        tau, mean, sd = 2.0, 4.0, 4.0
        a = np.exp(-dt / tau)
        x = np.empty_like(ts)
        x[0] = mean + sd * rng.standard_normal()
        z = rng.standard_normal(len(ts))
        for k in range(1, len(ts)):
            x[k] = mean + a * (x[k - 1] - mean) + sd * np.sqrt(1 - a * a) * z[k]
        i = x
    elif protocol == "ramp":
        i = 50.0 * ts / t1
    else:
        raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")
    return scale * np.asarray(i, dtype=np.float64)


# ----------------------------------------------------------------------------- truths
HH_FREE = ("g_na", "g_k", "g_l", "e_l", "c_m")
RS_FREE = ("g_na", "g_kd", "g_m", "g_l", "e_l", "v_t", "c_m")


def hh_truth(seed: int):
    """Classic HH (the presets): each conductance ×U(0.8, 1.2), E_L ± U(5) mV, C ×U(0.9, 1.1)."""
    import hhjax

    rng = np.random.default_rng(20_000 + seed)
    p = hhjax.HHParams()
    return p.replace(g_na=120.0 * rng.uniform(0.8, 1.2), g_k=36.0 * rng.uniform(0.8, 1.2),
                     g_l=0.3 * rng.uniform(0.8, 1.2), e_l=float(p.e_l) + rng.uniform(-5, 5),
                     c_m=rng.uniform(0.9, 1.1))


def rs_truth(seed: int):
    """Pospischil regular spiking with each conductance ×U(0.8, 1.2), E_L and V_T ± U(5) mV."""
    from hhjax.models import Pospischil

    rng = np.random.default_rng(30_000 + seed)
    p = Pospischil.regular_spiking()
    return p.replace(g_na=float(p.g_na) * rng.uniform(0.8, 1.2),
                     g_kd=float(p.g_kd) * rng.uniform(0.8, 1.2),
                     g_m=float(p.g_m) * rng.uniform(0.8, 1.2),
                     g_l=float(p.g_l) * rng.uniform(0.8, 1.2),
                     e_l=float(p.e_l) + rng.uniform(-5, 5),
                     v_t=float(p.v_t) + rng.uniform(-5, 5),
                     c_m=rng.uniform(0.9, 1.1))


# ----------------------------------------------------------------------------- reference
def _hh_rhs(p):
    """The HH right-hand side in numpy, y = (v, m, h, n), from the 1952 rates in the model's
    voltage convention (`v_ref`) at its temperature."""
    g_na, g_k, g_l = float(p.g_na), float(p.g_k), float(p.g_l)
    e_na, e_k, e_l, c_m = float(p.e_na), float(p.e_k), float(p.e_l), float(p.c_m)
    v_ref = float(p.v_ref)
    phi = 3.0 ** ((float(p.temperature) - 6.3) / 10.0)

    def rates(u):
        am = 0.1 * (25.0 - u) / np.expm1((25.0 - u) / 10.0) if abs(u - 25) > 1e-7 else 1.0
        bm = 4.0 * np.exp(-u / 18.0)
        ah = 0.07 * np.exp(-u / 20.0)
        bh = 1.0 / (np.exp((30.0 - u) / 10.0) + 1.0)
        an = 0.01 * (10.0 - u) / np.expm1((10.0 - u) / 10.0) if abs(u - 10) > 1e-7 else 0.1
        bn = 0.125 * np.exp(-u / 80.0)
        return phi * am, phi * bm, phi * ah, phi * bh, phi * an, phi * bn

    def f(y, i):
        v, m, h, n = y
        am, bm, ah, bh, an, bn = rates(v - v_ref)
        i_ion = g_na * m**3 * h * (v - e_na) + g_k * n**4 * (v - e_k) + g_l * (v - e_l)
        return np.array([(i - i_ion) / c_m, am * (1 - m) - bm * m, ah * (1 - h) - bh * h,
                         an * (1 - n) - bn * n])

    return f


def _jax_rhs(model):
    """A model's right-hand side as numpy (for models without a numpy re-statement)."""
    import jax
    import jax.numpy as jnp

    y0 = model.rest_state(0.0)
    leaves, treedef = jax.tree_util.tree_flatten(y0)

    @jax.jit
    def field(y, i):
        s = jax.tree_util.tree_unflatten(treedef, list(y))
        d = model.vector_field(0.0, s, lambda t: i)
        return jnp.stack(jax.tree_util.tree_leaves(d))

    return lambda y, i: np.asarray(field(jnp.asarray(y), i))


def reference(model, i_inj: np.ndarray, ts: np.ndarray, i_hold: float = 0.0):
    """Voltage (mV) at `ts` from scipy DOP853 (rtol = atol = 1e-10), the current `i_inj[k]` held on
    [t_k, t_{k+1}), starting at rest under `i_hold` (not under `i_inj[0]`)."""
    from scipy.integrate import solve_ivp

    import hhjax

    f = _hh_rhs(model) if isinstance(model, hhjax.HHParams) else _jax_rhs(model)
    import jax

    y = np.asarray([float(x) for x in jax.tree_util.tree_leaves(model.rest_state(i_hold))])
    if not np.all(np.isfinite(y)):
        raise ValueError("the truth has no rest state under i_hold")
    change = np.flatnonzero(np.diff(i_inj) != 0) + 1
    cuts = np.concatenate([[0], change, [len(ts) - 1]])
    cuts = np.unique(cuts)
    v = np.empty(len(ts))
    v[0] = y[0]
    for a, b in zip(cuts[:-1], cuts[1:]):
        cur = float(i_inj[a])
        sol = solve_ivp(lambda t, yy, cur=cur: f(yy, cur), (ts[a], ts[b]), y, method="DOP853",
                        rtol=1e-10, atol=1e-10, t_eval=ts[a:b + 1], first_step=1e-5)
        if not sol.success:
            raise RuntimeError(sol.message)
        v[a:b + 1] = sol.y[0]
        y = sol.y[:, -1]
    return v
