"""MNIST loader: reads the standard IDX files with numpy only (no JAX).

The four standard files are looked up, gzipped (``.gz``) or not, in the
first of these directories that holds both files of the requested split:

1. the ``data_dir`` argument of :func:`load_mnist`, when given;
2. the directory named by the environment variable ``MODE_INTERP_MNIST_DIR``;
3. the cache folder ``~/.cache/mode_interp/mnist``.

If none holds them and ``download`` is true, the missing files are fetched
into the cache folder from public mirrors (MD5-checked, written to a temporary
file and renamed, so a partial file is never left behind). Any failure ends
in a :class:`MnistNotFoundError` that names the expected files and the
directories searched.

Every file is validated on load (IDX magic number, 28x28 header, payload size
equal to the header's count, gzip stream integrity, matching image and label
counts); a bad file raises :class:`MnistFormatError` rather than loading
partially.

Example::

  split = load_mnist("train")
  x = to_model_input(split.images)  # float32 [60000, 32, 32, 1] in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path
import tempfile
import time
from typing import Sequence
import urllib.error
import urllib.request
import zlib

from absl import logging
import numpy as np

ENV_VAR = "MODE_INTERP_MNIST_DIR"
SPLITS = ("train", "test")
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIZE = 28

# Base names (without ``.gz``) of the image and label files of each split.
SPLIT_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Mirrors serving the original gzipped files, tried in order.
MIRRORS = (
  "https://ossci-datasets.s3.amazonaws.com/mnist/",
  "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# MD5 of the original gzipped files as served by the mirrors.
GZ_MD5 = {
  "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
  "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
  "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
  "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

DOWNLOAD_TIMEOUT_S = 5.0

# IDX element type codes (third byte of the magic number).
_IDX_DTYPES = {
  0x08: np.dtype(np.uint8),
  0x09: np.dtype(np.int8),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_REFETCH_HINT = "delete it and fetch it again"


class MnistNotFoundError(FileNotFoundError):
  """The MNIST files of a split are in none of the searched directories."""


class MnistFormatError(ValueError):
  """An MNIST / IDX file is truncated, corrupt or not what it should be."""


@dataclasses.dataclass(frozen=True)
class MnistSplit:
  """One loaded MNIST split.

  Attributes:
    images: uint8 array ``[N, 28, 28]``, 0 = black background.
    labels: uint8 array ``[N]`` of digits 0..9.
    split: the split actually loaded, ``"train"`` or ``"test"`` (``"test"``
      when ``allow_test_fallback`` kicked in).
    source_dir: directory the files were read from.
  """

  images: np.ndarray
  labels: np.ndarray
  split: str
  source_dir: Path

  def __len__(self) -> int:
    return int(self.images.shape[0])


# --------------------------------------------------------------------------
# IDX reading and writing.
# --------------------------------------------------------------------------


def _format_error(path, what: str) -> MnistFormatError:
  return MnistFormatError(
    f"{path}: {what}. The file is truncated or corrupt; {_REFETCH_HINT} "
    f"(or point {ENV_VAR} at a good copy)."
  )


def _read_exact(stream, buf: memoryview) -> int:
  """Fills ``buf`` from ``stream`` until full or EOF; returns bytes read."""
  got = 0
  while got < len(buf):
    n = stream.readinto(buf[got:])
    if not n:
      break
    got += n
  return got


def _is_gzip(path: Path) -> bool:
  """Whether ``path`` should be read as gzip (by name or by content)."""
  with open(path, "rb") as f:
    head = f.read(2)
  if path.name.endswith(".gz"):
    if head != _GZIP_MAGIC:
      raise _format_error(
        path, f"named .gz but is not a gzip stream (first bytes {head.hex() or 'missing'})"
      )
    return True
  return head == _GZIP_MAGIC


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
  """Reads one IDX file (plain or gzipped) into a numpy array.

  The whole payload must be present: a short or over-long file, or a broken
  gzip stream, raises instead of returning a partial array.

  Args:
    path: file to read; gzip is detected from the ``.gz`` suffix or content.
    expected_magic: if given, the 4-byte magic number the file must carry
      (e.g. 2051 for MNIST images, 2049 for labels).

  Returns:
    Array of shape given by the IDX header, in native byte order.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    MnistFormatError: bad magic number, unknown type code, wrong payload size
      or corrupt gzip stream.
  """
  path = Path(path)
  opener = gzip.open if _is_gzip(path) else open
  try:
    with opener(path, "rb") as f:
      head = f.read(4)
      if len(head) < 4:
        raise _format_error(path, f"only {len(head)} bytes, too short for an IDX header")
      magic = int.from_bytes(head, "big")
      if head[:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES:
        raise _format_error(path, f"bad IDX magic number {magic} (0x{magic:08x}); not an IDX file")
      if expected_magic is not None and magic != expected_magic:
        raise _format_error(path, f"magic number {magic}, expected {expected_magic}")
      dtype = _IDX_DTYPES[head[2]]
      ndim = head[3]
      dims_raw = f.read(4 * ndim)
      if len(dims_raw) < 4 * ndim:
        raise _format_error(path, f"IDX header cut short (needs {ndim} dimension sizes)")
      shape = tuple(int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
      count = int(np.prod(shape, dtype=np.int64))
      out = np.empty(count, dtype=dtype)
      want = out.nbytes
      got = _read_exact(f, memoryview(out).cast("B"))
      if got < want:
        raise _format_error(
          path, f"payload has {got} bytes but the header {shape} calls for {want}"
        )
      if f.read(1):
        raise _format_error(
          path, f"trailing bytes after the {want}-byte payload declared by the header {shape}"
        )
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise _format_error(path, f"bad gzip stream ({type(e).__name__}: {e})") from e
  return out.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------
# Locating and downloading.
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
  """The cache folder downloads go to: ``~/.cache/mode_interp/mnist``."""
  return Path.home() / ".cache" / "mode_interp" / "mnist"


def search_dirs(data_dir=None) -> list[Path]:
  """Directories searched for the MNIST files, in priority order."""
  dirs = []
  if data_dir is not None:
    dirs.append(Path(data_dir).expanduser())
  env = os.environ.get(ENV_VAR)
  if env:
    dirs.append(Path(env).expanduser())
  dirs.append(default_cache_dir())
  unique = []
  for d in dirs:
    if d not in unique:
      unique.append(d)
  return unique


def _find_file(directory: Path, base: str) -> Path | None:
  """Returns ``directory/base`` or ``directory/base.gz``, whichever exists."""
  for name in (base, base + ".gz"):
    p = directory / name
    if p.is_file():
      return p
  return None


def _find_split(dirs: Sequence[Path], split: str):
  """First dir holding both files of ``split``: (dir, img, lbl) or None."""
  img_base, lbl_base = SPLIT_FILES[split]
  for d in dirs:
    img, lbl = _find_file(d, img_base), _find_file(d, lbl_base)
    if img is not None and lbl is not None:
      return d, img, lbl
  return None


def _md5(path: Path) -> str:
  h = hashlib.md5()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _urlopen(url: str, timeout: float):
  """Opens ``url``; a separate function so tests can replace it."""
  request = urllib.request.Request(url, headers={"User-Agent": "mode_interp"})
  return urllib.request.urlopen(request, timeout=timeout)


def _fetch(url: str, dest: Path, timeout: float) -> None:
  """Downloads ``url`` to ``dest`` atomically; progress goes to the log."""
  fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
  tmp = Path(tmp_name)
  try:
    with os.fdopen(fd, "wb") as out, _urlopen(url, timeout) as resp:
      total = int(resp.headers.get("Content-Length") or 0)
      done, last = 0, 0.0
      while True:
        chunk = resp.read(1 << 16)
        if not chunk:
          break
        out.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last > 2.0:
          last = now
          pct = f"{100 * done / total:5.1f}% " if total else ""
          logging.info("%s: %s%s KiB", dest.name, pct, f"{done / 1024:,.0f}")
      logging.info("%s: done, %s KiB", dest.name, f"{done / 1024:,.0f}")
    if total and done != total:
      raise OSError(f"got {done} of {total} bytes")
    expected = GZ_MD5.get(dest.name)
    if expected is not None and _md5(tmp) != expected:
      raise OSError(f"MD5 mismatch (expected {expected})")
    read_idx(tmp)  # full validation before the file becomes visible
    os.replace(tmp, dest)
  finally:
    tmp.unlink(missing_ok=True)


def _download_split(split: str, cache: Path, timeout: float) -> list[str]:
  """Fetches the missing files of ``split`` into ``cache``.

  Returns:
    Problems met, one line each (empty if both files are now present).
  """
  problems = []
  try:
    cache.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    return [f"cannot create cache folder {cache}: {e}"]
  dead_mirrors = set()
  for base in SPLIT_FILES[split]:
    if _find_file(cache, base) is not None:
      continue
    name = base + ".gz"
    dest = cache / name
    for mirror in MIRRORS:
      if mirror in dead_mirrors:
        continue
      url = mirror + name
      logging.info("downloading %s", url)
      try:
        _fetch(url, dest, timeout)
        break
      except (urllib.error.URLError, OSError, MnistFormatError) as e:
        logging.warning("%s: failed: %s", url, e)
        problems.append(f"{url}: {e}")
        if (
          isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError)
        ) or isinstance(e, TimeoutError):
          dead_mirrors.add(mirror)  # unreachable host: do not retry it.
    else:
      return problems  # no mirror delivered this file; give up.
  return []


def _not_found_message(split: str, dirs: Sequence[Path], problems, also: str | None = None) -> str:
  lines = [f"MNIST {split} files not found."]
  files = SPLIT_FILES[split]
  if also:
    files = files + SPLIT_FILES[also]
  lines.append("Expected files (each plain or with a .gz suffix):")
  lines += [f"  {f}" for f in files]
  lines.append("Directories searched, in order:")
  for d in dirs:
    note = "" if d.is_dir() else "  (does not exist)"
    lines.append(f"  {d}{note}")
  if problems:
    lines.append("Download failed:")
    lines += [f"  {p}" for p in problems]
  lines.append(
    f"Put the files in {default_cache_dir()} (or any directory "
    f"and set {ENV_VAR} to it, or pass data_dir=...)."
  )
  return "\n".join(lines)


def _load_from(directory: Path, img_path: Path, lbl_path: Path, split: str) -> MnistSplit:
  images = read_idx(img_path, expected_magic=IMAGE_MAGIC)
  if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    raise _format_error(
      img_path, f"image header says shape {images.shape}, expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}]"
    )
  labels = read_idx(lbl_path, expected_magic=LABEL_MAGIC)
  if labels.ndim != 1:
    raise _format_error(lbl_path, f"label header says shape {labels.shape}, expected [N]")
  if images.shape[0] != labels.shape[0]:
    raise MnistFormatError(
      f"{img_path} holds {images.shape[0]} images but {lbl_path} holds "
      f"{labels.shape[0]} labels; one of them is truncated or from another "
      f"split. {_REFETCH_HINT[0].upper() + _REFETCH_HINT[1:]}."
    )
  if labels.size and labels.max() > 9:
    raise _format_error(lbl_path, f"label value {int(labels.max())} outside 0..9")
  return MnistSplit(images=images, labels=labels, split=split, source_dir=directory)


def load_mnist(
  split: str = "train",
  data_dir: str | os.PathLike | None = None,
  download: bool = True,
  allow_test_fallback: bool = False,
) -> MnistSplit:
  """Loads one MNIST split as uint8 arrays.

  Args:
    split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    data_dir: directory searched first; then ``$MODE_INTERP_MNIST_DIR``, then
      ``~/.cache/mode_interp/mnist``.
    download: when the files are found nowhere, try to fetch them into the
      cache folder (needs internet; fails fast without it).
    allow_test_fallback: when ``split == "train"`` and the train files cannot
      be found (nor downloaded), load the test split instead, logging a
      warning. The returned ``split`` field then says ``"test"``.

  Returns:
    A :class:`MnistSplit`.

  Raises:
    ValueError: unknown ``split``.
    MnistNotFoundError: the files are nowhere to be found.
    MnistFormatError: a file found is truncated or corrupt.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  dirs = search_dirs(data_dir)
  problems = []
  network_down = False

  def locate(which):
    nonlocal network_down
    found = _find_split(dirs, which)
    if found is None and download and not network_down:
      errs = _download_split(which, default_cache_dir(), DOWNLOAD_TIMEOUT_S)
      problems.extend(errs)
      network_down = bool(errs)
      found = _find_split(dirs, which)
    return found

  found = locate(split)
  if found is not None:
    return _load_from(*found, split=split)
  if split == "train" and allow_test_fallback:
    found = locate("test")
    if found is not None:
      logging.warning(
        "MNIST train files (%s) not found in %s; allow_test_fallback is set, "
        "so the 10k TEST split from %s is loaded instead. Results are NOT "
        "train-split results.",
        ", ".join(SPLIT_FILES["train"]),
        ", ".join(str(d) for d in dirs),
        found[0],
      )
      return _load_from(*found, split="test")
    raise MnistNotFoundError(_not_found_message(split, dirs, problems, also="test"))
  raise MnistNotFoundError(_not_found_message(split, dirs, problems))


# --------------------------------------------------------------------------
# Model input.
# --------------------------------------------------------------------------


def to_model_input(images_uint8, size: int = 32) -> np.ndarray:
  """Converts uint8 MNIST images to the score network's input.

  Pixels 0..255 map linearly to [-1, 1]. With ``size == 32`` the 28x28 digit
  is zero-padded by 2 pixels on every side (black, i.e. -1 after scaling).

  Args:
    images_uint8: uint8 array ``[N, 28, 28]`` (or ``[N, 28, 28, 1]``).
    size: 32 (padded) or 28 (unchanged).

  Returns:
    float32 array ``[N, size, size, 1]`` in [-1, 1].
  """
  if size not in (28, 32):
    raise ValueError(f"size must be 28 or 32, got {size}")
  x = np.asarray(images_uint8)
  if x.dtype != np.uint8:
    raise ValueError(f"expected uint8 images in 0..255, got dtype {x.dtype}")
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(f"expected images of shape [N, 28, 28], got {x.shape}")
  if size == 32:
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=0)
  x = x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
  return x[..., None]
