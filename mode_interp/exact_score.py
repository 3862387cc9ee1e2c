"""The exact score of an isotropic Gaussian mixture under the forward process.

For data ``x0 ~ sum_k w_k N(mu_k, s^2 I)`` (equal ``w_k`` unless ``weights`` is given) and ``x_t = sqrt(a) x0 + sqrt(1-a) eps``
(``a = alphas_bar[t]``), the marginal is ``sum_k w_k N(sqrt(a) mu_k, v I)`` with
``v = a s^2 + 1 - a``. Its score, the posterior mean ``E[x0 | x_t]`` and the
epsilon that a perfect network would predict are closed-form. Sampling with
:func:`make_exact_eps_fn` in place of a network is the paper's control: the
exact score is a near step function between modes and does not hallucinate.
"""

import jax
import jax.numpy as jnp

from mode_interp import diffusion


def _components(schedule: diffusion.Schedule, means, std, x_t, t, weights=None):
  """Per-component log-likelihood terms and responsibilities at ``x_t`` (``weights``:
  the mixture weights ``[K]``; None for equal ones)."""
  means = jnp.asarray(means, jnp.float32)  # [K, D]
  a = schedule.alphas_bar[t].reshape(-1, 1, 1)  # [B, 1, 1]
  v = a * std**2 + 1.0 - a  # [B, 1, 1]
  diff = x_t[:, None, :] - jnp.sqrt(a) * means[None]  # [B, K, D]
  logits = -0.5 * jnp.sum(diff**2, axis=-1) / v[..., 0]  # shared v
  if weights is not None:
    logits = logits + jnp.log(jnp.asarray(weights, jnp.float32))[None]
  resp = jax.nn.softmax(logits, axis=-1)  # [B, K]
  return a, v, diff, resp, logits


def mixture_score(schedule, means, std, x_t, t, weights=None):
  """``grad_x log p_t(x_t)``; ``x_t`` is ``[B, D]``, ``t`` an int or ``[B]``."""
  t = jnp.broadcast_to(t, (x_t.shape[0],))
  _, v, diff, resp, _ = _components(schedule, means, std, x_t, t, weights)
  return -jnp.sum(resp[..., None] * diff, axis=1) / v[:, 0]


def mixture_log_density(schedule, means, std, x_t, t, weights=None):
  """``log p_t(x_t)`` (for checking the score against finite differences)."""
  t = jnp.broadcast_to(t, (x_t.shape[0],))
  _, v, _, _, logits = _components(schedule, means, std, x_t, t, weights)
  k, d = jnp.shape(means)
  return (
    jax.nn.logsumexp(logits, axis=-1)
    - (jnp.log(k) if weights is None else 0.0)
    - 0.5 * d * jnp.log(2 * jnp.pi * v[:, 0, 0])
  )


def mixture_posterior_mean(schedule, means, std, x_t, t, weights=None):
  """``E[x0 | x_t]``: the exact x0-predictor."""
  t = jnp.broadcast_to(t, (x_t.shape[0],))
  a, v, diff, resp, _ = _components(schedule, means, std, x_t, t, weights)
  means = jnp.asarray(means, jnp.float32)
  cond = means[None] + (jnp.sqrt(a) * std**2 / v) * diff  # E[x0 | x_t, k]
  return jnp.sum(resp[..., None] * cond, axis=1)


def make_exact_eps_fn(schedule: diffusion.Schedule, means, std, weights=None):
  """An ``eps_fn(params, x_t, t)`` that ignores ``params`` and returns the exact epsilon."""

  def eps_fn(params, x_t, t):
    del params
    score = mixture_score(schedule, means, std, x_t, t, weights)
    return -diffusion._bcast(schedule.sqrt_one_minus_alphas_bar, t, x_t) * score

  return eps_fn
