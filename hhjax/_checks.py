"""Input checks shared by every public entry point: real, finite, counts.

Dtypes and shapes are static, so they are checked for tracers too (a valid traced value always
passes); values are checked only when concrete, so `jit`/`vmap`/`grad` pass through untouched.
Errors name the function, the argument and what to pass instead.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_count", "check_real"]


def _concrete(x) -> np.ndarray | None:
    """The value of `x` as numpy if it is concrete (not a tracer), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - unknown array-likes
        return None


# ---------------------------------------------------------------------- validation helpers
# Shared by the models, the stimuli and the spike features. Dtypes and shapes are static, so
# they are checked for tracers too (a valid traced value always passes); values are checked
# only when concrete, so jit/vmap/grad pass through untouched.


def _check_real(owner: str, name: str, x) -> None:
    """Raise `TypeError` unless `x` has a real (integer or floating-point) dtype."""
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{owner}: `{name}` must be real, got a complex value (dtype {dtype}). Pass the "
            "real part (np.real(x)) if the imaginary part is meant to be zero."
        )
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"{owner}: `{name}` must be a real number, got dtype {dtype}.")


def _describe_bad(value: np.ndarray, bad: np.ndarray) -> str:
    """`nan`, or `nan at index 17 (2 of 1000 values)`: the first offending entry."""
    if value.ndim == 0:
        return repr(value.item())
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = first[0] if len(first) == 1 else first
    return f"{value[first].item()!r} at index {where} ({int(np.sum(bad))} of {value.size} values)"


def _check_finite(
    owner: str,
    name: str,
    x,
    units: str,
    *,
    allow_posinf: bool = False,
    allow_neginf: bool = False,
) -> np.ndarray | None:
    """Raise `ValueError` if the concrete `x` holds NaN or ±inf; return it as numpy (or None).

    `allow_posinf`/`allow_neginf` admit the infinities that mean "never" (a step's `stop`) or
    "always" (a constant current's `start`).
    """
    value = _concrete(x)
    if value is None:
        return None
    bad = np.isnan(value)
    if not allow_posinf:
        bad = bad | np.isposinf(value)
    if not allow_neginf:
        bad = bad | np.isneginf(value)
    if np.any(bad):
        allowed = {
            (False, False): "finite",
            (True, False): "finite or +inf",
            (False, True): "finite or -inf",
            (True, True): "a number (not NaN)",
        }[allow_posinf, allow_neginf]
        raise ValueError(
            f"{owner}: `{name}` must be {allowed}, got {_describe_bad(value, bad)}. "
            f"Pass {allowed} values ({units})."
        )
    return value


def _check_numbers(owner: str, *items) -> None:
    """[`_check_real`][] and [`_check_finite`][] for each `(name, value, units)` in `items`."""
    for name, x, units in items:
        _check_real(owner, name, jnp.asarray(x))
        _check_finite(owner, name, x, units)


def _check_batch_shapes(owner: str, values: dict) -> tuple[int, ...]:
    """The common batch shape of the fields in `values`; `ValueError` if one is empty or the
    shapes do not broadcast together (the message lists every field's shape)."""
    shapes = {name: tuple(jnp.shape(x)) for name, x in values.items()}
    for name, shape in shapes.items():
        if 0 in shape:
            raise ValueError(
                f"{owner}: `{name}` is empty (shape {shape}); every parameter needs a value "
                "per neuron (a scalar is shared by all neurons)."
            )
    try:
        return jnp.broadcast_shapes(*shapes.values())
    except ValueError:
        listing = ", ".join(f"{name} {shape}" for name, shape in shapes.items() if shape != ())
        raise ValueError(
            f"{owner}: the parameters' batch shapes do not broadcast together: {listing}. "
            "Give every batched parameter the same shape (one value per neuron), or a scalar "
            "to share one value across the batch."
        ) from None


def check_count(name, value, minimum=1):
    """`value` as an int of at least `minimum`, else a TypeError/ValueError naming `name`."""
    n = None
    if not isinstance(value, (bool, np.bool_)):
        try:
            n = operator.index(value)
        except TypeError:
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                n = int(value)
    if n is None:
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if n < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value!r}.")
    return n


def check_real(name, value, *, above=None, at_least=None, below=None):
    """`value` as a finite float within the stated limits, else an error naming `name`."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.") from None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if not np.isfinite(x):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if above is not None and not x > above:
        raise ValueError(f"`{name}` must be greater than {above}, got {value!r}.")
    if at_least is not None and not x >= at_least:
        raise ValueError(f"`{name}` must be at least {at_least}, got {value!r}.")
    if below is not None and not x < below:
        raise ValueError(f"`{name}` must be less than {below}, got {value!r}.")
    return x


def padded_length(n: int, per_octave: int = 8, minimum: int = 1) -> int:
    """`n` rounded up to one of `per_octave` lengths per octave (a power of two), and to at
    least `minimum`: compiled functions are keyed on array shapes, so padding inputs to a few
    such lengths lets new lengths reuse a compilation (at most 1/`per_octave` more work)."""
    n = max(int(n), int(minimum))
    quantum = 2 ** max(0, (n - 1).bit_length() - per_octave.bit_length())
    return -(-n // quantum) * quantum


def check_parameters(owner: str, values: dict, units: dict, nonnegative, positive) -> None:
    """The construction checks of a model's parameters `{name: value}`: real (`TypeError`),
    batch shapes that broadcast, and for concrete values finite, conductances (names in
    `nonnegative`) >= 0 and names in `positive` > 0 (`ValueError` naming the field)."""
    for name, value in values.items():
        _check_real(owner, name, value)
    _check_batch_shapes(owner, values)
    for name, value in values.items():
        unit = units.get(name, "")
        value = _check_finite(owner, name, value, unit)
        unit = f" {unit}" if unit else ""
        if value is None:
            continue
        if name in nonnegative and np.any(value < 0):
            raise ValueError(
                f"{owner}.{name} is a conductance and must be >= 0{unit}, got {value!r}."
            )
        if name in positive and np.any(value <= 0):
            raise ValueError(f"{owner}.{name} must be > 0{unit}, got {value!r}.")
