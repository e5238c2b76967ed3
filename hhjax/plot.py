"""Matplotlib figures of simulations, sweeps and fits.

Units on every axis: time in ms, voltage in mV, current density in µA/cm², conductance in
mS/cm², rate in Hz. Every function returns a new `matplotlib.figure.Figure` (built without
`pyplot`, so nothing is shown or kept alive behind your back); save it with
`fig.savefig("name.png")`, or let Jupyter display it.

Functions taking a trajectory accept a [`hhjax.Trajectory`][] with or without batch axes (a batch
is drawn as one line per neuron), or a sequence of trajectories drawn on the same axes with
`labels` (e.g. forward Euler beside the adaptive solution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "TIME",
    "VOLTAGE",
    "CURRENT",
    "GATE",
    "RATE",
    "AMPLITUDE",
    "voltage",
    "gates",
    "currents",
    "phase_plane",
    "fi_curve",
    "raster",
    "batch_heatmap",
    "sweep_heatmap",
    "fit_overlay",
    "overview",
]

TIME = "Time (ms)"
VOLTAGE = "Membrane potential (mV)"
CURRENT = "Current density (µA/cm²)"
GATE = "Gate (open probability)"
RATE = "Firing rate (Hz)"
AMPLITUDE = "Step amplitude (µA/cm²)"

_GATE_LABELS = {"m": "m (Na activation)", "h": "h (Na inactivation)", "n": "n (K activation)"}
_VAR_LABELS = {
    "v": VOLTAGE,
    "m": "m (Na activation)",
    "h": "h (Na inactivation)",
    "n": "n (K activation)",
}


# ---------------------------------------------------------------------------- helpers
def _as_list(traj, labels) -> tuple[list, list]:
    """Normalise one trajectory or a sequence of them (with optional labels)."""
    if isinstance(traj, Sequence) and not hasattr(traj, "v"):
        trajs = list(traj)
    else:
        trajs = [traj]
    if not trajs:
        raise ValueError("`traj` is an empty sequence; pass at least one trajectory.")
    for k, t in enumerate(trajs):
        if not hasattr(t, "ts") or not hasattr(t, "v"):
            raise TypeError(
                f"`traj` item {k} must be an hhjax.Trajectory (with .ts and .v), "
                f"got {type(t).__name__}."
            )
    if labels is None:
        labels = [None] * len(trajs)
    elif isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if len(labels) != len(trajs):
        raise ValueError(
            f"`labels` has {len(labels)} entries for {len(trajs)} trajectories; give one each."
        )
    return trajs, labels


def _rows(x) -> np.ndarray:
    """Any `(*batch, times)` array as `(neurons, times)` numpy."""
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def _lines(ax, ts, ys, label, *, scale=1.0, offset=0.0, **kwargs):
    """Plot each row of `ys` against the matching row of `ts`; label only the first."""
    ts, ys = _rows(ts), _rows(ys)
    ts = np.broadcast_to(ts, ys.shape)
    drawn = []
    for k in range(ys.shape[0]):
        (line,) = ax.plot(ts[k], scale * ys[k] + offset, label=label if k == 0 else None, **kwargs)
        drawn.append(line)
    return drawn


def _legend(ax):
    """The legend of `ax` beside it, top-aligned on its right edge.

    Outside the axes it covers no data whatever the traces look like (an inside corner or
    matplotlib's `loc="best"` still lands on spikes, gates near 0 and 1, or a rising f–I curve);
    the figures are built with the constrained layout, which narrows the axes to make room.
    """
    return ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small"
    )


def _labelled(ax) -> bool:
    return any(h.get_label() and not h.get_label().startswith("_") for h in ax.get_lines())


def _finish(ax, xlabel, ylabel, xlim=None, title=None, legend=True):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if title:
        ax.set_title(title)
    if legend and _labelled(ax):
        _legend(ax)


# ---------------------------------------------------------------------------- traces
def voltage(
    traj,
    *,
    labels: Sequence[str] | str | None = None,
    stimulus: bool = True,
    v_offset: float = 0.0,
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.5),
) -> Figure:
    """Membrane potential over time, with the injected current in a panel below.

    **Arguments:**

    - `traj`: a [`hhjax.Trajectory`][] (batched or not) or a sequence of them.
    - `labels`: one legend label per trajectory.
    - `stimulus`: draw `traj.i_stim` (µA/cm²) in a lower panel sharing the time axis.
    - `v_offset`: added to the voltage (mV) before plotting, e.g. -70 to draw the 1952
      convention shifted as in the seed tutorials; the axis label says so.
    - `xlim`: time window (ms). `title`: figure title.

    **Returns:**

    A `Figure`: axes 0 is the voltage (mV), axes 1 (if `stimulus`) the current (µA/cm²).
    """
    trajs, labels = _as_list(traj, labels)
    fig = Figure(figsize=figsize, layout="constrained")
    if stimulus:
        ax_v, ax_i = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    else:
        ax_v, ax_i = fig.subplots(1, 1), None
    for t, label in zip(trajs, labels):
        _lines(ax_v, t.ts, t.v, label, offset=v_offset, lw=1.5)
        if ax_i is not None:
            _lines(ax_i, t.ts, t.i_stim, label, color="sandybrown", lw=1.5)
    ylabel = VOLTAGE if v_offset == 0 else f"{VOLTAGE[:-5]} {v_offset:+g} (mV)"
    _finish(ax_v, "" if ax_i is not None else TIME, ylabel, xlim, None)
    if ax_i is not None:
        ax_i.set_xlabel(TIME)
        ax_i.set_ylabel("I_stim (µA/cm²)")
        if xlim is not None:
            ax_i.set_xlim(*xlim)
        if ax_i.get_legend() is not None:
            ax_i.get_legend().remove()
    if title:
        fig.suptitle(title)
    return fig


def _gate_names(traj) -> tuple[str, ...]:
    """The gates of a trajectory's state: a `Membrane`'s own, else every field but `v` that
    is not identically 0 (the cortical state carries all eight gates; unused ones stay 0).
    Objects that are not a `Trajectory` (any object with `ts`, `v` and gate attributes): m, h,
    n."""
    from ._simulate import Trajectory
    from .models import MembraneState

    if not isinstance(traj, Trajectory):
        return ("m", "h", "n")
    state = traj.state
    if isinstance(state, MembraneState):
        return tuple(state.gates)
    fields = (f.name for f in dataclasses.fields(state) if f.name != "v")
    return tuple(n for n in fields if np.any(np.asarray(getattr(state, n)) != 0))


def gates(
    traj,
    *,
    names: Sequence[str] | None = None,
    labels: Sequence[str] | str | None = None,
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.0),
) -> Figure:
    """The gating variables over time (seed 000's second figure).

    **Arguments:**

    - `traj`: a [`hhjax.Trajectory`][] or a sequence of them (drawn solid, dashed, dotted...).
    - `names`: which gates to draw; default every gate of the (first) trajectory's model
      (HH: m, h, n; a cortical model's unused gates, identically 0, are left out).
    - `labels`: one label per trajectory, appended to the gate names.
    - `xlim`, `title`: as in [`voltage`][].

    **Returns:**

    A `Figure` with one axes; y from 0 to 1.
    """
    trajs, labels = _as_list(traj, labels)
    if names is None:
        names = _gate_names(trajs[0])
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    styles = ("-", "--", ":", "-.")
    for j, (t, label) in enumerate(zip(trajs, labels)):
        for k, name in enumerate(names):
            if not hasattr(t, name):
                raise ValueError(f"`names`: the trajectory has no gate {name!r}.")
            text = _GATE_LABELS.get(name, name) + (f" — {label}" if label else "")
            _lines(ax, t.ts, getattr(t, name), text, color=f"C{k}", ls=styles[j % 4], lw=1.5)
    ax.set_ylim(-0.02, 1.02)
    _finish(ax, TIME, GATE, xlim, title)
    return fig


_CURRENT_LABELS = {"na": "I_Na", "k": "I_K", "l": "I_leak"}


def _current_lines(c) -> list:
    """`(label, values)` per channel current, then I_sum."""
    lines = [(_CURRENT_LABELS.get(k, "I_" + k), x) for k, x in c.channels.items()]
    return lines + [("I_sum", c.i_sum)]


def currents(
    params,
    traj,
    *,
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.0),
) -> Figure:
    """Every channel's current and the net current I_sum (seed 000's third figure for HH).

    Ionic currents are outward positive; `I_sum = I_stim - Σ I_channel` is the current
    charging the membrane ($C_m\\,dv/dt$), as computed by [`hhjax.currents`][].

    **Arguments:**

    - `params`: the model the trajectory was simulated with (any [`hhjax.AbstractModel`][]).
    - `traj`: an unbatched [`hhjax.Trajectory`][].
    - `xlim`, `title`: as in [`voltage`][].

    **Returns:**

    A `Figure` with one axes (µA/cm²) and a line per channel plus I_sum (HH: I_Na, I_K,
    I_leak, I_sum).
    """
    from ._simulate import currents as compute_currents

    if np.ndim(traj.v) != 1:
        raise ValueError(
            f"currents: pass one neuron's trajectory, got v of shape {np.shape(traj.v)}; "
            "index the batch first."
        )
    c = compute_currents(params, traj)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for label, values in _current_lines(c):
        ax.plot(np.asarray(traj.ts), np.asarray(values), label=label, lw=1.5)
    _finish(ax, TIME, CURRENT, xlim, title)
    return fig


def phase_plane(
    traj,
    *,
    pairs: Sequence[tuple[str, str]] = (("v", "n"), ("v", "m")),
    labels: Sequence[str] | str | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Phase-plane projections of the trajectory, e.g. the V–n and V–m loops of seed 001.

    **Arguments:**

    - `traj`: a [`hhjax.Trajectory`][] or a sequence of them.
    - `pairs`: `(x, y)` field names, one panel each; default `(v, n)` and `(v, m)`.
    - `labels`: one label per trajectory. `title`: figure title.

    **Returns:**

    A `Figure` with one axes per pair; the start of each trajectory is marked with a dot.
    """
    trajs, labels = _as_list(traj, labels)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("`pairs` is empty; pass at least one (x, y) pair of field names.")
    fig = Figure(figsize=figsize or (4.2 * len(pairs), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    for ax, (xn, yn) in zip(axes, pairs):
        for j, (t, label) in enumerate(zip(trajs, labels)):
            for name in (xn, yn):
                if not hasattr(t, name):
                    raise ValueError(f"`pairs`: the trajectory has no field {name!r}.")
            xs, ys = _rows(getattr(t, xn)), _rows(getattr(t, yn))
            for k in range(xs.shape[0]):
                ax.plot(xs[k], ys[k], color=f"C{j}", lw=1.2, label=label if k == 0 else None)
                ax.plot(xs[k, :1], ys[k, :1], "o", color=f"C{j}", ms=4)
        # Every panel draws the same trajectories: one legend, beside the last panel.
        _finish(ax, _VAR_LABELS.get(xn, xn), _VAR_LABELS.get(yn, yn), legend=ax is axes[-1])
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- sweeps
def fi_curve(
    curves,
    *,
    labels: Sequence[str] | str | None = None,
    markers: dict[str, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Firing rate against step amplitude.

    **Arguments:**

    - `curves`: an [`hhjax.FICurve`][], an `(amplitudes, rates)` pair, or a sequence of either.
    - `labels`: one label per curve.
    - `markers`: named amplitudes (µA/cm²) drawn as vertical dashed lines, e.g.
      `{"rheobase": 6.26}`.
    - `title`: axes title.

    **Returns:**

    A `Figure` with one axes: amplitude (µA/cm²) against rate (Hz).
    """
    if hasattr(curves, "rates") or (
        isinstance(curves, tuple) and len(curves) == 2 and not hasattr(curves[0], "rates")
    ):
        curves = [curves]
    curves = list(curves)
    if labels is None:
        labels = [None] * len(curves)
    elif isinstance(labels, str):
        labels = [labels]
    if len(labels) != len(curves):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(curves)} curves.")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for curve, label in zip(curves, labels):
        if hasattr(curve, "rates"):
            amps, rates = curve.amplitudes, curve.rates
        else:
            amps, rates = curve
        amps, rates = np.asarray(amps).reshape(-1), np.asarray(rates).reshape(-1)
        if amps.shape != rates.shape:
            raise ValueError(
                f"f–I curve: amplitudes {amps.shape} and rates {rates.shape} differ in shape."
            )
        ax.plot(amps, rates, ".-" if amps.size <= 60 else "-", lw=1.5, label=label)
    for k, (name, value) in enumerate((markers or {}).items()):
        ax.axvline(float(value), color=f"C{k + 3}", ls="--", lw=1, label=f"{name} {value:.3g}")
    _finish(ax, AMPLITUDE, RATE, None, title)
    return fig


def raster(
    traj,
    *,
    threshold: float = 0.0,
    values=None,
    value_label: str = "Neuron",
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 4.0),
) -> Figure:
    """Spike raster of a batch: one row per neuron, a tick at each threshold crossing.

    **Arguments:**

    - `traj`: a batched [`hhjax.Trajectory`][] (the batch is flattened in C order).
    - `threshold`: spike detection level (mV).
    - `values`: the y coordinate of each neuron (e.g. its step amplitude); default its index.
    - `value_label`: y-axis label (with units if `values` has them).
    - `xlim`, `title`: as in [`voltage`][].

    **Returns:**

    A `Figure` with one axes; `ax.collections[0]` holds the spike ticks.
    """
    from ._features import spike_times

    v = _rows(traj.v)
    ts = np.broadcast_to(_rows(traj.ts), v.shape)
    times = np.asarray(spike_times(ts, v, threshold))
    ys = np.arange(v.shape[0]) if values is None else np.asarray(values).reshape(-1)
    if ys.shape[0] != v.shape[0]:
        raise ValueError(f"`values` has {ys.shape[0]} entries for {v.shape[0]} neurons.")
    rows = np.broadcast_to(ys[:, None], times.shape)
    keep = np.isfinite(times)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.scatter(times[keep], rows[keep], marker="|", s=40, color="k", lw=1)
    ax.set_ylim(ys.min() - 0.5 * _step(ys), ys.max() + 0.5 * _step(ys))
    _finish(ax, TIME, value_label, xlim or (float(ts.min()), float(ts.max())), title)
    return fig


def _step(ys) -> float:
    d = np.diff(np.unique(ys))
    return float(d.min()) if d.size else 1.0


def batch_heatmap(
    traj,
    *,
    values=None,
    value_label: str = "Neuron",
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 4.0),
) -> Figure:
    """The voltage of a batch as an image: time across, neurons down, colour in mV.

    **Arguments:**

    - `traj`: a batched [`hhjax.Trajectory`][] (all neurons on one time grid).
    - `values`: the (increasing) y coordinate of each neuron; default its index.
    - `value_label`, `title`: labels.

    **Returns:**

    A `Figure`; `ax.images[0]` holds the `(neurons, times)` voltage array.
    """
    v = _rows(traj.v)
    ts = _rows(traj.ts)[0]
    ys = np.arange(v.shape[0]) if values is None else np.asarray(values).reshape(-1)
    if ys.shape[0] != v.shape[0]:
        raise ValueError(f"`values` has {ys.shape[0]} entries for {v.shape[0]} neurons.")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    half = 0.5 * _step(ys)
    image = ax.imshow(
        v,
        aspect="auto",
        origin="lower",
        extent=(float(ts[0]), float(ts[-1]), float(ys[0]) - half, float(ys[-1]) + half),
        cmap="viridis",
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label=VOLTAGE)
    _finish(ax, TIME, value_label, None, title)
    return fig


def sweep_heatmap(
    z,
    x,
    y,
    *,
    xlabel: str,
    ylabel: str,
    zlabel: str = RATE,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.5),
) -> Figure:
    """A quantity over a two-parameter grid, e.g. firing rate over g_Na × g_K.

    **Arguments:**

    - `z`: values of shape `(len(y), len(x))` (rows follow `y`).
    - `x`, `y`: the grid coordinates (1-D, increasing).
    - `xlabel`, `ylabel`, `zlabel`: axis and colour-bar labels, with units.
    - `title`: axes title.

    **Returns:**

    A `Figure`; `ax.collections[0]` is the `pcolormesh` of `z`.
    """
    z, x, y = np.asarray(z), np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    if z.shape != (y.size, x.size):
        raise ValueError(
            f"`z` must have shape (len(y), len(x)) = ({y.size}, {x.size}), got {z.shape}."
        )
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(x, y, z, shading="nearest", cmap="magma")
    fig.colorbar(mesh, ax=ax, label=zlabel)
    _finish(ax, xlabel, ylabel, None, title)
    return fig


# ---------------------------------------------------------------------------- fits
def fit_overlay(
    t,
    v_data,
    v_fit,
    *,
    i_inj=None,
    labels: tuple[str, str] = ("data", "fit"),
    ylabel: str = VOLTAGE,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 5.0),
) -> Figure:
    """Data against a fitted model, with the residuals (data - fit) below.

    **Arguments:**

    - `t`: sample times (ms), shape `(times,)`.
    - `v_data`, `v_fit`: recorded and modelled voltage (mV), shape `(times,)` or
      `(sweeps, times)` (one colour per sweep).
    - `i_inj`: optional injected current (µA/cm² or as recorded) drawn in a third panel.
    - `labels`: legend names of data and fit. `ylabel`: the data axis label.
    - `title`: figure title; the RMS residual (mV) is appended.

    **Returns:**

    A `Figure`: axes 0 overlay, axes 1 residuals (same units as the data), axes 2 the current
    if given.
    """
    t = np.asarray(t).reshape(-1)
    v_data, v_fit = _rows(v_data), _rows(v_fit)
    if v_data.shape != v_fit.shape or v_data.shape[-1] != t.size:
        raise ValueError(
            f"fit_overlay: `v_data` {v_data.shape}, `v_fit` {v_fit.shape} and `t` ({t.size},) "
            "must share the time axis and shape."
        )
    residual = v_data - v_fit
    rms = float(np.sqrt(np.nanmean(residual**2)))
    panels = 3 if i_inj is not None else 2
    ratios = (3, 1.3, 1)[:panels]
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, height_ratios=ratios)
    for k in range(v_data.shape[0]):
        color = f"C{k % 10}"
        axes[0].plot(
            t, v_data[k], color=color, lw=1.6, alpha=0.55, label=labels[0] if k == 0 else None
        )
        axes[0].plot(t, v_fit[k], color=color, lw=1.0, ls="--", label=labels[1] if k == 0 else None)
        axes[1].plot(t, residual[k], color=color, lw=1.0)
    axes[1].axhline(0.0, color="k", lw=0.6)
    axes[0].set_ylabel(ylabel)
    _legend(axes[0])
    unit = ylabel[ylabel.rfind("(") :] if "(" in ylabel else ""
    axes[1].set_ylabel(f"Residual {unit}".strip())
    if i_inj is not None:
        i_rows = _rows(i_inj)
        for k in range(i_rows.shape[0]):
            axes[2].plot(t, i_rows[k], color=f"C{k % 10}", lw=1.0)
        axes[2].set_ylabel("I_inj")
    axes[-1].set_xlabel(TIME)
    fig.suptitle(f"{title + ' — ' if title else ''}RMS residual {rms:.3g} {unit.strip('()')}")
    return fig


def overview(
    params,
    traj,
    *,
    v_offset: float = 0.0,
    xlim: tuple[float, float] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 9.0),
) -> Figure:
    """Voltage with stimulus, gates and currents stacked on one time axis (the seed-000 trio).

    **Arguments:**

    - `params`, `traj`: as in [`currents`][] (one neuron).
    - `v_offset`, `xlim`, `title`: as in [`voltage`][].

    **Returns:**

    A `Figure` with four axes: voltage (mV), stimulus (µA/cm²), gates, currents (µA/cm²).
    """
    from ._simulate import currents as compute_currents

    if np.ndim(traj.v) != 1:
        raise ValueError(f"overview: pass one neuron's trajectory, got v {np.shape(traj.v)}.")
    fig = Figure(figsize=figsize, layout="constrained")
    ax_v, ax_i, ax_g, ax_c = fig.subplots(4, 1, sharex=True, height_ratios=(3, 1, 2, 2.5))
    ts = np.asarray(traj.ts)
    ax_v.plot(ts, np.asarray(traj.v) + v_offset, lw=1.5)
    ax_v.set_ylabel(VOLTAGE if v_offset == 0 else f"V {v_offset:+g} (mV)")
    ax_i.plot(ts, np.asarray(traj.i_stim), color="sandybrown", lw=1.5)
    ax_i.set_ylabel("I_stim (µA/cm²)")
    for k, name in enumerate(params.gate_names):
        label = _GATE_LABELS.get(name, name)
        ax_g.plot(ts, np.asarray(getattr(traj, name)), color=f"C{k}", label=label)
    ax_g.set_ylabel("Gate")
    _legend(ax_g)
    c = compute_currents(params, traj)
    for label, values in _current_lines(c):
        ax_c.plot(ts, np.asarray(values), label=label)
    ax_c.set_ylabel(CURRENT)
    _legend(ax_c)
    ax_c.set_xlabel(TIME)
    if xlim is not None:
        ax_c.set_xlim(*xlim)
    if title:
        fig.suptitle(title)
    return fig
