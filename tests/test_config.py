"""Tests for config validation and the entry point's one-line config errors."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

from experiments import config_check
from mode_interp.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
  os.path.splitext(os.path.basename(p))[0]
  for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
  if not os.path.basename(p).startswith("_") and os.path.basename(p) != "common.py"
)
GAUSSIAN_CONFIGS = ("gaussian1d", "grid25", "grid25_rotated")
GAUSSIAN_VARIANTS = ("", "paper", "sweep", "imbalance", "sweep_paper", "official", "tiny")


def _get_config(name, arg=""):
  return importlib.import_module(f"configs.{name}").get_config(arg)


def test_gaussian_configs_exist():
  for name in GAUSSIAN_CONFIGS:
    assert name in CONFIG_FILES


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_validates(name):
  cfg = _get_config(name)
  config_check.validate(cfg)
  assert cfg.experiment in config_check.EXPERIMENTS
  assert cfg.data.name in config_check.DATA_NAMES[cfg.experiment]


@pytest.mark.parametrize("name", GAUSSIAN_CONFIGS)
@pytest.mark.parametrize("arg", GAUSSIAN_VARIANTS)
def test_gaussian_variants_validate(name, arg):
  cfg = _get_config(name, arg)
  config_check.validate(cfg)
  assert cfg.data.name == name
  assert cfg.sweep.enabled == (arg in ("sweep", "imbalance", "sweep_paper"))


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="paper"):
    _get_config("gaussian1d", "huge")


def _set(cfg, field, value):
  section, _, leaf = field.rpartition(".")
  node = cfg
  for part in section.split(".") if section else ():
    node = node[part]
  node[leaf] = value


# (field assigned, value, field the error must name, words the message must hold)
BAD = [
  ("data.name", "nope", "data.name", ("nope", "gaussian1d", "grid25", "grid25_rotated")),
  ("data.num_train", 0, "data.num_train", (">= 1",)),
  ("data.num_train", -5, "data.num_train", ()),
  ("train.batch_size", 0, "train.batch_size", ()),
  ("train.batch_size", -1, "train.batch_size", ()),
  ("sample.num_samples", 0, "sample.num_samples", ()),
  ("diffusion.timesteps", 0, "diffusion.timesteps", ()),
  ("diffusion.timesteps", -10, "diffusion.timesteps", ()),
  ("detect.window", 1001, "detect.window", ("1000",)),
  ("detect.window", 0, "detect.window", ()),
  ("sample.sampler", "euler", "sample.sampler", ("euler", "ddim", "ddpm")),
  ("sample.variance", "learned", "sample.variance", ("fixed_large", "fixed_small")),
  ("diffusion.schedule", "sigmoid", "diffusion.schedule", ("linear", "quad", "cosine")),
  ("diffusion.beta_end", 0.0005, "diffusion.beta_end", ()),
  ("diffusion.beta_start", 0.0, "diffusion.beta_start", ()),
  ("train.lr", 0.0, "train.lr", ()),
  ("train.lr", -1e-3, "train.lr", ()),
  ("train.batch_size", 40_000, "train.batch_size", ("data.num_train",)),
  ("data.means", (1.0,), "data.means", ()),
  ("data.means", ("a", "b"), "data.means", ()),
  ("data.std", 0.0, "data.std", ()),
  ("sample.chunk_size", 0, "sample.chunk_size", ()),
  ("seed", -1, "seed", ()),
  ("detect.keep_in_support", 1.0, "detect.keep_in_support", ()),
  ("train.warmup_steps", 6_000, "train.warmup_steps", ("< train.steps",)),
  ("train.warmup_steps", -1, "train.warmup_steps", ()),
  ("detect.reduction", "median", "detect.reduction", ("median", "mean", "max")),
  ("detect.k_sigma", 0.0, "detect.k_sigma", ("> 0",)),
  ("detect.k_sigma", -2.0, "detect.k_sigma", ()),
  ("detect.remove_hallucinations", 1.5, "detect.remove_hallucinations", ("< 1",)),
  ("detect.remove_hallucinations", 0.0, "detect.remove_hallucinations", ("> 0",)),
  ("detect.keep_in_support", 0.0, "detect.keep_in_support", ("> 0",)),
  ("sample.eta", -0.5, "sample.eta", (">= 0",)),
  ("sample.num_steps", -1, "sample.num_steps", (">= 0",)),
  ("sample.chunk_size", -4, "sample.chunk_size", (">= 1",)),
  ("train.log_every", 0, "train.log_every", (">= 1",)),
  ("train.ckpt_every", 0, "train.ckpt_every", (">= 1",)),
  ("train.steps", -1, "train.steps", (">= 0",)),
  ("train.ema_decay", 1.0, "train.ema_decay", ("< 1",)),
  ("train.grad_clip", -1.0, "train.grad_clip", (">= 0",)),
  ("train.lr_schedule", "linear", "train.lr_schedule", ("constant", "cosine")),
  ("model.width", 1, "model.width", (">= 2",)),
  ("model.num_blocks", 0, "model.num_blocks", (">= 1",)),
  ("num_devices", -1, "num_devices", (">= 0",)),
  ("sweep.steps", -1, "sweep.steps", (">= 0",)),
  ("sweep.num_samples", 0, "sweep.num_samples", (">= 1",)),
  ("plots.predictor_times", (1, -5), "plots.predictor_times", (">= 0",)),
]


@pytest.mark.parametrize("field,value,named,words", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_values_are_refused(field, value, named, words):
  cfg = _get_config("gaussian1d")
  _set(cfg, field, value)
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  assert e.value.field == named
  msg = str(e.value)
  assert msg.startswith(named + ":") and "\n" not in msg
  for w in words:
    assert w in msg, (w, msg)


def test_window_is_checked_against_ddim_steps():
  cfg = _get_config("grid25")
  cfg.sample.sampler = "ddim"
  cfg.sample.num_steps = 20
  cfg.detect.window = 20
  config_check.validate(cfg)
  cfg.detect.window = 21
  with pytest.raises(ConfigError, match="detect.window"):
    config_check.validate(cfg)
  cfg.detect.window = 5
  cfg.sample.num_steps = 1001
  with pytest.raises(ConfigError, match="sample.num_steps"):
    config_check.validate(cfg)


def test_distance_sweep_is_1d_only():
  cfg = _get_config("gaussian1d", "distance")
  config_check.validate(cfg)
  assert cfg.sweep.distance and not cfg.sweep.num_train and not cfg.sweep.timesteps
  with pytest.raises(ValueError, match="gaussian1d"):
    _get_config("grid25", "distance")
  cfg = _get_config("grid25", "sweep")
  cfg.sweep.distance = (1.0,)
  with pytest.raises(ConfigError, match="sweep.distance"):
    config_check.validate(cfg)


@pytest.mark.parametrize(
  "field,value",
  [
    ("sweep.distance", (0.5, -1.0)),
    ("sweep.imbalance", (0.0,)),
    ("data.imbalance", 0.0),
    ("sweep.epochs", -1),
  ],
)
def test_new_sweep_fields_are_checked(field, value):
  cfg = _get_config("gaussian1d", "sweep")
  _set(cfg, field, value)
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  assert e.value.field == field


def test_an_empty_sweep_is_refused():
  cfg = _get_config("gaussian1d", "sweep")
  cfg.sweep.num_train, cfg.sweep.timesteps = (), ()
  with pytest.raises(ConfigError, match="sweep.enabled"):
    config_check.validate(cfg)


def test_sweep_entries_are_checked():
  cfg = _get_config("gaussian1d", "sweep")
  cfg.sweep.timesteps = (5, 100)
  with pytest.raises(ConfigError, match="sweep.timesteps"):
    config_check.validate(cfg)


def test_cli_refuses_bad_config_in_one_line(tmp_path):
  workdir = tmp_path / "wd"
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/gaussian1d.py",
      "--config.data.name=nope",
      f"--workdir={workdir}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
  lines = [l for l in proc.stderr.splitlines() if "data.name" in l]
  assert len(lines) == 1, proc.stderr
  for name in ("nope", "gaussian1d", "grid25", "grid25_rotated"):
    assert name in lines[0]
  # Refused before any work: nothing in the workdir, in particular no config.json.
  assert not workdir.exists() or not any(workdir.iterdir())
  assert not (workdir / "config.json").exists()


@pytest.mark.parametrize(
  "value,words",
  [
    (
      ("random,variance",),
      ("'random,variance'", "none, random, variance", "('random','variance')"),
    ),
    (("median",), ("'median'", "none, random, variance")),
    ((), ("non-empty",)),
    (("random", "random"), ("repeat",)),
  ],
)
def test_recursive_filters_are_checked(value, words):
  cfg = _get_config("recursive_grid25")
  cfg.recursive.filters = value
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  msg = str(e.value)
  assert e.value.field == "recursive.filters" and msg.startswith("recursive.filters:")
  for w in words:
    assert w in msg, (w, msg)


@pytest.mark.parametrize(
  "field,value,words",
  [
    ("model.ch_mult", (1, 2, 2, 2, 2, 2, 2, 2), ("halve", "32-pixel")),
    ("model.attn_resolutions", (12,), ("(12,)", "32, 16")),
    ("model.attn_resolutions", ("16",), ("positive ints",)),
  ],
)
def test_unet_shapes_are_checked(field, value, words):
  cfg = _get_config("shapes")
  _set(cfg, field, value)
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  assert e.value.field == field
  for w in words:
    assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize(
  "args,words",
  [
    (["--config=configs/gaussian1d.py:huge"], ("unknown variant 'huge'", "'paper'", "'official'")),
    (["--config=configs/nope.py"], ("No such file", "configs/nope.py")),
    (["--config=configs/gaussian1d.py", "--config.train.stepz=3"], ("stepz", "steps")),
    (["--config=configs/gaussian1d.py", "--config.train.steps=abc"], ("train.steps", "abc")),
  ],
)
def test_cli_refuses_unloadable_configs_in_one_line(tmp_path, args, words):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.main", *args, f"--workdir={tmp_path / 'wd'}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: --config:"), proc.stderr
  for w in words:
    assert w in lines[0], (w, lines[0])
  assert not (tmp_path / "wd").exists()


def test_bfloat16_on_a_backend_without_it_is_refused(monkeypatch):
  """A CPU without AVX512-BF16 / AMX-BF16 emulates bfloat16 (slower than float32): refused
  in one line naming the field and what is allowed; with the instructions it is accepted."""
  from configs import gaussian1d
  from mode_interp import sharding

  cfg = gaussian1d.get_config()
  cfg.model.dtype = "bfloat16"
  monkeypatch.setattr(sharding, "cpu_flags", lambda: {"avx2", "fma"})
  with pytest.raises(ConfigError) as e:
    config_check.validate(cfg)
  msg = str(e.value)
  assert "model.dtype" in msg and "AVX512-BF16" in msg and "'float32'" in msg
  monkeypatch.setattr(sharding, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
  config_check.validate(cfg)
  cfg.model.dtype = "float16"
  with pytest.raises(ConfigError, match="model.dtype"):
    config_check.validate(cfg)


def test_every_registered_experiment_has_a_runner_and_report_rows():
  import importlib
  from experiments import registry

  for name, e in registry.EXPERIMENTS.items():
    module = importlib.import_module(e.module)
    assert callable(module.run) and callable(module.report_rows), name
    assert e.data_names, name


def test_input_shape_of_each_data_kind():
  from configs import gaussian1d, grid25, recursive_mnist, shapes
  from mode_interp import pipeline

  assert pipeline.input_shape(gaussian1d.get_config()) == (1,)
  assert pipeline.input_shape(grid25.get_config()) == (2,)
  assert pipeline.input_shape(shapes.get_config("paper")) == (64, 64, 1)
  assert pipeline.input_shape(shapes.get_config("tiny")) == (32, 32, 1)  # data.scale = 0.5
  assert pipeline.input_shape(recursive_mnist.get_config("tiny")) == (32, 32, 1)
  cfg = gaussian1d.get_config()
  cfg.data.name = "cifar"
  with pytest.raises(ValueError, match="data.name 'cifar'.*allowed: shapes, mnist, gaussian1d"):
    pipeline.input_shape(cfg)
  from mode_interp.data import gaussians

  # The table of dimensions is the mixtures' own: every mixture, the dimension it draws.
  assert set(gaussians.DIMS) == set(gaussians.NAMES)
  for name in gaussians.NAMES:
    cfg.data.name = name
    assert pipeline.input_shape(cfg) == (gaussians.make_mixture(name).dim,)
