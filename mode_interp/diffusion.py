"""Gaussian diffusion (DDPM) as pure functions of a schedule pytree.

Everything here is plain ``jnp`` on arrays: no networks, no state, nothing from
the rest of the package. Timesteps are integers ``t in [0, T)``; ``t = 0`` is
the least noisy step (the reference toy code's convention).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "quad", "cosine")
VARIANCES = ("fixed_large", "fixed_small")


class Schedule(NamedTuple):
  """Per-timestep coefficients, each an array of shape ``[T]`` (float32)."""

  betas: jax.Array
  alphas_bar: jax.Array
  alphas_bar_prev: jax.Array
  sqrt_alphas_bar: jax.Array
  sqrt_one_minus_alphas_bar: jax.Array
  sqrt_recip_alphas_bar: jax.Array
  sqrt_recipm1_alphas_bar: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array

  @property
  def timesteps(self) -> int:
    return self.betas.shape[0]


def beta_schedule(
  name: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
  """Betas as float64 numpy, shape ``[timesteps]``."""
  if name == "linear":
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)
  if name == "quad":
    return np.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=np.float64) ** 2
  if name == "cosine":  # Nichol & Dhariwal (2021), s = 0.008, betas clipped at 0.999.
    s = 0.008
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    return np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)
  raise ValueError(f"unknown beta schedule {name!r}; allowed: {', '.join(SCHEDULES)}")


def make_schedule(
  name: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
  """Builds the schedule in float64 numpy, then stores it as float32 arrays."""
  betas = beta_schedule(name, timesteps, beta_start, beta_end)
  alphas = 1.0 - betas
  alphas_bar = np.cumprod(alphas)
  alphas_bar_prev = np.append(1.0, alphas_bar[:-1])
  posterior_variance = betas * (1.0 - alphas_bar_prev) / (1.0 - alphas_bar)
  # The t = 0 posterior variance is 0; the log is clipped to the t = 1 value (DDPM).
  post_var_for_log = (
    np.append(posterior_variance[1], posterior_variance[1:])
    if timesteps > 1
    else np.maximum(posterior_variance, 1e-20)
  )
  arrays = dict(
    betas=betas,
    alphas_bar=alphas_bar,
    alphas_bar_prev=alphas_bar_prev,
    sqrt_alphas_bar=np.sqrt(alphas_bar),
    sqrt_one_minus_alphas_bar=np.sqrt(1.0 - alphas_bar),
    sqrt_recip_alphas_bar=np.sqrt(1.0 / alphas_bar),
    sqrt_recipm1_alphas_bar=np.sqrt(1.0 / alphas_bar - 1.0),
    posterior_variance=posterior_variance,
    posterior_log_variance_clipped=np.log(post_var_for_log),
    posterior_mean_coef1=betas * np.sqrt(alphas_bar_prev) / (1.0 - alphas_bar),
    posterior_mean_coef2=(1.0 - alphas_bar_prev) * np.sqrt(alphas) / (1.0 - alphas_bar),
  )
  return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})


def _bcast(coef, t, x):
  """``coef[t]`` reshaped to broadcast against ``x`` (``t`` scalar or ``[B]``)."""
  c = coef[t]
  return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def q_sample(s: Schedule, x0, t, noise):
  """Samples ``x_t ~ q(x_t | x_0)``."""
  return _bcast(s.sqrt_alphas_bar, t, x0) * x0 + _bcast(s.sqrt_one_minus_alphas_bar, t, x0) * noise


def x0_from_eps(s: Schedule, x_t, t, eps):
  return (
    _bcast(s.sqrt_recip_alphas_bar, t, x_t) * x_t - _bcast(s.sqrt_recipm1_alphas_bar, t, x_t) * eps
  )


def eps_from_x0(s: Schedule, x_t, t, x0):
  return (_bcast(s.sqrt_recip_alphas_bar, t, x_t) * x_t - x0) / _bcast(
    s.sqrt_recipm1_alphas_bar, t, x_t
  )


def score_from_eps(s: Schedule, x_t, t, eps):
  """``grad log p_t(x_t) = -eps / sqrt(1 - alphas_bar_t)``."""
  return -eps / _bcast(s.sqrt_one_minus_alphas_bar, t, x_t)


def posterior_mean_variance(s: Schedule, x0, x_t, t):
  """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
  mean = _bcast(s.posterior_mean_coef1, t, x_t) * x0 + _bcast(s.posterior_mean_coef2, t, x_t) * x_t
  return (
    mean,
    _bcast(s.posterior_variance, t, x_t),
    _bcast(s.posterior_log_variance_clipped, t, x_t),
  )


def model_log_variance(s: Schedule, t, x, variance: str):
  """Log-variance of ``p(x_{t-1} | x_t)``: fixed-large (beta_t, with the t=0 entry
  replaced by the posterior variance at t=1, as in DDPM) or fixed-small."""
  if variance == "fixed_large":
    # The t = 0 entry is the clipped posterior log-variance (= log posterior_variance[1]
    # when T > 1); taking it from there also works for T = 1, where [1:2] is empty.
    logvar = jnp.append(s.posterior_log_variance_clipped[:1], jnp.log(s.betas[1:]))
  elif variance == "fixed_small":
    logvar = s.posterior_log_variance_clipped
  else:
    raise ValueError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")
  return _bcast(logvar, t, x)


def loss_fn(eps_fn, params, s: Schedule, x0, key):
  """Epsilon-prediction MSE (the simple DDPM loss), with uniform ``t``.

  Args:
    eps_fn: ``eps_fn(params, x_t, t) -> eps``.
    params: network parameters.
    s: schedule.
    x0: clean batch ``[B, ...]``.
    key: PRNG key.

  Returns:
    ``(loss, metrics)``.
  """
  t, noise = loss_inputs(s, x0, key)
  loss = jnp.mean(eps_errors(eps_fn, params, s, x0, t, noise))
  return loss, {"loss": loss}


def loss_inputs(s: Schedule, x0, key):
  """The timesteps (uniform on ``0 .. T-1``) and noise of a training batch ``x0``."""
  kt, kn = jax.random.split(key)
  t = jax.random.randint(kt, (x0.shape[0],), 0, s.timesteps)
  noise = jax.random.normal(kn, x0.shape, x0.dtype)
  return t, noise


def eps_errors(eps_fn, params, s: Schedule, x0, t, noise):
  """Squared errors of the predicted noise, ``[B, ...]`` (the loss is their mean)."""
  x_t = q_sample(s, x0, t, noise)
  return (eps_fn(params, x_t, t) - noise) ** 2
