"""Figures of a fit: data and model overlaid, with residuals."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_fit"]


def plot_fit(result, *, truth=None, title: str | None = None, figsize=(10, 6)):
    """Overlay recorded and fitted voltage, with the residuals and the injected current.

    **Arguments:**

    - `result`: a [`FitResult`][] from [`fit`][] (all its recordings are drawn, side by side).
    - `truth`: optional `{name: value}` shown beside the fitted values (synthetic studies).
    - `title`: figure title.
    - `figsize`: matplotlib figure size (inches).

    **Returns:**

    The matplotlib `Figure` (three rows: voltage, residual, current).
    """
    import matplotlib.pyplot as plt

    traces = result.trace if isinstance(result.trace, list) else [result.trace]
    fig, axes = plt.subplots(
        3, len(traces), figsize=figsize, sharex="col", squeeze=False,
        gridspec_kw=dict(height_ratios=[3, 1.2, 1]), layout="constrained",
    )
    for c, tr in enumerate(traces):
        ts = np.asarray(tr.ts)
        ax = axes[0, c]
        ax.plot(ts, np.asarray(tr.v_data), color="0.6", lw=0.6, label="data")
        ax.plot(ts, np.asarray(tr.v), color="C3", lw=0.9, label="fit")
        ax.set_ylabel("v (mV)")
        axes[1, c].plot(ts, np.asarray(tr.residual), color="0.3", lw=0.4)
        axes[1, c].axhline(0.0, color="C3", lw=0.8)
        axes[1, c].set_ylabel("data − fit (mV)")
        axes[2, c].plot(ts, np.asarray(tr.i_inj), color="C0", lw=0.9)
        axes[2, c].set_ylabel("I (µA/cm²)")
        axes[2, c].set_xlabel("t (ms)")
    # Beside the axes, not over them: the trace fills every corner of its panel.
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    lines = []
    for n in result.free:
        lo, hi = result.ci[n]
        t = "" if truth is None or n not in truth else f"  (true {truth[n]:.5g})"
        lines.append(
            f"{n} = {result.values[n]:.5g} ± {result.stderr[n]:.2g} [{lo:.5g}, {hi:.5g}]{t}"
        )
    axes[1, -1].text(
        1.02, 1.0, "\n".join(lines), transform=axes[1, -1].transAxes, fontsize=7,
        family="monospace", va="top", ha="left",
    )
    if title:
        fig.suptitle(title)
    return fig
