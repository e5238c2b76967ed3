"""Spike-time accuracy of ExponentialEuler over 1 s of tonic firing, vs NEURON.

NEURON hh.mod parameters, 10 µA/cm² from 5 ms, 1005 ms, finitialize(-65). Reference: NEURON
CVODE at rtol=atol=1e-13 (tests/reference/neuron_hh_step10.json, which also holds NEURON's own
fixed-step spike times at the same dt). Writes benchmarks/results/accuracy.json.
"""

import json
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import hhjax  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REFERENCE = HERE.parent / "tests" / "reference" / "neuron_hh_step10.json"


def main():
    data = json.loads(REFERENCE.read_text())
    ref = np.asarray(data["cvode_reference"]["spike_times_ms"])
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        p = hhjax.HHParams.neuron().astype(dtype)
        y0 = hhjax.steady_state(p, -65.0)
        stim = hhjax.Step(jnp.asarray(10.0, dtype), 5.0, 1005.0)
        for dt in (0.05, 0.025, 0.01):
            traj = hhjax.simulate(p, stim, 1005.0, solver=hhjax.ExponentialEuler(), dt0=dt, y0=y0)
            t = np.asarray(hhjax.spike_times(traj.ts, traj.v), np.float64)
            n = min(len(t), len(ref))
            neuron = data["fixed_step"].get(str(dt), {})
            nt = np.asarray(neuron.get("spike_times_ms", []))
            row = dict(
                dtype=jnp.dtype(dtype).name,
                dt_ms=dt,
                n_spikes=len(t),
                first_spike_error_ms=float(t[0] - ref[0]),
                spike60_error_ms=float(t[59] - ref[59]),
                max_abs_error_first60_ms=float(np.max(np.abs(t[:60] - ref[:60]))),
                max_abs_error_all_ms=float(np.max(np.abs(t[:n] - ref[:n]))),
                neuron_fixed_step_n_spikes=len(nt) or None,
                neuron_fixed_step_spike60_error_ms=float(nt[59] - ref[59]) if len(nt) else None,
            )
            rows.append(row)
            print(row, flush=True)
    out = dict(
        workload="NEURON hh.mod, 10 µA/cm² from 5 ms, 1005 ms, finitialize(-65); reference "
        "NEURON CVODE rtol=atol=1e-13 (69 spikes)",
        rows=rows,
    )
    (HERE / "results" / "accuracy.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
