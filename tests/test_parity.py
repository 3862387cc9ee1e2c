"""Parity with the official PyTorch toy code.

The first group needs no torch (CI): the parity command's refusals and failure reports, and
its measurement helpers. The layer-by-layer group compares this implementation with the
official modules, the same weights copied across; it needs torch and a checkout of the
official repository, named by ``$MODE_INTERP_REFERENCE``, and is skipped otherwise::

  MODE_INTERP_REFERENCE=/path/to/diffusion-model-hallucination \
      PY_WITH_TORCH_AND_JAX -m pytest tests/test_parity.py
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gaussian1d
from experiments import parity
from mode_interp import diffusion, hallucination, samplers
from mode_interp.data import gaussians

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
  "--config.train.steps=20",
  "--config.diffusion.timesteps=30",
  "--config.sample.num_samples=256",
  "--config.sample.chunk_size=128",
  "--config.model.width=32",
  "--config.train.batch_size=128",
  "--config.data.num_train=512",
  "--config.detect.window=5",
  "--config.train.log_every=10",
  "--config.train.ckpt_every=10",
]


def _cli(args, env=None, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", "experiments.parity", "--config=configs/gaussian1d.py:official"] + args,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, **(env or {})),
  )


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("error:")]


def _fake_reference(tmp_path):
  ref = tmp_path / "official"
  (ref / "gaussian_experiments" / "ddpm_torch" / "toy").mkdir(parents=True)
  return ref


# -- without torch -----------------------------------------------------------------------
def test_missing_reference_is_one_line_before_any_work(tmp_path):
  wd = tmp_path / "wd"
  p = _cli([f"--workdir={wd}"] + TINY, env={"MODE_INTERP_REFERENCE_PYTHON": ""})
  assert p.returncode == 1
  errs = _error_lines(p.stderr)
  assert len(errs) == 1 and "--reference is missing" in errs[0] and "--reference=none" in errs[0]
  assert "Traceback" not in p.stderr and not wd.exists()


def test_reference_without_gaussian_experiments_is_refused(tmp_path):
  wd = tmp_path / "wd"
  p = _cli(
    [f"--workdir={wd}", f"--reference={tmp_path}", f"--reference_python={sys.executable}"] + TINY
  )
  assert p.returncode == 1
  errs = _error_lines(p.stderr)
  assert len(errs) == 1 and "no gaussian_experiments/ddpm_torch/toy there" in errs[0]
  assert not wd.exists()


def test_reference_python_that_does_not_exist_is_refused(tmp_path):
  ref = str(_fake_reference(tmp_path))
  with pytest.raises(parity.ReferenceError_, match="no such executable"):
    parity.resolve_reference(ref, str(tmp_path / "nope" / "python"))
  with pytest.raises(parity.ReferenceError_, match="MODE_INTERP_REFERENCE_PYTHON"):
    os.environ.pop("MODE_INTERP_REFERENCE_PYTHON", None)
    parity.resolve_reference(ref, None)


def test_recipe_the_official_code_cannot_run_is_refused():
  from mode_interp.errors import ConfigError

  cfg = gaussian1d.get_config("")  # the CPU default keeps an EMA of the weights
  with pytest.raises(ConfigError, match="train.ema_decay"):
    parity.check_recipe(cfg)
  parity.check_recipe(gaussian1d.get_config("official"))


@pytest.mark.e2e
def test_failing_reference_run_is_one_line_and_this_side_is_still_reported(tmp_path):
  fake_py = tmp_path / "python"
  fake_py.write_text(
    "#!/bin/sh\necho 'reference: starting' >&2\n"
    "echo 'ModuleNotFoundError: No module named torch' >&2\nexit 3\n"
  )
  fake_py.chmod(0o755)
  wd = tmp_path / "wd"
  p = _cli(
    [
      f"--workdir={wd}",
      "--seeds=0,1",
      f"--reference={_fake_reference(tmp_path)}",
      f"--reference_python={fake_py}",
    ]
    + TINY
  )
  assert p.returncode == 1, p.stderr[-2000:]
  errs = _error_lines(p.stderr)
  # Logged once when it happens (absl, not an "error:" line) and once at the end.
  assert len(errs) == 1, errs
  assert "reference run for seed 0 failed (exit 3): ModuleNotFoundError" in errs[0]
  # The reference is not retried for seed 1; this side ran and is reported for both seeds.
  res = json.loads((wd / "results.json").read_text())
  assert set(res["per_seed"]["this"]) == {"0", "1"} and res["per_seed"]["official"] == {}
  assert res["errors"] == [errs[0][len("error: ") :]]
  assert res["summary"]["this"]["hallucination_rate"]["n"] == 2
  assert res["summary"]["official"]["hallucination_rate"]["n"] == 0
  assert "hallucination rate" in p.stdout and "missing" in p.stdout
  assert (wd / "config.json").exists() and (wd / "figures" / "per_seed.png").exists()
  assert (wd / "reference" / "seed0.log").exists()


def test_reference_args_follow_the_config():
  cfg = gaussian1d.get_config("official")
  cfg.data.means = (1, 2, 4, 5)
  a = parity.reference_args(cfg, 3, "epoch")
  assert a["means"] == "1.0,2.0,4.0,5.0" and a["seed"] == 3 and a["batching"] == "epoch"
  assert (a["steps"], a["batch_size"], a["num_samples"], a["window"]) == (20_000, 2_000, 20_000, 10)
  assert (a["beta_start"], a["beta_end"], a["timesteps"]) == (0.001, 0.2, 1000)
  assert a["variance"] == "fixed-large" and a["lr"] == 1e-3
  # Threads, chunking and logging do not change the measurement: a cache with others serves.
  assert parity._same_recipe(dict(a, threads=4, chunk=5, log_every=7), a)
  assert not parity._same_recipe(dict(a, steps=10), a)


def test_both_sides_go_through_the_same_metric_code():
  cfg = gaussian1d.get_config("official")
  mix = gaussians.make_mixture("gaussian1d", means=(1.0, 2.0, 3.0))
  rng = np.random.default_rng(0)
  x = mix.sample(2000, seed=0)
  x[:100] = 1.5 + 0.01 * rng.standard_normal((100, 1))  # 100 between two modes
  tv = rng.random(2000).astype(np.float32)
  tv[:100] += 1.0
  m = parity.side_metrics(x, tv, mix, cfg)
  hal = hallucination.mixture_hallucinations(x, mix.means, mix.std, 4.0)
  det = hallucination.detection_metrics(tv, hal)
  assert m["num_hallucinations"] == hal.sum() >= 100
  assert m["auroc"] == det["auroc"] and m["removed_at_keep"] == det["hallucinations_removed"]
  assert m["kept_at_removal"] == det["at_removal"]["in_support_retained"]
  s = parity.summarize([0.1, 0.2, None, 0.3])
  assert s["n"] == 3 and abs(s["mean"] - 0.2) < 1e-12 and abs(s["std"] - 0.1) < 1e-12
  c = parity.compare(
    {
      "this": {"auroc": parity.summarize([0.90, 0.92])},
      "official": {"auroc": parity.summarize([0.95, 0.97])},
    }
  )
  assert not c["auroc"]["this_mean_within_official_range"] and c["auroc"]["welch_z"] < -3
  assert c["auroc"]["rank_test_p"] is None  # no per-seed values given
  # The rank test: fully separated samples of 5 give p = 2/252; interleaved ones p = 1.
  vals = {
    "this": {"auroc": [0.1, 0.2, 0.3, 0.4, 0.5]},
    "official": {"auroc": [0.6, 0.7, 0.8, 0.9, 1.0]},
  }
  summ = {side: {"auroc": parity.summarize(v["auroc"])} for side, v in vals.items()}
  c = parity.compare(summ, vals)["auroc"]
  assert abs(c["rank_test_p"] - 2 / 252) < 1e-9
  vals["official"]["auroc"] = [0.15, 0.25, 0.35, 0.45, 0.55]
  vals["this"]["auroc"] = [0.1, 0.2, 0.4, 0.5, 0.6]
  summ = {side: {"auroc": parity.summarize(v["auroc"])} for side, v in vals.items()}
  assert parity.compare(summ, vals)["auroc"]["rank_test_p"] > 0.5


def test_streaming_variance_matches_numpy_var_of_the_window_in_float32():
  # The official score is np.var over the stored last-window x0 (float32, two-pass); this one
  # is Welford in float32 inside the scan. Near a mode at 5 with the smallest spreads the
  # trained models show (in-support trajectory variances from ~1e-5: spread ~3e-3), both
  # stay within 0.2% of the float64 variance; a one-pass E[x^2] - E[x]^2 would not.
  rng = np.random.default_rng(0)
  x = (5.0 + 3e-3 * rng.standard_normal((10, 4096, 1))).astype(np.float32)
  w = samplers.welford_init(jnp.asarray(x[0]))
  for k in range(10):
    w = samplers.welford_update(w, jnp.asarray(x[k]), jnp.asarray(True))
  ours = np.asarray(samplers.welford_variance(w))
  ref = np.var(x.astype(np.float64), axis=0).mean(-1)
  np.testing.assert_allclose(ours, ref, rtol=2e-3)
  np.testing.assert_allclose(np.var(x, axis=0).mean(-1), ref, rtol=2e-3)


# -- layer by layer, against the official modules (torch) ---------------------------------
def _official():
  torch = pytest.importorskip("torch")
  root = os.environ.get("MODE_INTERP_REFERENCE", "")
  src = os.path.join(root, "gaussian_experiments")
  if not root or not os.path.isdir(os.path.join(src, "ddpm_torch", "toy")):
    pytest.skip("set $MODE_INTERP_REFERENCE to a checkout of the official repository")
  sys.path.insert(0, os.path.join(ROOT, "experiments", "torch_reference"))
  try:
    import reference_toy
  finally:
    sys.path.pop(0)
  return torch, reference_toy, reference_toy.load_official(src)


@pytest.fixture(scope="module")
def official():
  return _official()


def _flax_params(dec):
  """The official ``Decoder``'s weights as this implementation's parameter tree."""
  sd = {k: v.detach().numpy().copy() for k, v in dec.state_dict().items()}
  b = "temp_fc.0."
  dense = lambda name, bias=True: (
    {"kernel": sd[name + ".weight"].T, "bias": sd[name + ".bias"]}  # noqa: E731
    if bias
    else {"kernel": sd[name + ".weight"].T}
  )
  norm = lambda name: {"scale": sd[name + ".weight"], "bias": sd[name + ".bias"]}  # noqa: E731
  # The official blocks are one module repeated: every temp_fc.i holds the same tensors.
  for i in (1, 2):
    np.testing.assert_array_equal(sd[f"temp_fc.{i}.fc1.weight"], sd[b + "fc1.weight"])
  return {
    "in_fc": dense("in_fc", False),
    "t_proj": dense("t_proj.0"),
    "blocks_0": {
      "fc1": dense(b + "fc1", False),
      "fc2": dense(b + "fc2", False),
      "enc": dense(b + "enc"),
      "norm1": norm(b + "norm1"),
      "norm2": norm(b + "norm2"),
    },
    "out_norm": norm("out_norm"),
    "out_fc": dense("out_fc"),
  }


def _torch_embedding(official):
  """This side's network with the official sinusoidal embedding, for exact comparisons."""
  torch = official[0]
  fn = official[2].functions.get_timestep_embedding

  def emb(t, dim):
    return jnp.asarray(
      fn(torch.from_numpy(np.asarray(t).reshape(-1).astype(np.int64)), dim).numpy()
    )

  return emb


def _perturb(dec, torch, seed=0):
  """Non-trivial LayerNorm and bias values (they start at 1 and 0)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in dec.named_parameters():
      if "norm" in name or name.endswith("bias"):
        p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_timestep_embedding_agrees_to_float32_rounding(official):
  torch, _, off = official
  from mode_interp.networks.embedding import timestep_embedding

  t = np.arange(1000)
  a = off.functions.get_timestep_embedding(torch.from_numpy(t), 128).numpy()
  b = np.asarray(timestep_embedding(jnp.asarray(t), 128))
  # The frequencies differ by one float32 ulp (the official code rounds log(1e4)/(half-1)
  # first); times t <= 999 that moves sin/cos by at most ~6e-5, at small t by ~1e-7.
  assert np.abs(a - b).max() < 1e-4
  assert np.abs(a[:10] - b[:10]).max() < 1e-6


@pytest.mark.parametrize("dim", [1, 2])
def test_network_output_matches_the_official_decoder(official, dim, monkeypatch):
  torch, _, off = official
  from mode_interp.networks import mlp

  torch.manual_seed(0)
  dec = off.toy_model.Decoder(dim, 128, 3)
  _perturb(dec, torch)
  params = _flax_params(dec)
  monkeypatch.setattr(mlp, "timestep_embedding", _torch_embedding(official))
  rng = np.random.default_rng(1)
  x = (3 * rng.standard_normal((1500, dim))).astype(np.float32)
  t = rng.integers(0, 1000, 1500)
  with torch.no_grad():
    want = dec(torch.from_numpy(x), torch.from_numpy(t)).numpy()
  for model in (mlp.ToyMLP(width=128), mlp.ToyMLP(width=128, timesteps=1000)):  # direct, table
    got = np.asarray(model.apply({"params": params}, jnp.asarray(x), jnp.asarray(t, jnp.int32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_layernorm_agrees_with_torch_on_the_networks_activations(official):
  torch, _, off = official
  from mode_interp.networks import mlp
  import flax.linen as nn

  # flax's LayerNorm defaults to the one-pass variance E[x^2] - E[x]^2, torch's is two-pass.
  # They differ only where a sample's mean over the features dominates its spread; at the
  # inputs of the network's LayerNorms |mean| / std stays far below 1 (a 1D input times 128
  # weights around zero; measured below 0.2 on trained checkpoints too), so the two agree
  # to float32 rounding and the network keeps flax's default.
  torch.manual_seed(0)
  dec = off.toy_model.Decoder(1, 128, 3)
  _perturb(dec, torch)
  seen = []
  hooks = [
    m.register_forward_hook(
      lambda mod, inp, out: seen.append(
        (mod, inp[0].detach().numpy().copy(), out.detach().numpy().copy())
      )
    )
    for m in dec.modules()
    if isinstance(m, torch.nn.LayerNorm)
  ]
  rng = np.random.default_rng(0)
  with torch.no_grad():
    dec(
      torch.from_numpy(rng.uniform(-1, 7, (4096, 1)).astype(np.float32)),
      torch.from_numpy(rng.integers(0, 1000, 4096)),
    )
  for h in hooks:
    h.remove()
  assert len(seen) == 7  # norm1 and norm2 of the 3 (shared) blocks, and out_norm
  for mod, x, want in seen:
    ratio = np.abs(x.mean(-1)) / x.std(-1)
    assert ratio.max() < 1.0
    p = {
      "params": {
        "scale": jnp.asarray(mod.weight.detach().numpy()),
        "bias": jnp.asarray(mod.bias.detach().numpy()),
      }
    }
    got = np.asarray(mlp._norm().apply(p, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, atol=5e-6)
  # Where the mean dominates (|mean| / std ~ 30) the one-pass variance would lose digits.
  hh = (30 + rng.standard_normal((512, 128))).astype(np.float32)
  want = torch.nn.LayerNorm(128)(torch.from_numpy(hh)).detach().numpy()
  p = {"params": {"scale": jnp.ones(128), "bias": jnp.zeros(128)}}
  fast = np.asarray(nn.LayerNorm(epsilon=1e-5, use_fast_variance=True).apply(p, hh))
  two_pass = np.asarray(nn.LayerNorm(epsilon=1e-5, use_fast_variance=False).apply(p, hh))
  assert np.abs(two_pass - want).max() < 2e-5 < 1e-4 < np.abs(fast - want).max()


def test_initialisation_matches_xavier_uniform_and_zeros(official):
  torch, _, off = official
  from mode_interp.networks.mlp import ToyMLP

  torch.manual_seed(0)
  ours = ToyMLP(width=128).init(jax.random.key(0), jnp.ones((1, 1)), jnp.zeros((1,), jnp.int32))
  theirs = _flax_params(off.toy_model.Decoder(1, 128, 3))
  flat_o = jax.tree_util.tree_flatten_with_path(ours["params"])[0]
  flat_t = dict(jax.tree_util.tree_flatten_with_path(theirs)[0])
  assert {p for p, _ in flat_o} == set(flat_t)
  for path, a in flat_o:
    a, b = np.asarray(a), np.asarray(flat_t[path])
    name = jax.tree_util.keystr(path)
    assert a.shape == b.shape, name
    if "kernel" in name:
      bound = np.sqrt(6.0 / sum(a.shape))  # xavier uniform: U(-bound, bound)
      for w in (a, b):
        assert np.abs(w).max() <= bound * (1 + 1e-6), name
        if w.size > 100:  # the std of U(-a, a) is a / sqrt(3)
          assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.1, name
    elif "scale" in name:
      assert (a == 1).all() and (b == 1).all(), name
    else:  # biases
      assert (a == 0).all() and (b == 0).all(), name


def _schedule_pair(off, T=1000):
  betas = off.diffusion.get_beta_schedule("linear", beta_start=0.001, beta_end=0.2, timesteps=T)
  tdiff = off.toy_diffusion.GaussianDiffusion(
    betas=betas, model_mean_type="eps", model_var_type="fixed-large", loss_type="mse"
  )
  return diffusion.make_schedule("linear", T, 0.001, 0.2), tdiff


def test_schedule_arrays_match(official):
  _, _, off = official
  s, d = _schedule_pair(off)
  pairs = {
    "betas": d.betas,
    "alphas_bar": d.alphas_bar,
    "sqrt_alphas_bar": d.sqrt_alphas_bar,
    "sqrt_one_minus_alphas_bar": d.sqrt_one_minus_alphas_bar,
    "sqrt_recip_alphas_bar": d.sqrt_recip_alphas_bar,
    "sqrt_recipm1_alphas_bar": d.sqrt_recip_m1_alphas_bar,
    "posterior_variance": d.posterior_var,
    "posterior_log_variance_clipped": d.posterior_logvar_clipped,
    "posterior_mean_coef1": d.posterior_mean_coef1,
    "posterior_mean_coef2": d.posterior_mean_coef2,
  }
  for name, ref in pairs.items():
    np.testing.assert_allclose(
      np.asarray(getattr(s, name)),
      ref.numpy().astype(np.float32),
      rtol=1e-6,
      atol=1e-30,
      err_msg=name,
    )
  t = jnp.arange(1000)
  logvar = np.asarray(diffusion.model_log_variance(s, t, jnp.zeros((1000, 1)), "fixed_large"))
  np.testing.assert_allclose(
    logvar[:, 0], d.fixed_model_logvar.numpy().astype(np.float32), rtol=1e-6
  )


def test_x0_posterior_and_one_reverse_step_match(official, monkeypatch):
  torch, _, off = official
  from mode_interp.networks import mlp

  s, d = _schedule_pair(off)
  torch.manual_seed(1)
  dec = off.toy_model.Decoder(1, 128, 3).eval()
  _perturb(dec, torch, 1)
  params = _flax_params(dec)
  monkeypatch.setattr(mlp, "timestep_embedding", _torch_embedding(official))
  model = mlp.ToyMLP(width=128)
  rng = np.random.default_rng(2)
  for ti in (999, 500, 10, 1, 0):
    x = (2 + rng.standard_normal((256, 1))).astype(np.float32)
    eps = rng.standard_normal((256, 1)).astype(np.float32)
    tt = torch.full((256,), ti, dtype=torch.int64)
    tj = jnp.full((256,), ti, jnp.int32)
    x0 = np.asarray(diffusion.x0_from_eps(s, jnp.asarray(x), tj, jnp.asarray(eps)))
    x0_ref = d._pred_x_0_from_eps(x_t=torch.from_numpy(x), eps=torch.from_numpy(eps), t=tt)
    np.testing.assert_allclose(x0, x0_ref.numpy(), rtol=1e-5, atol=1e-5)
    mean, var, logvar = diffusion.posterior_mean_variance(s, jnp.asarray(x0), jnp.asarray(x), tj)
    m_ref, v_ref, lv_ref = d.q_posterior_mean_var(x_0=x0_ref, x_t=torch.from_numpy(x), t=tt)
    np.testing.assert_allclose(np.asarray(mean), m_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(var)[:, 0], v_ref.numpy()[:, 0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logvar)[:, 0], lv_ref.numpy()[:, 0], rtol=1e-5)
    # One reverse step of each, the same weights and the same noise.
    gen = torch.Generator().manual_seed(ti)
    noise = torch.empty((256, 1)).normal_(generator=torch.Generator().manual_seed(ti)).numpy()
    with torch.inference_mode():
      x_ref, pred_ref = d.p_sample_step(
        dec, torch.from_numpy(x), tt, generator=gen, return_pred=True
      )
    e = model.apply({"params": params}, jnp.asarray(x), jnp.full((1,), ti, jnp.int32))
    x0_hat = diffusion.x0_from_eps(s, jnp.asarray(x), ti, e)
    mu, _, _ = diffusion.posterior_mean_variance(s, x0_hat, jnp.asarray(x), ti)
    lv = diffusion.model_log_variance(s, ti, jnp.asarray(x), "fixed_large")
    x_next = mu + jnp.where(ti > 0, jnp.exp(0.5 * lv), 0.0) * jnp.asarray(noise)
    np.testing.assert_allclose(np.asarray(x0_hat), pred_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(x_next), x_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_loss_reduction_and_gradients_match(official, monkeypatch):
  torch, _, off = official
  from mode_interp.networks import mlp

  s, d = _schedule_pair(off)
  torch.manual_seed(3)
  dec = off.toy_model.Decoder(1, 128, 3)
  _perturb(dec, torch, 3)
  params = _flax_params(dec)
  monkeypatch.setattr(mlp, "timestep_embedding", _torch_embedding(official))
  model = mlp.ToyMLP(width=128, timesteps=1000)
  x0 = gaussians.make_mixture("gaussian1d").sample(2000, seed=0)
  key = jax.random.key(7)
  # This side's loss draws t and the noise from the key; the same draws go to the official
  # train_losses, whose per-sample flat_mean is then averaged as Trainer.step does.
  kt, kn = jax.random.split(key)
  t = np.asarray(jax.random.randint(kt, (2000,), 0, 1000))
  noise = np.asarray(jax.random.normal(kn, x0.shape))
  eps_fn = lambda p, x, tt: model.apply({"params": p}, x, tt)  # noqa: E731
  (loss, _), grads = jax.value_and_grad(diffusion.loss_fn, argnums=1, has_aux=True)(
    eps_fn, params, s, jnp.asarray(x0), key
  )
  ref = d.train_losses(
    dec, x_0=torch.from_numpy(x0), t=torch.from_numpy(t), noise=torch.from_numpy(noise)
  )
  assert ref.shape == (2000,)
  ref = ref.mean()
  ref.backward()
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
  ref_grads = _flax_params(
    type(
      "G",
      (),
      {
        "state_dict": lambda self: {
          k: p.grad for k, p in dec.named_parameters(remove_duplicate=False) if p.grad is not None
        }
      },
    )()
  )
  for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(ref_grads)
  ):
    np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-6, err_msg=jax.tree_util.keystr(path)
    )


def test_adam_update_matches_torch_adam(official):
  torch, _, _ = official
  from mode_interp import train

  rng = np.random.default_rng(0)
  w0 = rng.standard_normal((64, 32)).astype(np.float32)
  grads = [rng.standard_normal((64, 32)).astype(np.float32) * 10.0**-k for k in range(5)]
  opt = train.make_optimizer(1e-3, 0.9, 0.999)
  p = {"w": jnp.asarray(w0)}
  state = opt.init(p)
  tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  topt = torch.optim.Adam([tw], lr=1e-3, betas=(0.9, 0.999))
  for g in grads:  # gradients from 1 down to 1e-4: eps (1e-8, outside the sqrt) matters late
    upd, state = opt.update({"w": jnp.asarray(g)}, state, p)
    p = jax.tree.map(lambda a, b: a + b, p, upd)
    tw.grad = torch.from_numpy(g.copy())
    topt.step()
    np.testing.assert_allclose(np.asarray(p["w"]), tw.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_timestep_sampling_range_matches(official):
  torch, _, _ = official
  ours = np.asarray(jax.random.randint(jax.random.key(0), (200_000,), 0, 1000))
  theirs = torch.randint(1000, size=(200_000,), generator=torch.Generator().manual_seed(0)).numpy()
  for t in (ours, theirs):
    assert t.min() == 0 and t.max() == 999
    counts = np.bincount(t, minlength=1000)
    assert counts.min() > 100 and counts.max() < 300  # uniform: 200 each


def test_reference_driver_batches_and_sampler_reproduce_the_official_code(official):
  torch, rt, off = official
  data = rt.make_data(off, "gaussian1d", 600, seed=0, means=(1.0, 2.0, 3.0))
  assert data.shape == (600, 1) and data.dtype == np.float32
  # The official ``Gaussian1D`` and this package's generator give the same recipe: point i
  # from mode i % 3, std 0.05 around it.
  np.testing.assert_allclose(data[:, 0] - np.tile([1.0, 2.0, 3.0], 200), 0, atol=0.3)
  # --batching=epoch is the official DataStreamer, batch for batch.
  streamer = off.toy_data.DataStreamer(data[:, 0].copy(), batch_size=200, num_batches=3)
  batches = rt.Batches(data, 200, "epoch", seed=0)
  official_batches = [b.numpy() for _ in range(2) for b in streamer]
  for k, b in enumerate(official_batches):
    np.testing.assert_array_equal(batches(k).numpy()[:, 0], b)
  # The driver's sampler is the official p_sample_save_all, keeping only the last window.
  _, d = _schedule_pair(off, T=50)
  torch.manual_seed(0)
  dec = off.toy_model.Decoder(1, 32, 3).eval()
  x, tv = rt.sample(d, dec, 64, 1, 10, seed=5, chunk=64)
  x_ref, _, _, pred_all = d.p_sample_save_all(dec, shape=(64, 1), seed=5)
  pred = np.array([p.numpy() for p in pred_all]).transpose(1, 0, 2)  # as train_toy_filter.py
  np.testing.assert_array_equal(x, x_ref.numpy())
  np.testing.assert_allclose(tv, np.mean(np.var(pred[:, -10:], axis=1), axis=1), rtol=1e-6)
