"""The U-Net profile finds every layer of the network and accounts for the whole.

Times are printed, never asserted (shared, noisy machines); what is asserted is the
bookkeeping: every convolution and GroupNorm of the network is timed once per call, the
parts and the rest add up to the whole, and the trace groups operations into classes.
"""

import flax.linen as nn
import pytest
import jax
import jax.numpy as jnp

from configs import shapes
from experiments import profile_unet
from mode_interp import pipeline


def _count_modules(params, kind):
  """Leaves of the parameter tree that are the kernels of ``kind`` layers, by name."""
  names = []

  def walk(tree, path):
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, path + (k,))
      elif k == "kernel":
        names.append(path)

  walk(params, ())
  if kind == "conv":
    return sum(1 for p in names if jnp.ndim(_get(params, p)["kernel"]) == 4)
  return sum(1 for p in names if jnp.ndim(_get(params, p)["kernel"]) == 2)


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def test_record_parts_sees_every_layer_once():
  cfg = shapes.get_config("tiny")
  model = pipeline.make_model(cfg)
  x, t = jnp.zeros((2, 32, 32, 1)), jnp.zeros((2,), jnp.int32)
  # Shapes suffice (record_parts traces abstractly): no eager initialisation to compile.
  params = jax.eval_shape(model.init, jax.random.key(0), x, t)["params"]
  calls = profile_unet.record_parts(model, params, x, t)
  convs = [c for c in calls if isinstance(c[0], nn.Conv)]
  norms = [c for c in calls if isinstance(c[0], nn.GroupNorm)]
  attn = [c for c in calls if isinstance(c[0], profile_unet.unet.AttnBlock)]
  dense = [c for c in calls if isinstance(c[0], nn.Dense)]
  assert len(convs) == _count_modules(params, "conv")
  # The attention block's own norm and projections are inside the block's row.
  n_attn_dense = 4 * len(attn)
  assert len(dense) == _count_modules(params, "dense") - n_attn_dense
  n_norm_params = sum(
    1
    for p in jax.tree_util.tree_leaves_with_path(params)
    if "norm" in jax.tree_util.keystr(p[0]) and p[0][-1].key == "scale"
  )
  assert len(norms) == n_norm_params - len(attn)
  assert len(attn) == 1  # the middle attention block of the tiny U-Net
  labels = {profile_unet._label(m, s) for m, s, _ in convs}
  assert "conv 3x3 stride 2 32x32 8->8" in labels  # the downsampling convolution
  assert "conv 3x3 32x32 1->8" in labels  # conv_in


def test_profile_adds_up_and_traces_op_classes():
  cfg = shapes.get_config("tiny")
  cfg.model.ch_mult = (1,)  # one level: fewer layers to compile
  # No ResNet block on the way down (one on the way up, the middle's two): every kind and
  # shape of part the one-level network has (the same 22 to time alone), in a smaller whole.
  cfg.model.num_res_blocks = 0
  prof = profile_unet.profile(cfg, batch=4, chunk=4, repeats=1, trace=True)
  text = profile_unet.format_profile(prof)
  print("\n" + text)
  n_calls = len(
    profile_unet.record_parts(
      pipeline.make_model(cfg), _params(cfg), jnp.zeros((4, 32, 32, 1)), jnp.zeros((4,), jnp.int32)
    )
  )
  for name in ("train", "sample"):
    p = prof[name]
    assert p["whole_ms"] > 0 and p["whole_gflop"] > 0
    total = sum(q["ms"] for q in p["parts"]) + p["rest_ms"]
    assert abs(total - p["whole_ms"]) < 1e-6 * max(1.0, p["whole_ms"])
    assert sum(q["count"] for q in p["parts"]) == n_calls
    classes = {o["class"] for o in p["op_classes"]}
    assert "convolution" in classes
  # Forward and backward cost about three forwards (the input and the weight gradients).
  fwd = {q["label"]: q["gflop"] / q["count"] for q in prof["sample"]["parts"]}
  bwd = {q["label"]: q["gflop"] / q["count"] for q in prof["train"]["parts"]}
  conv = next(k for k in fwd if k.startswith("conv 3x3 32x32 8->8"))
  assert 2.5 * fwd[conv] < bwd[conv] < 3.5 * fwd[conv]


def _params(cfg):
  """The parameters' shapes (all record_parts needs)."""
  model = pipeline.make_model(cfg)
  return jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 1)), jnp.zeros((1,), jnp.int32)
  )["params"]


def test_profile_refuses_a_model_that_is_not_a_unet():
  from configs import gaussian1d

  cfg = gaussian1d.get_config("tiny")
  with pytest.raises(ValueError, match="model.name"):
    profile_unet.profile(cfg, batch=2, chunk=2)
