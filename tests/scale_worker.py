"""Worker for tests/test_scale.py: runs `simulate_batch` (both kernels) and `fit_batch` on a
small fixed problem and saves the results, either on this process's devices or as one process
of a `jax.distributed` run.

    python tests/scale_worker.py OUT.npz                      # this process's devices
    python tests/scale_worker.py OUT.npz PROCESS_ID N PORT    # one of N processes on 127.0.0.1
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import hhjax
from hhjax import fitting as hf

FREE = ("g_na", "g_k", "g_l", "e_l", "c_m")


def problem():
    """Seven neurons (an odd count: padding on two devices or processes) and three noisy
    recordings of one HH cell."""
    p = hhjax.HHParams.neuron().replace(g_na=jnp.linspace(100.0, 140.0, 7))
    stim = jnp.linspace(0.0, 20.0, 7)
    true = hhjax.HHParams()
    ts = np.round(np.arange(801) * 0.05, 10)
    step = hhjax.Step(10.0, 5.0, 35.0)
    v = np.asarray(hhjax.simulate(true, step, 40.0, ts=ts).v)
    i = np.asarray(jax.vmap(step)(jnp.asarray(ts)))
    recs = [hf.Recording(ts, v + 0.5 * np.random.default_rng(s).standard_normal(v.shape), i)
            for s in range(3)]
    return p, stim, recs


def population_losses():
    """Two generations of the cross-entropy search on a trace loss: the population (an odd
    size) scored on this process's devices, or shared across processes."""
    from hhjax.fitting import _population
    from hhjax.fitting._config import CrossEntropy

    _, _, recs = problem()
    true = hhjax.HHParams()
    step = hhjax.Step(10.0, 5.0, 35.0)

    def loss(theta):
        # A fit's kind of loss: the error of a 20-ms exponential-Euler trace.
        q = true.replace(g_na=jnp.exp(theta[0]), g_k=jnp.exp(theta[1]))
        v = hhjax.simulate(q, step, 20.0, solver=hhjax.ExponentialEuler(), dt0=0.05).v
        return jnp.mean((v - recs[0].v[: v.shape[0]]) ** 2)

    class Spec:
        names = ("g_na", "g_k")
        transforms = ("log", "log")

        @staticmethod
        def theta_bounds():
            return np.log([50.0, 10.0]), np.log([300.0, 100.0])

    solver = CrossEntropy(population=9, generations=2, seed=1,
                          distribute=jax.process_count() > 1)
    theta, best, hist, _ = _population.cross_entropy(
        loss, Spec, jnp.log(jnp.asarray([100.0, 30.0])), solver)
    return np.asarray(theta), np.asarray([best, *hist])


def run():
    p, stim, recs = problem()
    f = hhjax.simulate_batch(p, stim, 60.0, dt=0.05, max_spikes=4, record=("v",))
    fits = hf.fit_batch(recs, FREE, init="linear")
    # The fused Pallas kernel (interpreted here) through the same device and process paths.
    fused = hhjax.simulate_batch(p, stim, 60.0, dt=0.05, max_spikes=4, kernel="fused")
    extra = {}
    if jax.local_device_count() == 2 and jax.process_count() == 1:
        # Inputs laid out by the user on an Explicit mesh (jax's default kind): brought to the
        # host rather than failing with a ShardingTypeError inside simulate_batch.
        mesh = jax.make_mesh((2,), ("b",))
        g_na = jax.device_put(p.g_na[:6],
                              jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("b")))
        e = hhjax.simulate_batch(p.replace(g_na=g_na), stim[:6], 60.0, dt=0.05, max_spikes=4)
        extra["explicit_times"] = np.asarray(e.spike_times)
    return dict(**extra,
        count=np.asarray(f.spike_count), times=np.asarray(f.spike_times),
        fused_count=np.asarray(fused.spike_count), fused_times=np.asarray(fused.spike_times),
        v=np.asarray(f.record["v"]), ok=np.asarray(f.ok),
        values=np.array([[r.values[n] for n in FREE] for r in fits]),
        stderr=np.array([[r.stderr[n] for n in FREE] for r in fits]),
        n_iter=np.array([r.n_iter for r in fits]),
        devices=np.array([jax.local_device_count(), jax.process_count()]),
        **dict(zip(("cem_theta", "cem_losses"), population_losses(), strict=True)),
    )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    if len(sys.argv) > 2:
        process_id, n_proc, port = map(int, sys.argv[2:5])
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=n_proc,
            process_id=process_id,
            coordinator_bind_address=f"127.0.0.1:{port}",
            initialization_timeout=120,
        )
    np.savez(sys.argv[1], **run())
