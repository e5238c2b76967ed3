"""The fused Pallas kernel (`hhjax._fused`) against the XLA kernel of `simulate_batch`.

On a CPU the kernel runs in Pallas' interpreter: it must give the XLA kernel's spike counts
exactly and its spike times and final states to rounding, for HH and the cortical family, in
both dtypes, for every kind of stimulus, with neuron counts that leave a partial last block
and step counts that leave a partial last record block. A CUDA lowering through `jax.export`
(Triton; no GPU needed) makes a kernel that would not build on a GPU fail here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.export import DisabledSafetyCheck, export

import hhjax
from hhjax._batch import KernelConfig, _run_chunk
from hhjax._fused import _BLOCK, fused_chunk, fused_chunk_jit
from hhjax.models import HCurrent, HHPotassium, HHSodium, Leak, Membrane, MSlow

SIZE = _BLOCK + 72  # a full block and a partial one
# 2,393 steps of 0.025 ms: 119 record blocks of 20 steps and a tail of 13.
CONFIG = dict(t0=0.0, dt=0.025, n_blocks=119, block=20, tail=13, max_spikes=12)
SPAN = (0.0, 60.0)


def _models():
    return {
        "hh": hhjax.HHParams(),  # modern convention (rest near -65 mV)
        "hh1952": hhjax.HHParams.squid_1952(),  # rest at 0 mV: threshold 65 mV
        "rs": hhjax.models.Pospischil.regular_spiking(),
        "ib": hhjax.models.Pospischil.intrinsically_bursting(),  # + I_L, I_M
        "lts": hhjax.models.Pospischil.low_threshold(),  # + I_T, I_M
        # A user-composed model: HH channels, an h current and a slow K current, 16.3 °C.
        "composed": Membrane(
            (HHSodium(), HHPotassium(), HCurrent(), MSlow(), Leak()),
            dict(g_na=120.0, e_na=50.0, g_k=36.0, e_k=-77.0, v_ref=-65.0, temperature=16.3,
                 g_h=0.05, e_h=-43.0, g_m=0.3, tau_max=608.0, g_l=0.3, e_l=-54.4, c_m=1.0),
        ),
    }


def _scale(name):
    """Current densities (µA/cm²) that take each model from silence to firing."""
    return 15.0 if name.startswith(("hh", "composed")) else 1.5


def _stimuli(name, dtype):
    top = _scale(name)
    amps = jnp.linspace(0.0, top, SIZE, dtype=dtype)
    ts = jnp.linspace(*SPAN, 301)
    return {
        "none": None,
        "step_shared": hhjax.Step(0.8 * top, 5.0),
        "step_per_neuron": hhjax.Step(amps, 5.0, 40.0),
        "constant_per_neuron": amps,  # an array stimulus: one constant current each
        "pulses_shared": hhjax.Pulses.train(2.0 * top, 2.0, 3.0, 10.0, 4),
        "pulses_per_neuron": hhjax.Pulses(
            jnp.stack([amps, 0.5 * amps, 2.0 * amps], -1), jnp.array([1.0, 15.0, 30.0]), 8.0
        ),
        "sampled_linear": hhjax.Sampled(ts, top * jnp.sin(ts / 5.0) ** 2),
        "sampled_hold": hhjax.Sampled(ts, top * (ts > 10.0), hold=True),
        "ou": hhjax.OUNoise(0.7 * top, 0.3 * top, 5.0, *SPAN, key=jax.random.key(0)),
        "sum": hhjax.Step(0.7 * amps, 3.0)
        + hhjax.OUNoise(0.0, 0.2 * top, 5.0, *SPAN, key=jax.random.key(1)),
    }


def _config(params, record=()):
    return KernelConfig(threshold=float(params.spike_threshold), record=record, **CONFIG)


def _assert_same(xla, fused, dtype):
    count, times, dropped, state, record = xla
    f_count, f_times, f_dropped, f_state, f_record = fused
    assert len(f_record) == len(record)
    for a, b in zip(record, f_record):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-3 if dtype == jnp.float32 else 1e-8)
    np.testing.assert_array_equal(f_count, count)
    np.testing.assert_array_equal(np.isnan(f_times), np.isnan(times))
    tol = 1e-4 if dtype == jnp.float32 else 1e-9  # ms; spike times reach 60 ms
    np.testing.assert_allclose(f_times, times, rtol=0, atol=tol, equal_nan=True)
    assert not np.any(np.asarray(dropped)) and not np.any(np.asarray(f_dropped))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(f_state)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-3 if dtype == jnp.float32 else 1e-8)


# Every stimulus kind for HH; for the other models the kinds their own step could get wrong
# (per-neuron terms evaluated in the kernel, a tabulated shared current, both at once). Each
# kind compiles both kernels (about 1.6 s alone, 3 s under the parallel test run).
CASES = {"hh": None, "rs": ("pulses_per_neuron", "ou", "sum"), "hh1952": ("sum",),
         "ib": ("step_per_neuron",), "lts": ("constant_per_neuron",),
         "composed": ("step_per_neuron", "sampled_linear")}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_kernel_equals_xla_kernel_for_every_stimulus(name):
    dtype = jnp.float32
    params = _models()[name].astype(dtype)
    spiking = 0
    stimuli = _stimuli(name, dtype)
    for label in CASES[name] or stimuli:
        stimulus = stimuli[label]
        stimulus = hhjax._stimulus.as_stimulus(stimulus, per_neuron=True)
        xla = _run_chunk(params, stimulus, None, _config(params), SIZE, "cpu")
        fused = fused_chunk_jit(params, stimulus, None, _config(params), SIZE, True)
        try:
            _assert_same(xla, fused, dtype)
        except AssertionError as error:
            raise AssertionError(f"{name}, {label}: {error}") from None
        spiking += int(np.sum(np.asarray(xla[0]) > 0))
    assert spiking > SIZE // 2  # the comparison covers spiking neurons, not only silent ones


@pytest.mark.parametrize("name", ["hh", "rs"])
def test_fused_kernel_equals_xla_kernel_in_float64_with_a_given_state_and_a_record(name):
    params = _models()[name].astype(jnp.float64)
    stimuli = _stimuli(name, jnp.float64)
    # Neurons that start away from rest (a given y0, different per neuron).
    y0 = hhjax.steady_state(params, jnp.linspace(-80.0, -50.0, SIZE))
    # With a coarse record of the voltage and a gate (a sample per record block and the tail).
    record = ("v", params.gate_names[-1])
    for label in ("step_per_neuron", "sum"):
        xla = _run_chunk(params, stimuli[label], y0, _config(params, record), SIZE, "cpu")
        fused = fused_chunk_jit(params, stimuli[label], y0, _config(params, record), SIZE, True)
        assert fused[4][0].shape == (SIZE, CONFIG["n_blocks"] + 2)
        _assert_same(xla, fused, jnp.float64)
        assert int(np.sum(xla[0])) > 0


def test_fused_kernel_stores_every_crossing_up_to_max_spikes():
    params = hhjax.HHParams().astype(jnp.float32)
    config = KernelConfig(0.0, 0.025, 400, 20, 0, 0.0, 3)  # 200 ms, 3 stored times
    stimulus = hhjax.Step(jnp.linspace(10.0, 40.0, 16, dtype=jnp.float32), 5.0)
    xla = _run_chunk(params, stimulus, None, config, 16, "cpu")
    fused = fused_chunk_jit(params, stimulus, None, config, 16, True)
    assert int(np.min(xla[0])) > 3  # more spikes than the buffer holds: counted, not stored
    _assert_same(xla, fused, jnp.float32)


def test_simulate_batch_fused_equals_xla_and_auto_is_xla_on_cpu():
    p = hhjax.HHParams().replace(g_na=jnp.linspace(90.0, 150.0, 6).reshape(2, 3))
    kwargs = dict(t0=10.0, y0=hhjax.steady_state(hhjax.HHParams(), -70.0), max_spikes=8)
    xla = hhjax.simulate_batch(p, 10.0, 60.0, kernel="xla", **kwargs)
    fused = hhjax.simulate_batch(p, 10.0, 60.0, kernel="fused", **kwargs)
    assert fused.spike_count.shape == (2, 3) and np.all(np.asarray(xla.spike_count) > 0)
    np.testing.assert_array_equal(fused.spike_count, xla.spike_count)
    np.testing.assert_allclose(fused.spike_times, xla.spike_times, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(fused.ok, xla.ok)
    auto = hhjax.simulate_batch(p, 10.0, 60.0, **kwargs)  # a CPU: the XLA kernel
    np.testing.assert_array_equal(auto.spike_times, xla.spike_times)
    # A coarse record every 2.5 ms: 20 blocks of 2.5 ms and a partial one of 1 ms.
    xla = hhjax.simulate_batch(p, 10.0, 61.0, kernel="xla", record=("v", "n"), record_dt=2.5,
                               **kwargs)
    fused = hhjax.simulate_batch(p, 10.0, 61.0, kernel="fused", record=("v", "n"),
                                 record_dt=2.5, **kwargs)
    np.testing.assert_array_equal(fused.record_ts, xla.record_ts)
    for name in ("v", "n"):
        assert fused.record[name].shape == (2, 3, 22)
        np.testing.assert_allclose(fused.record[name], xla.record[name], atol=1e-9)


def test_fused_kernel_refuses_what_it_cannot_run_and_says_why():
    p = hhjax.HHParams()
    per_neuron_sampled = hhjax.Sampled(jnp.linspace(0.0, 50.0, 11), jnp.ones((4, 11)), hold=True)
    with pytest.raises(ValueError, match="per-neuron Sampled.*kernel='xla'"):
        hhjax.simulate_batch(p, per_neuron_sampled, 50.0, kernel="fused")
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        hhjax.simulate_batch(p, 10.0, 50.0, kernel="triton")
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        hhjax.batch_features(p, 10.0, 50.0, kernel="pallas")
    # "auto" and "xla" run what the fused kernel cannot.
    out = hhjax.simulate_batch(p, per_neuron_sampled, 50.0)
    assert out.spike_count.shape == (4,)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fused_kernel_lowers_for_cuda_through_triton(dtype):
    """The GPU build of the kernel, made here: `jax.export` lowers it for CUDA, which runs the
    Pallas Triton lowering of every operation in the loop body (a model operation Triton has
    no rule for fails here). Compiling the Triton module to PTX needs a GPU (benchmarks/gpu.py)."""
    # Every stimulus path on HH; each other model's own step with one of them.
    for name, labels in (("hh", ("none", "step_per_neuron", "pulses_per_neuron", "sum")),
                         ("rs", ("sum",)), ("lts", ("step_per_neuron",)),
                         ("composed", ("step_per_neuron",))):
        params = _models()[name].astype(dtype)
        stimuli = _stimuli(name, dtype)
        for label in labels:
            stimulus = hhjax._stimulus.as_stimulus(stimuli[label], per_neuron=True)
            # The record's column stores and nested block loops lower too.
            config = _config(params, ("v",) if label == "step_per_neuron" else ())

            def run(p, s, y0, config=config):
                return fused_chunk(p, s, y0, config, SIZE, interpret=False)

            exported = export(
                jax.jit(run),
                platforms=["cuda"],
                disabled_checks=[DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
            )(params, stimulus, params.rest_state())
            text = exported.mlir_module()
            assert text.count("__gpu$xla.gpu.triton") == 1, (name, label)
            # The time loop is inside the kernel: no XLA loop around it (the shared part of
            # "sum" is tabulated outside, with a search loop of its own).
            assert label == "sum" or "stablehlo.while" not in text, (name, label)


def _first_times(p, kernel, dtype=jnp.float64):
    out = hhjax.batch_features(
        p, hhjax.Step(jnp.linspace(8.0, 20.0, 5, dtype=dtype), 5.0), 30.0,
        max_spikes=2, kernel=kernel,
    )
    return jnp.sum(out.spike_times[:, :2])


def test_forward_mode_through_the_fused_kernel_matches_xla_reverse_and_differences():
    p = hhjax.HHParams()
    value, fused = hhjax.value_and_grad_forward(lambda p: _first_times(p, "fused"))(p)
    value_x, reverse = jax.value_and_grad(lambda p: _first_times(p, "xla"))(p)
    assert np.isfinite(value) and value == pytest.approx(float(value_x), abs=1e-9)
    for name in ("g_na", "g_k", "g_l", "e_l", "c_m"):
        a, b = float(getattr(fused, name)), float(getattr(reverse, name))
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), name
    # Central differences of the XLA kernel (float64): the crossing times move smoothly.
    h = 1e-3
    up, down = (_first_times(p.replace(g_na=120.0 + s), "xla") for s in (h, -h))
    assert float(fused.g_na) == pytest.approx(float(up - down) / (2 * h), rel=1e-4)
    assert abs(float(fused.g_na)) > 1e-3


def test_reverse_mode_through_the_fused_kernel_says_to_use_xla():
    with pytest.raises(TypeError, match="kernel='xla'"):
        jax.grad(lambda p: _first_times(p, "fused"))(hhjax.HHParams())


def test_batch_features_under_jit_with_a_traced_threshold():
    p = hhjax.HHParams.squid_1952()  # threshold v_ref + 65 mV = 65 mV, traced under jit

    @jax.jit
    def counts(p):
        return hhjax.batch_features(p, jnp.array([0.0, 10.0]), 50.0, kernel="fused").spike_count

    eager = hhjax.simulate_batch(p, jnp.array([0.0, 10.0]), 50.0).spike_count
    np.testing.assert_array_equal(counts(p), eager)
    assert int(eager[0]) == 0 and int(eager[1]) > 0


def test_auto_falls_back_to_xla_when_the_fused_kernel_fails(monkeypatch):
    """On a GPU, `kernel="auto"` tries the fused kernel; a model Triton cannot lower (here a
    stand-in failure) warns and runs the XLA kernel, with the same results as asking for it."""
    from hhjax import _batch

    def broken(*args, **kwargs):
        raise NotImplementedError("Unimplemented primitive in Pallas Triton lowering: sort")

    monkeypatch.setattr(_batch, "_is_gpu", lambda platform: True)  # as if on a GPU
    monkeypatch.setattr(_batch._fused, "fused_chunk_jit", broken)
    p = hhjax.HHParams()
    with pytest.warns(RuntimeWarning, match="fused kernel failed.*NotImplementedError"):
        auto = hhjax.simulate_batch(p, jnp.array([0.0, 10.0]), 40.0)
    xla = hhjax.simulate_batch(p, jnp.array([0.0, 10.0]), 40.0, kernel="xla")
    np.testing.assert_array_equal(auto.spike_times, xla.spike_times)
    with pytest.raises(NotImplementedError):  # asked for by name: no silent fallback
        hhjax.simulate_batch(p, jnp.array([0.0, 10.0]), 40.0, kernel="fused")
