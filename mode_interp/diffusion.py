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
VARIANCES = ("fixed_large", "fixed_small", "learned")


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


def learned_log_variance(s: Schedule, t, v):
  """Log-variance of ``p(x_{t-1} | x_t)`` from the network's second output ``v`` (Nichol &
  Dhariwal's learned range): ``frac * log beta_t + (1 - frac) * log posterior_variance_t``
  with ``frac = (v + 1) / 2`` (``v`` is not clipped: the same as the reference code)."""
  frac = (v + 1.0) / 2.0
  max_log = _bcast(jnp.log(s.betas), t, v)
  min_log = _bcast(s.posterior_log_variance_clipped, t, v)
  return frac * max_log + (1.0 - frac) * min_log


def split_learned(out):
  """``(eps, v)``: the two halves of a learned-variance network's output (last axis)."""
  return jnp.split(out, 2, axis=-1)


def model_log_variance(s: Schedule, t, x, variance: str, v=None):
  """Log-variance of ``p(x_{t-1} | x_t)``: fixed-large (beta_t, with the t=0 entry
  replaced by the posterior variance at t=1, as in DDPM), fixed-small, or learned (from the
  network's ``v``: :func:`learned_log_variance`)."""
  if variance == "learned":
    if v is None:
      raise ValueError("variance='learned' needs the network's second output v")
    return learned_log_variance(s, t, v)
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


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
  return 0.5 * (
    -1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * jnp.exp(-logvar2)
  )


def gaussian_nll(x, mean, logvar):
  """-log N(x; mean, exp(logvar)), elementwise, in nats."""
  return 0.5 * (jnp.log(2.0 * jnp.pi) + logvar + (x - mean) ** 2 * jnp.exp(-logvar))


def vsm_penalty(logvar):
  """VSM's smoothness proxy per element: with the score Jacobian of a Gaussian of variance
  sigma^2 taken as -1/sigma^2, ``1 / (1 + J^2) = sigma^4 / (1 + sigma^4)``; small where the
  score is steep."""
  precision = jnp.exp(-logvar)
  return 1.0 / (1.0 + precision**2)


def hybrid_losses(net_fn, params, s: Schedule, x0, t, noise, rho: float = 0.0):
  """Per-example loss of a learned-variance network: the epsilon MSE, the variational bound
  term for the variance (KL of the true posterior to the model's step, with the mean's
  gradient stopped; at t = 0 the Gaussian negative log-likelihood of x0, since the toy data
  are continuous), and VSM's penalty ``rho / sqrt(1 - alpha_bar_t) * mean(vsm_penalty)``
  (Bhosale et al. 2026; the time-weighted pixel-space form of their code). Each term is a
  mean over the example's elements, in nats (the reference code counts the bound in bits;
  a constant factor of 1 / ln 2 on that term). Returns ``(loss [B], terms)``.

  ``net_fn(params, x_t, t) -> (eps, v)``.
  """
  x_t = q_sample(s, x0, t, noise)
  eps, v = net_fn(params, x_t, t)
  axes = tuple(range(1, x0.ndim))
  mse = jnp.mean((eps - noise) ** 2, axis=axes)
  logvar = learned_log_variance(s, t, v)
  x0_hat = x0_from_eps(s, x_t, t, jax.lax.stop_gradient(eps))
  mean_model, _, _ = posterior_mean_variance(s, x0_hat, x_t, t)
  mean_true, _, logvar_true = posterior_mean_variance(s, x0, x_t, t)
  kl = jnp.mean(normal_kl(mean_true, logvar_true, mean_model, logvar), axis=axes)
  nll = jnp.mean(gaussian_nll(x0, mean_model, logvar), axis=axes)
  vb = jnp.where(t == 0, nll, kl)
  weight = rho / jnp.maximum(s.sqrt_one_minus_alphas_bar[t], 1e-12)
  smooth = jnp.mean(vsm_penalty(logvar), axis=axes)
  loss = mse + vb + weight * smooth
  return loss, {"mse": mse, "vb": vb, "smooth": smooth}


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
