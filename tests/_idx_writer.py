"""Writes IDX files (the MNIST format) for the loader's tests: the inverse of
``mode_interp.data.mnist.read_idx``, which the library itself never needs."""

import gzip
from pathlib import Path

import numpy as np

from mode_interp.data.mnist import _IDX_DTYPES


def write_idx(path, array) -> Path:
  """Writes ``array`` as an IDX file (gzipped if ``path`` ends with ``.gz``).

  Args:
    path: destination file.
    array: numpy array of uint8, int8, int16, int32, float32 or float64.

  Returns:
    The path written.
  """
  path = Path(path)
  array = np.asarray(array)
  codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
  native = array.dtype.newbyteorder("=")
  if native not in codes:
    raise ValueError(f"IDX cannot store dtype {array.dtype}")
  code = codes[native]
  header = bytes([0, 0, code, array.ndim]) + b"".join(
    int(d).to_bytes(4, "big") for d in array.shape
  )
  payload = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header)
    f.write(payload)
  return path
