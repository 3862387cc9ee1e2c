"""Programs that run once (parameter initialisation) compile with cheaper XLA options and give
the same parameters, bit for bit, as XLA's defaults."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, gaussian1d, shapes
from mode_interp import classifier, pipeline, sharding, train


def _same_bits(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    x, y = np.atleast_1d(np.asarray(x)), np.atleast_1d(np.asarray(y))
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


def _unet_config():
  # Every kind of layer of the image U-Net (convolutions, GroupNorm, the timestep embedding's
  # dense layers, attention), at the fewest parameter arrays.
  cfg = shapes.get_config("tiny")
  common.unet(cfg, ch=4, ch_mult=(1,), num_res_blocks=0, num_groups=2, attn_resolutions=(16,))
  cfg.data.scale = 0.25
  return cfg


@pytest.mark.parametrize(
  "make_config,shape", [(_unet_config, (16, 16, 1)), (gaussian1d.get_config, (1,))]
)
def test_initial_state_is_bit_identical_to_xla_defaults(make_config, shape):
  cfg = make_config()
  model = pipeline.make_model(cfg)
  init = functools.partial(train.init_state, model, pipeline.make_optimizer(cfg))
  x1, key = jnp.zeros((1,) + shape), jax.random.key(3)
  assert sharding.once_options() == sharding.ONCE_OPTIONS  # on this CPU
  _same_bits(sharding.jit_once(init)(x1, key), jax.jit(init)(x1, key))


def test_classifier_initialisation_is_bit_identical_to_eager():
  model = classifier.MnistCNN()
  x1 = jnp.zeros((1,) + classifier.IMAGE_SHAPE)
  key = jax.random.key(5)
  _same_bits(sharding.jit_once(model.init)(key, x1), model.init(key, x1))


def test_xla_default_options_drop_the_once_options():
  with sharding.xla_default_options():
    assert sharding.once_options() == {}
  assert sharding.once_options(sharding.make_mesh(1)) == sharding.ONCE_OPTIONS
