"""The matrix products of a step, timed alone (``prod%``: ``products_ms`` /
``products_share``), and the measured matmul rate against which ``%peak`` is given on CPUs
(``peak_flops_measured``)."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np


def measured_matmul_peak(dtype: str = "float32", repeats: int = 5) -> float:
  """FLOP/s of the fastest of two matrix products on the default device, best of
  ``repeats`` each: ``1024 x 1024 x 1024`` and ``2048 x 128 x 128`` (the toy MLP's shape),
  bfloat16 inputs accumulating in float32. The CPU's practical dense peak for ``dtype``,
  against which ``%peak`` is given on CPUs (vendor peaks there depend on clocks and
  kernels). Measured once per process, dtype and ``repeats``."""
  return _matmul_peak(jnp.dtype(dtype).name, repeats)


@functools.lru_cache(maxsize=None)
def _matmul_peak(dtype: str, repeats: int) -> float:
  dt = jnp.dtype(dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  rates = []
  for m, k, n, calls in ((1024, 1024, 1024, 4), (2048, 128, 128, 64)):
    a, b = jnp.ones((m, k), dt), jnp.ones((k, n), dt)
    rates.append(2.0 * m * k * n / fastest_call_s(f, (a, b), repeats, calls))
  return max(rates)


def fastest_call_s(fn, args, repeats: int, calls: int) -> float:
  """Seconds per call of ``fn(*args)`` after one warm-up call: the fastest of ``repeats``
  timings of ``calls`` calls in a row."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / calls)
  return best


def matrix_products(fn, *args) -> list:
  """The matrix products (``dot_general``) one call of ``fn(*args)`` computes, from its jaxpr:
  a list of ``(lhs, rhs, params, times)`` (abstract values, the equation's parameters, and how
  often it runs: a product inside a ``scan`` runs once per iteration)."""
  found = []

  def walk(jaxpr, times):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        found.append((eqn.invars[0].aval, eqn.invars[1].aval, dict(eqn.params), times))
      inner = times * (int(eqn.params["length"]) if eqn.primitive.name == "scan" else 1)
      for sub in _sub_jaxprs(eqn.params.values()):
        walk(sub, inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr, 1)
  return found


def _sub_jaxprs(values):
  for v in values:
    if isinstance(v, jax.extend.core.ClosedJaxpr):
      yield v.jaxpr
    elif isinstance(v, jax.extend.core.Jaxpr):
      yield v
    elif isinstance(v, (tuple, list)):
      yield from _sub_jaxprs(v)


def time_pending_products(records) -> None:
  """Fills ``products_ms`` / ``products_share`` of the records that list their products
  (``pending_products``), and clears that list."""
  for rec in records:
    pending, rec.pending_products = rec.pending_products, None
    if pending is not None:
      rec.products_ms = time_products(pending.products, rec.compile_options, times=pending.times)
      rec.products_share = rec.products_ms / rec.ms_per_step


def time_products(
  products, compiler_options=None, repeats: int = 5, calls: int = 20, times: int = 1
) -> float:
  """Milliseconds for the matrix products ``products`` (from :func:`matrix_products`) alone:
  the products that run equally often are jitted together, on random operands of their shapes
  (distinct operands, so none is shared or fused away), timed, and counted that often (``times``
  more: a sampler's row tiles), as the step runs its scan iterations one after another. The
  floor a step made of those products could reach with every other operation free (up to
  cache effects). Fastest of ``repeats`` timings of ``calls`` calls per group."""
  groups = {}
  for lhs, rhs, params, n in products:
    groups.setdefault(n, []).append((lhs, rhs, params))
  rng = np.random.default_rng(0)
  total = 0.0
  for n, group in groups.items():
    operands = [
      tuple(jnp.asarray(rng.standard_normal(a.shape, np.float32), a.dtype) for a in (lhs, rhs))
      for lhs, rhs, _ in group
    ]
    params = [p for _, _, p in group]

    def all_products(ops, params=params):
      return [jax.lax.dot_general_p.bind(a, b, **p) for (a, b), p in zip(ops, params)]

    fn = jax.jit(all_products, compiler_options=dict(compiler_options or {}))
    total += n * fastest_call_s(fn, (operands,), repeats, calls)
  return 1000.0 * total * times
