"""A variational diffusion model (Kingma et al., 2021) in continuous time, for the toy data.

The forward process is ``z_t = alpha_t x + sigma_t eps`` with ``alpha_t^2 =
sigmoid(-gamma(t))``, ``sigma_t^2 = sigmoid(gamma(t))`` and ``gamma = -log SNR``
increasing from ``gamma(0) = gamma_min`` to ``gamma(1) = gamma_max``. The network
predicts ``eps`` from ``(z_t, t)``; the loss is the continuous-time diffusion term of
the VLB, ``0.5 * gamma'(t) * ||eps - eps_hat||^2`` (summed over dimensions, ``t``
drawn with VDM's low-discrepancy sampler).

Schedules: ``fixed`` (gamma linear in t) or ``learned`` (VDM's monotone network:
positive-weight dense layers, rescaled so the endpoints stay at gamma_min and
gamma_max; its interior parameters are trained, as in VDM, to minimise the
variance of the loss, i.e. on the gradient of the squared per-example loss, while
the network trains on the loss itself).

Sampling runs the model's ancestral sampler over any number ``T'`` of steps
(``t_i = i / T'``) in the DDPM samplers' own ``lax.scan`` (``samplers.scan_reverse``),
with the trajectory variance of the predicted x0 over the last ``window`` steps
accumulated in streaming form: the same ``sample_chunk(params, key, indices) ->
SampleOutput``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mode_interp import samplers, train

SCHEDULES = ("fixed", "learned")
T_SCALE = 1000.0  # the network sees t * 1000, the range of the DDPM timestep embedding


class _DensePositive(nn.Dense):
  """A dense layer with non-negative weights (softplus of the parameters): monotone."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    y = x @ jax.nn.softplus(kernel)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class LearnedGamma(nn.Module):
  """VDM's monotone noise schedule network, with its endpoints pinned."""

  gamma_min: float
  gamma_max: float
  hidden: int = 1024

  def setup(self):
    self.l1 = _DensePositive(1)
    self.l2 = _DensePositive(self.hidden)
    self.l3 = _DensePositive(1, use_bias=False)

  def _raw(self, t):
    h = self.l1(t)
    return (h + self.l3(2.0 * (nn.sigmoid(self.l2(h)) - 0.5)))[..., 0]

  def __call__(self, t):
    t = jnp.reshape(t, (-1, 1)).astype(jnp.float32)
    ends = self._raw(jnp.array([[0.0], [1.0]], jnp.float32))
    frac = (self._raw(t) - ends[0]) / (ends[1] - ends[0])
    return self.gamma_min + (self.gamma_max - self.gamma_min) * frac


def make_gamma(kind: str, gamma_min: float, gamma_max: float):
  """``(init(key) -> params, apply(params, t [B]) -> gamma [B])`` for a schedule kind."""
  if kind == "fixed":
    return (
      lambda key: {},
      lambda p, t: gamma_min + (gamma_max - gamma_min) * jnp.asarray(t, jnp.float32),
    )
  if kind == "learned":
    mod = LearnedGamma(gamma_min, gamma_max)
    return (
      lambda key: mod.init(key, jnp.zeros((1,)))["params"],
      lambda p, t: mod.apply({"params": p}, t),
    )
  raise ValueError(f"unknown vdm schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")


def _alpha_sigma(gamma):
  return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def per_example_loss(net_apply, gamma_apply, params, x0, key):
  """The continuous-time diffusion loss of each example ``[B]``."""
  kt, ke = jax.random.split(key)
  b = x0.shape[0]
  u0 = jax.random.uniform(kt, ())
  t = jnp.mod(u0 + jnp.arange(b, dtype=jnp.float32) / b, 1.0)  # low-discrepancy (VDM)
  gamma, dgamma = jax.jvp(lambda s: gamma_apply(params["gamma"], s), (t,), (jnp.ones_like(t),))
  alpha, sigma = _alpha_sigma(gamma)
  bshape = (b,) + (1,) * (x0.ndim - 1)
  eps = jax.random.normal(ke, x0.shape, x0.dtype)
  z = alpha.reshape(bshape) * x0 + sigma.reshape(bshape) * eps
  eps_hat = net_apply(params["net"], z, t * T_SCALE)
  sq = jnp.sum(((eps - eps_hat) ** 2).reshape(b, -1), axis=1)
  return 0.5 * dgamma * sq


def make_train_step(
  net_apply,
  gamma_apply,
  optimizer,
  batch_size: int,
  ema_decay: float = 0.0,
  learned_schedule: bool = False,
):
  """``train_step(state, data, key) -> (state, metrics)``, as :func:`train.make_train_step`
  (same batch and noise derivation from ``key`` and ``state.step``)."""

  def train_step(state, data, key):
    data_key, noise_key = jax.random.split(key)
    batch = data[train.batch_indices(data_key, state.step, data.shape[0], batch_size)]
    step_key = jax.random.fold_in(noise_key, state.step)

    def mean_loss(p):
      return jnp.mean(per_example_loss(net_apply, gamma_apply, p, batch, step_key))

    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    if learned_schedule:  # the schedule minimises the loss's variance (VDM, section 5.2)
      g_var = jax.grad(
        lambda p: jnp.mean(per_example_loss(net_apply, gamma_apply, p, batch, step_key) ** 2)
      )(state.params)
      grads = {"net": grads["net"], "gamma": g_var["gamma"]}
    return (
      train.apply_gradients(state, grads, optimizer, ema_decay),
      {"loss": loss, "grad_norm": optax.tree.norm(grads)},
    )

  return train_step


def init_state(net, gamma_init, optimizer, sample_input, key):
  k1, k2 = jax.random.split(key)
  net_params = net.init(k1, sample_input, jnp.zeros((sample_input.shape[0],), jnp.float32))
  params = {"net": net_params["params"], "gamma": gamma_init(k2)}
  return train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=params,
    opt_state=optimizer.init(params),
  )


def get_sampling_fn(
  net_apply, gamma_apply, shape, num_steps: int, window: int, reduction: str = "mean"
):
  """``sample_chunk(params, key, indices) -> SampleOutput``: the ancestral sampler over
  ``num_steps`` steps of ``t`` from 1 to 0, with the trajectory variance of x0_hat over
  the last ``window`` steps."""
  window = min(window, num_steps)
  ts = np.arange(num_steps, 0, -1, dtype=np.float32) / num_steps  # t_i, descending
  ss = ts - 1.0 / num_steps  # s_i = t_i - 1/T'
  # The shared reverse scan (samplers.scan_reverse) walks integer steps: step i of the
  # scan is t_i = ts[i]; its schedule values are looked up by i.
  steps = np.arange(num_steps, 0, -1)
  spec = samplers.SamplerSpec(shape=tuple(shape), window=window, reduction=reduction)

  def sample_chunk(params, key, indices):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    z = samplers.per_sample_normal(keys, 0, shape)
    t_all = jnp.asarray(ts)
    g_t_all = gamma_apply(params["gamma"], t_all)
    g_s_all = gamma_apply(params["gamma"], jnp.asarray(ss))

    def step_fn(params, z, t, t_prev, i, keys):
      del t, t_prev
      g_t, g_s = g_t_all[i], g_s_all[i]
      eps_hat = net_apply(params["net"], z, jnp.full((1,), t_all[i] * T_SCALE, jnp.float32))
      a_t, s_t = _alpha_sigma(g_t)
      a_s, s_s = _alpha_sigma(g_s)
      x0_hat = (z - s_t * eps_hat) / a_t
      c = -jnp.expm1(g_s - g_t)
      mean = a_s / a_t * (z - c * s_t * eps_hat)
      noise = samplers.per_sample_normal(keys, i + 1, shape)
      return mean + jnp.sqrt(jnp.maximum(s_s**2 * c, 0.0)) * noise, x0_hat, eps_hat

    out = samplers.scan_reverse(step_fn, params, steps, window, spec, z, keys)
    a0, _ = _alpha_sigma(gamma_apply(params["gamma"], jnp.zeros((1,)))[0])
    return out._replace(samples=out.samples / a0)

  return sample_chunk
