"""hhjax.plot: figures render headless to PNG and show the data they were given, with units."""

import io
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

import hhjax
from hhjax import plot

matplotlib.use("Agg")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _fake(batch=(), n=200, shift=0.0):
    """A trajectory-like object with known, analytic contents."""
    ts = np.linspace(0.0, 20.0, n)
    base = np.sin(ts)
    shape = (*batch, n)
    v = np.broadcast_to(-65.0 + 100.0 * np.maximum(base, 0) + shift, shape).copy()
    if batch:
        v += np.arange(int(np.prod(batch))).reshape(*batch, 1)
    return SimpleNamespace(
        ts=np.broadcast_to(ts, shape),
        v=v,
        m=np.broadcast_to(0.5 + 0.5 * base, shape),
        h=np.broadcast_to(0.5 - 0.5 * base, shape),
        n=np.broadcast_to(0.5 + 0.25 * np.cos(ts), shape),
        i_stim=np.broadcast_to(np.where((ts >= 5) & (ts < 10), 10.0, 0.0), shape),
    )


def test_voltage_lines_labels_and_offset():
    a, b = _fake(), _fake(shift=1.0)
    fig = plot.voltage([a, b], labels=["A", "B"], v_offset=-70.0, xlim=(2.0, 18.0), title="T")
    _png(fig)
    ax_v, ax_i = fig.axes
    lines = ax_v.get_lines()
    assert [line.get_label() for line in lines] == ["A", "B"]
    np.testing.assert_allclose(lines[0].get_xdata(), a.ts)
    np.testing.assert_allclose(lines[0].get_ydata(), a.v - 70.0)
    np.testing.assert_allclose(lines[1].get_ydata(), b.v - 70.0)
    np.testing.assert_allclose(ax_i.get_lines()[0].get_ydata(), a.i_stim)
    assert "(mV)" in ax_v.get_ylabel() and "-70" in ax_v.get_ylabel()
    assert ax_i.get_xlabel() == "Time (ms)" and "µA/cm²" in ax_i.get_ylabel()
    assert ax_i.get_xlim() == (2.0, 18.0)
    assert [t.get_text() for t in ax_v.get_legend().get_texts()] == ["A", "B"]


def test_voltage_batch_draws_one_line_per_neuron_and_checks_labels():
    traj = _fake(batch=(2, 3))
    fig = plot.voltage(traj, stimulus=False)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 6
    np.testing.assert_allclose(ax.get_lines()[4].get_ydata(), traj.v[1, 1])
    assert ax.get_xlabel() == "Time (ms)" and ax.get_ylabel() == "Membrane potential (mV)"
    with pytest.raises(ValueError, match="labels"):
        plot.voltage([traj, traj], labels=["only one"])
    with pytest.raises(TypeError, match="Trajectory"):
        plot.voltage([np.zeros(3)])


def test_gates_content():
    traj = _fake()
    fig = plot.gates(traj)
    _png(fig)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["m (Na activation)", "h (Na inactivation)", "n (K activation)"]
    for line, name in zip(ax.get_lines(), "mhn"):
        np.testing.assert_allclose(line.get_ydata(), getattr(traj, name))
    assert ax.get_ylabel() == "Gate (open probability)"
    with pytest.raises(ValueError, match="no gate"):
        plot.gates(traj, names=("q",))


def test_currents_match_independent_formulas():
    p = hhjax.HHParams()
    traj = hhjax.simulate(p, hhjax.Step(10.0, 2.0, 8.0), 15.0, dt_save=0.1)
    fig = plot.currents(p, traj, xlim=(0.0, 15.0))
    _png(fig)
    (ax,) = fig.axes
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert list(lines) == ["I_Na", "I_K", "I_leak", "I_sum"]
    v, m, h, n = (np.asarray(getattr(traj, k)) for k in "vmhn")
    i_na = 120.0 * m**3 * h * (v - 50.0)
    i_k = 36.0 * n**4 * (v + 77.0)
    i_l = 0.3 * (v - (10.613 - 65.0))
    i_stim = np.where((traj.ts >= 2.0) & (traj.ts < 8.0), 10.0, 0.0)
    np.testing.assert_allclose(lines["I_Na"], i_na, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lines["I_K"], i_k, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lines["I_leak"], i_l, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(lines["I_sum"], i_stim - i_na - i_k - i_l, rtol=1e-12, atol=1e-9)
    assert ax.get_ylabel() == "Current density (µA/cm²)"
    with pytest.raises(ValueError, match="one neuron"):
        plot.currents(p, _fake(batch=(2,)))


def test_overview_has_four_labelled_panels():
    p = hhjax.HHParams()
    traj = hhjax.simulate(p, hhjax.Step(10.0, 2.0, 8.0), 15.0, dt_save=0.1)
    fig = plot.overview(p, traj, v_offset=65.0, title="o")
    _png(fig)
    ax_v, ax_i, ax_g, ax_c = fig.axes
    np.testing.assert_allclose(ax_v.get_lines()[0].get_ydata(), np.asarray(traj.v) + 65.0)
    assert len(ax_g.get_lines()) == 3 and len(ax_c.get_lines()) == 4
    assert ax_c.get_xlabel() == "Time (ms)"


def test_phase_plane_pairs_and_start_marker():
    traj = _fake()
    fig = plot.phase_plane(traj, pairs=(("v", "n"), ("v", "m")))
    _png(fig)
    ax_n, ax_m = fig.axes
    loop, start = ax_n.get_lines()[:2]
    np.testing.assert_allclose(loop.get_xdata(), traj.v)
    np.testing.assert_allclose(loop.get_ydata(), traj.n)
    np.testing.assert_allclose(start.get_xydata(), [[traj.v[0], traj.n[0]]])
    np.testing.assert_allclose(ax_m.get_lines()[0].get_ydata(), traj.m)
    assert ax_n.get_xlabel() == "Membrane potential (mV)"
    assert ax_n.get_ylabel().startswith("n") and ax_m.get_ylabel().startswith("m")
    with pytest.raises(ValueError, match="no field"):
        plot.phase_plane(traj, pairs=(("v", "zz"),))


def test_fi_curve_accepts_ficurve_and_pairs():
    curve = hhjax.FICurve(np.arange(5.0), np.array([0.0, 0, 50, 60, 70]), np.zeros(5))
    fig = plot.fi_curve(
        [curve, (np.arange(3.0), np.ones(3))], labels=["a", "b"], markers={"rheobase": 2.0}
    )
    _png(fig)
    (ax,) = fig.axes
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), [0, 0, 50, 60, 70])
    np.testing.assert_allclose(lines[1].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(lines[2].get_xdata(), [2.0, 2.0])  # the marker
    assert ax.get_xlabel() == "Step amplitude (µA/cm²)" and ax.get_ylabel() == "Firing rate (Hz)"
    with pytest.raises(ValueError, match="shape"):
        plot.fi_curve((np.arange(3.0), np.ones(4)))


def test_raster_places_ticks_at_threshold_crossings():
    ts = np.linspace(0.0, 10.0, 1001)
    # Neuron k crosses 0 mV upwards at t = 2 + k and t = 6 + k (linear ramps between samples).
    v = np.full((3, ts.size), -60.0)
    for k in range(3):
        for t_spike in (2.0 + k, 6.0 + k):
            v[k, (ts >= t_spike - 0.05) & (ts < t_spike + 0.2)] = 30.0
    traj = SimpleNamespace(ts=ts, v=v)
    fig = plot.raster(traj, values=[10.0, 20.0, 30.0], value_label="I (µA/cm²)")
    _png(fig)
    (ax,) = fig.axes
    points = ax.collections[0].get_offsets()
    assert points.shape == (6, 2)
    got = sorted(map(tuple, np.round(np.asarray(points), 1)))
    # The crossing lies within one sample (0.01 ms) before each raised block.
    assert got == sorted(
        [(1.9, 10.0), (5.9, 10.0), (2.9, 20.0), (6.9, 20.0), (3.9, 30.0), (7.9, 30.0)]
    )
    assert ax.get_ylabel() == "I (µA/cm²)" and ax.get_xlabel() == "Time (ms)"


def test_batch_and_sweep_heatmaps_hold_the_data():
    traj = _fake(batch=(4,))
    fig = plot.batch_heatmap(traj, values=[1.0, 2.0, 3.0, 4.0], value_label="g (mS/cm²)")
    _png(fig)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), traj.v)
    assert fig.axes[1].get_ylabel() == "Membrane potential (mV)"  # the colour bar
    z = np.arange(12.0).reshape(3, 4)
    fig = plot.sweep_heatmap(
        z, np.arange(4.0), np.arange(3.0), xlabel="g_Na (mS/cm²)", ylabel="g_K (mS/cm²)"
    )
    _png(fig)
    np.testing.assert_allclose(
        np.asarray(fig.axes[0].collections[0].get_array()).ravel(), z.ravel()
    )
    assert fig.axes[0].get_xlabel() == "g_Na (mS/cm²)"
    assert fig.axes[1].get_ylabel() == "Firing rate (Hz)"
    with pytest.raises(ValueError, match="len"):
        plot.sweep_heatmap(z.T, np.arange(4.0), np.arange(3.0), xlabel="x", ylabel="y")


def test_fit_overlay_residuals_and_rms():
    t = np.linspace(0.0, 10.0, 101)
    data = np.sin(t)
    fit = data + 0.5
    fig = plot.fit_overlay(t, data, fit, i_inj=np.ones_like(t), title="cell 1")
    _png(fig)
    ax_o, ax_r, ax_i = fig.axes
    np.testing.assert_allclose(ax_o.get_lines()[0].get_ydata(), data)
    np.testing.assert_allclose(ax_o.get_lines()[1].get_ydata(), fit)
    np.testing.assert_allclose(ax_r.get_lines()[0].get_ydata(), -0.5)
    assert "RMS residual 0.5 mV" in fig.get_suptitle()
    assert ax_r.get_ylabel() == "Residual (mV)" and ax_i.get_xlabel() == "Time (ms)"
    fig2 = plot.fit_overlay(t, np.stack([data, data]), np.stack([fit, data]))
    assert len(fig2.axes) == 2 and len(fig2.axes[1].get_lines()) == 3  # 2 sweeps + zero line
    with pytest.raises(ValueError, match="shape"):
        plot.fit_overlay(t, data, fit[:-1])


@pytest.fixture(scope="module")
def simulated():
    p = hhjax.HHParams()
    return p, hhjax.simulate(p, hhjax.Step(10.0, 2.0, 8.0), 15.0, dt_save=0.1)


_LEGENDED = {
    "voltage": lambda p, tr: plot.voltage([_fake(), _fake(shift=1.0)], labels=["Euler", "Tsit5"]),
    "gates": lambda p, tr: plot.gates([_fake(), _fake(shift=1.0)], labels=["Euler", "Tsit5"]),
    "currents": lambda p, tr: plot.currents(p, tr),
    "phase_plane": lambda p, tr: plot.phase_plane([_fake(), _fake()], labels=["a", "b"]),
    "fi_curve": lambda p, tr: plot.fi_curve(
        (np.arange(10.0), np.arange(10.0) ** 2), labels="c", markers={"rheobase": 4.0}
    ),
    "fit_overlay": lambda p, tr: plot.fit_overlay(
        np.linspace(0, 1, 50), np.ones(50), np.zeros(50), i_inj=np.ones(50)
    ),
    "overview": lambda p, tr: plot.overview(p, tr),
}


@pytest.mark.parametrize("name", sorted(_LEGENDED))
def test_legends_cover_no_axes(name, simulated):
    # A legend drawn over an axes hides whatever data lands there; each must sit beside its
    # axes, inside the figure, and leave the plots most of the width.
    fig = _LEGENDED[name](*simulated)
    fig.draw_without_rendering()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "expected a legend"
    fig_box = fig.bbox
    for legend in legends:
        box = legend.get_window_extent()
        assert fig_box.x0 <= box.x0 and box.x1 <= fig_box.x1 + 0.5, "legend cut off"
        assert fig_box.y0 <= box.y0 and box.y1 <= fig_box.y1 + 0.5, "legend cut off"
        for ax in fig.axes:
            assert not box.overlaps(ax.bbox), f"the legend covers an axes of {name}"
    plots = [ax for ax in fig.axes if ax.get_lines()]
    span = max(ax.bbox.x1 for ax in plots) - min(ax.bbox.x0 for ax in plots)
    assert span >= 0.5 * fig_box.width
    if name == "phase_plane":
        assert len(legends) == 1  # both panels draw the same trajectories
