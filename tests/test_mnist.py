"""Tests for the numpy-only MNIST loader (mode_interp.data.mnist)."""

import gzip
import hashlib
import io
import os
from pathlib import Path
import subprocess
import sys
import time
import urllib.error

import numpy as np
import pytest

from _idx_writer import write_idx
from mode_interp.data import mnist

N_TINY = 7


def _real_mnist_dir() -> Path:
  env = os.environ.get(mnist.ENV_VAR)
  if env:
    return Path(env)
  return Path(__file__).resolve().parents[2] / "shared/data/mnist"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No env var, and a home (hence cache folder) inside tmp_path."""
  monkeypatch.delenv(mnist.ENV_VAR, raising=False)
  home = tmp_path / "home"
  home.mkdir()
  monkeypatch.setenv("HOME", str(home))
  assert mnist.default_cache_dir() == home / ".cache/mode_interp/mnist"
  return tmp_path


def _make_split(
  directory: Path,
  split: str = "train",
  n: int = N_TINY,
  gz: bool = True,
  seed: int = 0,
  n_labels: int | None = None,
):
  """Writes a tiny random IDX image/label pair; returns (images, labels)."""
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(n if n_labels is None else n_labels,), dtype=np.uint8)
  img_base, lbl_base = mnist.SPLIT_FILES[split]
  suffix = ".gz" if gz else ""
  write_idx(directory / (img_base + suffix), images)
  write_idx(directory / (lbl_base + suffix), labels)
  return images, labels


def _image_path(directory: Path, split: str = "train", gz: bool = True):
  return directory / (mnist.SPLIT_FILES[split][0] + (".gz" if gz else ""))


# ---------------------------------------------------------------- read/write


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_roundtrip(tmp_path, gz, dtype):
  a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
  p = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), a)
  raw = p.read_bytes()
  assert (raw[:2] == b"\x1f\x8b") == gz
  b = mnist.read_idx(p)
  assert b.dtype == np.dtype(dtype) and b.shape == a.shape
  np.testing.assert_array_equal(a, b)


def test_idx_header_layout(tmp_path):
  p = write_idx(tmp_path / "img", np.zeros((3, 28, 28), np.uint8))
  raw = p.read_bytes()
  assert int.from_bytes(raw[:4], "big") == mnist.IMAGE_MAGIC
  assert [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)] == [3, 28, 28]
  assert len(raw) == 16 + 3 * 28 * 28
  p = write_idx(tmp_path / "lbl", np.zeros((3,), np.uint8))
  assert int.from_bytes(p.read_bytes()[:4], "big") == mnist.LABEL_MAGIC


def test_gzip_detected_by_content(tmp_path):
  a = np.arange(10, dtype=np.uint8)
  gz = write_idx(tmp_path / "x.gz", a)
  plain_name = tmp_path / "x"
  plain_name.write_bytes(gz.read_bytes())  # gzipped content, no .gz suffix
  np.testing.assert_array_equal(mnist.read_idx(plain_name), a)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_via_data_dir(isolated, gz, split):
  d = isolated / "data"
  images, labels = _make_split(d, split, gz=gz)
  out = mnist.load_mnist(split, data_dir=d, download=False)
  assert out.split == split
  assert out.source_dir == d
  assert len(out) == N_TINY
  assert out.images.dtype == np.uint8 and out.images.shape == (N_TINY, 28, 28)
  assert out.labels.dtype == np.uint8 and out.labels.shape == (N_TINY,)
  np.testing.assert_array_equal(out.images, images)
  np.testing.assert_array_equal(out.labels, labels)


def test_load_via_env_var(isolated, monkeypatch):
  d = isolated / "env_data"
  images, labels = _make_split(d, "train", gz=False, seed=3)
  monkeypatch.setenv(mnist.ENV_VAR, str(d))
  out = mnist.load_mnist("train", download=False)
  assert out.source_dir == d
  np.testing.assert_array_equal(out.images, images)
  np.testing.assert_array_equal(out.labels, labels)


def test_data_dir_beats_env_var_beats_cache(isolated, monkeypatch):
  explicit, env, cache = (isolated / "explicit", isolated / "env", mnist.default_cache_dir())
  _make_split(explicit, seed=1)
  _make_split(env, seed=2)
  _make_split(cache, seed=3)
  monkeypatch.setenv(mnist.ENV_VAR, str(env))
  assert mnist.load_mnist(data_dir=explicit, download=False).source_dir == explicit
  assert mnist.load_mnist(download=False).source_dir == env
  monkeypatch.delenv(mnist.ENV_VAR)
  assert mnist.load_mnist(download=False).source_dir == cache
  # A directory with the files of the other split only is skipped.
  _make_split(isolated / "test_only", "test")
  assert mnist.load_mnist(data_dir=isolated / "test_only", download=False).source_dir == cache


def test_bad_split_name(isolated):
  with pytest.raises(ValueError, match=r"train.*test.*'validation'"):
    mnist.load_mnist("validation", download=False)


# ---------------------------------------------------------------- bad files


def test_truncated_plain_file(isolated):
  d = isolated / "data"
  _make_split(d, gz=False)
  p = _image_path(d, gz=False)
  p.write_bytes(p.read_bytes()[:-100])
  with pytest.raises(mnist.MnistFormatError) as info:
    mnist.load_mnist(data_dir=d, download=False)
  msg = str(info.value)
  assert p.name in msg
  assert f"{16 + N_TINY * 784 - 16 - 100} bytes" in msg
  assert f"calls for {N_TINY * 784}" in msg
  assert "delete it" in msg


def test_truncated_gzip_payload(isolated):
  """A valid gzip stream whose decompressed IDX payload is short."""
  d = isolated / "data"
  _make_split(d, gz=True)
  p = _image_path(d)
  raw = gzip.decompress(p.read_bytes())
  p.write_bytes(gzip.compress(raw[:-1]))
  with pytest.raises(mnist.MnistFormatError, match="payload"):
    mnist.load_mnist(data_dir=d, download=False)


def test_truncated_gzip_stream(isolated):
  """A gzip file cut mid-stream (e.g. an interrupted copy)."""
  d = isolated / "data"
  _make_split(d, gz=True)
  p = _image_path(d)
  p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
  with pytest.raises(mnist.MnistFormatError, match=p.name) as info:
    mnist.load_mnist(data_dir=d, download=False)
  assert "gzip" in str(info.value) or "payload" in str(info.value)


def test_corrupt_gzip(isolated):
  d = isolated / "data"
  _make_split(d, gz=True)
  p = _image_path(d)
  raw = bytearray(p.read_bytes())
  for i in range(20, len(raw) - 8, 7):  # scramble the deflate body
    raw[i] ^= 0x5A
  p.write_bytes(bytes(raw))
  with pytest.raises(mnist.MnistFormatError, match="bad gzip stream") as info:
    mnist.load_mnist(data_dir=d, download=False)
  assert p.name in str(info.value)


def test_gz_suffix_but_not_gzip(isolated):
  d = isolated / "data"
  _make_split(d, gz=True)
  p = _image_path(d)
  p.write_bytes(gzip.decompress(p.read_bytes()))
  with pytest.raises(mnist.MnistFormatError, match="not a gzip stream"):
    mnist.load_mnist(data_dir=d, download=False)


def test_wrong_magic(isolated):
  d = isolated / "data"
  _make_split(d, gz=False)
  p = _image_path(d, gz=False)
  # Labels where images belong: valid IDX, wrong magic number.
  write_idx(p, np.zeros((N_TINY,), np.uint8))
  with pytest.raises(mnist.MnistFormatError, match="magic number 2049, expected 2051"):
    mnist.load_mnist(data_dir=d, download=False)
  p.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 100)
  with pytest.raises(mnist.MnistFormatError, match="bad IDX magic"):
    mnist.load_mnist(data_dir=d, download=False)


def test_wrong_image_size(isolated):
  d = isolated / "data"
  _make_split(d, gz=False)
  write_idx(_image_path(d, gz=False), np.zeros((N_TINY, 27, 27), np.uint8))
  with pytest.raises(mnist.MnistFormatError, match=r"\(7, 27, 27\)"):
    mnist.load_mnist(data_dir=d, download=False)


def test_trailing_bytes(isolated):
  d = isolated / "data"
  _make_split(d, gz=False)
  p = _image_path(d, gz=False)
  p.write_bytes(p.read_bytes() + b"\x00")
  with pytest.raises(mnist.MnistFormatError, match="trailing"):
    mnist.load_mnist(data_dir=d, download=False)


def test_count_mismatch(isolated):
  d = isolated / "data"
  _make_split(d, n=N_TINY, n_labels=N_TINY - 2)
  with pytest.raises(mnist.MnistFormatError, match=f"{N_TINY} images .* {N_TINY - 2} labels"):
    mnist.load_mnist(data_dir=d, download=False)


# ---------------------------------------------------------------- missing


def test_missing_files_no_download(isolated, monkeypatch):
  d = isolated / "empty"
  d.mkdir()
  monkeypatch.setenv(mnist.ENV_VAR, str(isolated / "nowhere"))
  with pytest.raises(mnist.MnistNotFoundError) as info:
    mnist.load_mnist("train", data_dir=d, download=False)
  msg = str(info.value)
  assert isinstance(info.value, FileNotFoundError)
  for name in mnist.SPLIT_FILES["train"]:
    assert name in msg
  assert "MODE_INTERP_MNIST_DIR" in msg
  assert str(d) in msg
  assert f"{isolated / 'nowhere'}  (does not exist)" in msg
  assert str(mnist.default_cache_dir()) in msg


def test_download_failure_is_fast_and_clean(isolated, monkeypatch):
  calls = []

  def offline(url, timeout):
    calls.append(url)
    raise urllib.error.URLError("Name or service not known")

  monkeypatch.setattr(mnist, "_urlopen", offline)
  start = time.monotonic()
  with pytest.raises(mnist.MnistNotFoundError, match="Download failed"):
    mnist.load_mnist("train", data_dir=isolated / "empty", allow_test_fallback=True)
  assert time.monotonic() - start < 2
  # Each mirror is tried once; an unreachable host is not retried.
  assert len(calls) == len(mnist.MIRRORS)
  cache = mnist.default_cache_dir()
  assert not cache.exists() or not any(cache.iterdir())


class _FakeResponse(io.BytesIO):
  def __init__(self, data, fail_after=None):
    super().__init__(data)
    self.headers = {"Content-Length": str(len(data))}
    self._fail_after = fail_after

  def read(self, n=-1):
    if self._fail_after is not None and self.tell() >= self._fail_after:
      raise TimeoutError("read timed out")
    return super().read(n)


def _fake_server(tmp_path, split="test", fail_after=None):
  """Gzipped tiny split served by name; also patches the expected MD5s."""
  src = tmp_path / "served"
  images, labels = _make_split(src, split, gz=True, seed=5)
  blobs = {p.name: p.read_bytes() for p in src.iterdir()}
  md5 = {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()}

  def urlopen(url, timeout):
    return _FakeResponse(blobs[url.rsplit("/", 1)[1]], fail_after)

  return urlopen, md5, images, labels


def test_download_writes_cache(isolated, monkeypatch):
  logged = []
  monkeypatch.setattr(mnist.logging, "info", lambda msg, *a: logged.append(msg % a))
  urlopen, md5, images, labels = _fake_server(isolated)
  monkeypatch.setattr(mnist, "_urlopen", urlopen)
  monkeypatch.setattr(mnist, "GZ_MD5", md5)
  out = mnist.load_mnist("test", data_dir=isolated / "empty")
  cache = mnist.default_cache_dir()
  assert out.source_dir == cache
  np.testing.assert_array_equal(out.images, images)
  np.testing.assert_array_equal(out.labels, labels)
  assert sorted(p.name for p in cache.iterdir()) == sorted(md5)
  assert any(m.startswith("downloading ") for m in logged), logged


@pytest.mark.parametrize("failure", ["midway", "md5"])
def test_download_never_leaves_partial_file(isolated, monkeypatch, failure):
  urlopen, md5, _, _ = _fake_server(isolated, fail_after=(100 if failure == "midway" else None))
  if failure == "md5":
    md5 = {k: "0" * 32 for k in md5}
  monkeypatch.setattr(mnist, "_urlopen", urlopen)
  monkeypatch.setattr(mnist, "GZ_MD5", md5)
  with pytest.raises(mnist.MnistNotFoundError):
    mnist.load_mnist("test", data_dir=isolated / "empty")
  assert list(mnist.default_cache_dir().iterdir()) == []


# ---------------------------------------------------------------- fallback


def test_test_fallback(isolated, monkeypatch):
  d = isolated / "data"
  images, labels = _make_split(d, "test", gz=True)
  warnings = []
  monkeypatch.setattr(mnist.logging, "warning", lambda msg, *args: warnings.append(msg % args))
  out = mnist.load_mnist("train", data_dir=d, download=False, allow_test_fallback=True)
  assert out.split == "test"
  np.testing.assert_array_equal(out.images, images)
  np.testing.assert_array_equal(out.labels, labels)
  assert len(warnings) == 1
  assert "train" in warnings[0] and "TEST split" in warnings[0]


def test_no_fallback_without_flag(isolated):
  d = isolated / "data"
  _make_split(d, "test")
  with pytest.raises(mnist.MnistNotFoundError, match="train-images"):
    mnist.load_mnist("train", data_dir=d, download=False)


def test_train_preferred_over_fallback(isolated):
  d = isolated / "data"
  _make_split(d, "test")
  _make_split(d, "train")
  out = mnist.load_mnist("train", data_dir=d, download=False, allow_test_fallback=True)
  assert out.split == "train"


# ---------------------------------------------------------------- real data


def test_real_test_split():
  d = _real_mnist_dir()
  if mnist._find_split([d], "test") is None:
    pytest.skip(f"real MNIST test files not found in {d}")
  out = mnist.load_mnist("test", data_dir=d, download=False)
  assert out.split == "test"
  assert out.images.shape == (10_000, 28, 28)
  assert out.images.dtype == np.uint8
  assert out.labels.shape == (10_000,)
  counts = np.bincount(out.labels, minlength=10)
  assert counts.shape == (10,)
  assert np.all((counts >= 800) & (counts <= 1200)), counts
  mean = float(out.images.mean())
  assert 20.0 < mean < 50.0, mean
  # Digits are white on black: the border is (nearly) always background.
  assert float(out.images[:, 0, :].mean()) < 1.0
  x = mnist.to_model_input(out.images[:16])
  assert x.shape == (16, 32, 32, 1) and x.min() == -1.0 and x.max() == 1.0


# ---------------------------------------------------------------- model input


def test_to_model_input_pad_32():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
  imgs[0, 0, 0], imgs[0, 1, 1] = 0, 255
  x = mnist.to_model_input(imgs)
  assert x.shape == (5, 32, 32, 1) and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0
  assert x[0, 2, 2, 0] == -1.0 and x[0, 3, 3, 0] == 1.0
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert np.all(x[:, border, 0] == -1.0)
  np.testing.assert_allclose(x[:, 2:30, 2:30, 0], imgs.astype(np.float32) / 127.5 - 1.0)


def test_to_model_input_28_and_bad_args():
  imgs = np.full((2, 28, 28, 1), 255, np.uint8)
  x = mnist.to_model_input(imgs, size=28)
  assert x.shape == (2, 28, 28, 1) and np.all(x == 1.0)
  with pytest.raises(ValueError, match="28 or 32"):
    mnist.to_model_input(imgs, size=64)
  with pytest.raises(ValueError, match="uint8"):
    mnist.to_model_input(imgs.astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    mnist.to_model_input(np.zeros((2, 32, 32), np.uint8))


def test_module_does_not_import_jax():
  code = "import sys, mode_interp.data.mnist; sys.exit(1 if 'jax' in sys.modules else 0)"
  repo = Path(__file__).resolve().parents[1]
  r = subprocess.run(
    [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60
  )
  assert r.returncode == 0, r.stderr
