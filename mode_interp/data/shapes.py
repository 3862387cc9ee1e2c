"""Simple Shapes data set: generator and sample checker.

Each picture is three columns side by side, in the order
``triangle | square | pentagon``. Every shape is present independently with
probability ``p`` (0.5) at a uniformly random integer position inside its own
column; pictures without any shape are rejected and redrawn. Shapes are drawn
with ``PIL.ImageDraw`` on an 8-bit grey ("L") column image with
``fill=255, outline=255``, so pixel values are exactly 0 or 255. The columns
are concatenated and the picture is put at the top-left of a square zero
canvas (one pixel of padding on the right and at the bottom).

Geometry (``ShapesGeometry``) follows the paper's generator with a target area
``A = 60 * scale**2`` pixels:

* square: side ``s = int(sqrt(A))``; top-left ``x in [1, W - 2s]``,
  ``y in [1, H - 2s]``; ``rectangle([x, y, x + s, y + s])``.
* triangle: side ``s = int(sqrt(4A / sqrt(3)))``; top-left ``x in [0, W - s]``,
  ``y in [0, H - s]``; ``polygon((x, y), (x + s, y),
  (x + s // 2, y + int(s * sqrt(3) / 2)))``.
* pentagon: radius ``s = int(sqrt(4A / sqrt(5 (5 + 2 sqrt 5))))``; centre
  ``cx in [s, W - s]``, ``cy in [s, H - s]``; vertices
  ``(cx + s cos a, cy - s sin a)`` for ``a = 72, 144, 216, 288, 360`` degrees.

(``W``/``H``: column width/height; ranges inclusive.) Shapes that reach the
right edge of their column are clipped by it, exactly as when each column is
drawn on its own image, so areas vary by a pixel or two with position.

Supported scales:

=====  ======  ==============  =====  =========================  ===========
scale  canvas  columns (W)     H      sizes (tri, sq, pent)      areas [px]
=====  ======  ==============  =====  =========================  ===========
1.0    64x64   21 | 21 | 21    63     side 11, side 7, radius 5  65, 64, 70
0.5    32x32   10 | 11 | 10    31     side 5, side 3, radius 2   16, 16, 15
=====  ======  ==============  =====  =========================  ===========

Areas are those of an unclipped shape; clipped shapes measure: full scale
triangle 64..65, square 64, pentagon 69..70; half scale triangle 15..16,
square 16, pentagon 14..15. At both scales the three shapes have about the
same area (as in the paper) and are told apart by their column and by how
much of their bounding box they fill: square 1.0, triangle 0.54 (0.53 at half
scale), pentagon 0.64 (0.75 at half scale).

Positions are stored in column coordinates, as in the paper's metadata:
top-left corner for triangle and square, centre for the pentagon.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("triangle", "square", "pentagon")
SUPPORTED_SCALES: tuple[float, ...] = (1.0, 0.5)

IN_SUPPORT = "in_support"
MULTIPLE_IN_COLUMN = "multiple_in_column"
MALFORMED = "malformed"
BLANK = "blank"
VERDICTS: tuple[str, ...] = (IN_SUPPORT, MULTIPLE_IN_COLUMN, MALFORMED, BLANK)

# Target area of the paper's generator at full scale, in pixels.
_BASE_AREA = 60.0
# Per-scale layout: (canvas side, picture height, column widths).
_LAYOUTS = {
  1.0: (64, 63, (21, 21, 21)),
  0.5: (32, 31, (10, 11, 10)),
}
# A blob is shape-sized when its area is within this fraction of the shape's
# nominal area. Training shapes vary by at most ~3 % (edge clipping); half a
# shape (-50 %) or two merged shapes (+100 %) are far outside.
_AREA_REL_TOL = 0.35
# Absolute tolerance on the bounding-box fill ratio (area / bbox area).
_FILL_TOL = 0.2
# Components of at most this many pixels at full scale are specks (noise).
_SPECK_MAX_AREA_FULL = 2
# Images labelled per scipy call in `check` (bounds the label array's memory).
_CHECK_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
  """One shape's drawing parameters and the checker's acceptance window.

  Attributes:
    name: "triangle", "square" or "pentagon".
    column: column index the shape lives in (0, 1, 2).
    size: side length (triangle, square) or circumradius (pentagon), pixels.
    x_range: inclusive ``(lo, hi)`` of the position's x, column coordinates.
    y_range: inclusive ``(lo, hi)`` of the position's y.
    area: pixel area of the unclipped drawn shape.
    area_lo: smallest blob area the checker accepts for this shape.
    area_hi: largest blob area the checker accepts for this shape.
    fill: fill ratio (area / bounding-box area) of the unclipped shape.
    fill_lo: smallest accepted fill ratio.
    fill_hi: largest accepted fill ratio.
  """

  name: str
  column: int
  size: int
  x_range: tuple[int, int]
  y_range: tuple[int, int]
  area: int
  area_lo: int
  area_hi: int
  fill: float
  fill_lo: float
  fill_hi: float


@dataclasses.dataclass(frozen=True)
class ShapesGeometry:
  """Canvas layout and shape parameters for one scale.

  Attributes:
    scale: 1.0 (64x64) or 0.5 (32x32).
    canvas: side of the square output image.
    height: height of the picture (and of every column).
    column_edges: x edges of the columns, e.g. ``(0, 21, 42, 63)``.
    shapes: one `ShapeSpec` per column, in `SHAPES` order.
    speck_max_area: connected components of at most this many pixels are
      ignored by the checker (counted as specks).
  """

  scale: float
  canvas: int
  height: int
  column_edges: tuple[int, int, int, int]
  shapes: tuple[ShapeSpec, ShapeSpec, ShapeSpec]
  speck_max_area: int

  @property
  def column_widths(self) -> tuple[int, int, int]:
    e = self.column_edges
    return (e[1] - e[0], e[2] - e[1], e[3] - e[2])

  def column_of(self, x):
    """Column index of canvas x coordinate(s).

    The interior edges split the canvas; the padding column on the right
    belongs to the last column.
    """
    return np.searchsorted(np.asarray(self.column_edges[1:3]), x, side="right")


class ShapeRecord(NamedTuple):
  """Metadata of one drawn shape (position in column coordinates)."""

  shape: str
  column: int
  x: int
  y: int
  size: int


@dataclasses.dataclass(frozen=True)
class ShapesDataset:
  """Generated images and their metadata.

  Attributes:
    images: uint8 ``[N, H, W]`` with values in {0, 255}.
    present: bool ``[N, 3]``, which of (triangle, square, pentagon) is drawn.
    positions: int ``[N, 3, 2]`` (x, y) of each shape in its column's
      coordinates (top-left for triangle/square, centre for pentagon);
      -1 where the shape is absent.
    geometry: the `ShapesGeometry` the images were drawn with.
  """

  images: np.ndarray
  present: np.ndarray
  positions: np.ndarray
  geometry: ShapesGeometry

  def __len__(self) -> int:
    return int(self.images.shape[0])

  def records(self, i: int) -> list[ShapeRecord]:
    """Metadata of image ``i``: one record per drawn shape."""
    out = []
    for c, spec in enumerate(self.geometry.shapes):
      if self.present[i, c]:
        x, y = (int(v) for v in self.positions[i, c])
        out.append(ShapeRecord(spec.name, c, x, y, spec.size))
    return out


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """Checker output for N images.

  Attributes:
    verdicts: str array ``[N]``, each one of `VERDICTS`.
    counts: int ``[N, 3]`` number of (non-speck) blobs per column; a blob
      belongs to the column holding its centroid.
    areas: per image, per column, the blob areas in decreasing order.
    specks: int ``[N]`` number of ignored speck components.
    sized: int ``[N, 3]`` number of shape-sized blobs per column (two or more in a column:
      ``multiple_in_column``).
  """

  verdicts: np.ndarray
  counts: np.ndarray
  areas: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
  specks: np.ndarray
  sized: np.ndarray

  def __len__(self) -> int:
    return int(self.verdicts.shape[0])

  def summary(self) -> dict[str, int]:
    """Number of images per verdict (all four keys present)."""
    return count_verdicts(self.verdicts)


# ---------------------------------------------------------------------------
# Geometry and drawing.


def _check_scale(scale: float) -> float:
  for s in SUPPORTED_SCALES:
    if scale == s:
      return s
  raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {scale!r}")


def _shape_size(name: str, area: float) -> int:
  """Reference size formula for target pixel area ``area``."""
  if name == "square":
    return int(math.sqrt(area))
  if name == "triangle":
    return int(math.sqrt(4.0 * area / math.sqrt(3.0)))
  if name == "pentagon":
    return int(math.sqrt(4.0 * area / math.sqrt(5.0 * (5.0 + 2.0 * math.sqrt(5.0)))))
  raise ValueError(f"unknown shape {name!r}")


def _position_range(
  name: str, size: int, width: int, height: int
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Inclusive x and y ranges of the random position."""
  if name == "square":
    return (1, width - 2 * size), (1, height - 2 * size)
  if name == "triangle":
    return (0, width - size), (0, height - size)
  if name == "pentagon":
    return (size, width - size), (size, height - size)
  raise ValueError(f"unknown shape {name!r}")


def _draw_column(name: str, size: int, x: int, y: int, width: int, height: int) -> np.ndarray:
  """Draws one shape on its own ``height x width`` column; bool mask."""
  img = Image.new("L", (width, height), color=0)
  draw = ImageDraw.Draw(img)
  if name == "square":
    draw.rectangle([x, y, x + size, y + size], fill=255, outline=255)
  elif name == "triangle":
    apex = (x + size // 2, y + int(size * math.sqrt(3.0) / 2.0))
    draw.polygon([(x, y), (x + size, y), apex], fill=255, outline=255)
  elif name == "pentagon":
    vertices = []
    for k in range(1, 6):
      a = math.radians(72.0 * k)
      vertices.append((x + size * math.cos(a), y - size * math.sin(a)))
    draw.polygon(vertices, fill=255, outline=255)
  else:
    raise ValueError(f"unknown shape {name!r}")
  return np.asarray(img) > 127


def _mask_stats(mask: np.ndarray) -> tuple[int, float]:
  """Pixel area and bounding-box fill ratio of a mask."""
  ys, xs = np.nonzero(mask)
  area = int(ys.size)
  box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
  return area, area / float(box)


@functools.lru_cache(maxsize=None)
def get_geometry(scale: float = 1.0) -> ShapesGeometry:
  """Geometry for a supported scale (1.0 or 0.5).

  Raises:
    ValueError: for any other scale.
  """
  scale = _check_scale(scale)
  canvas, height, widths = _LAYOUTS[scale]
  edges = (0, widths[0], widths[0] + widths[1], sum(widths))
  target = _BASE_AREA * scale * scale
  specs = []
  for c, name in enumerate(SHAPES):
    size = _shape_size(name, target)
    xr, yr = _position_range(name, size, widths[c], height)
    if xr[0] > xr[1] or yr[0] > yr[1]:
      raise AssertionError(f"{name} does not fit its column at scale {scale}")
    # Nominal area and fill ratio: the shape drawn away from any edge.
    big = 4 * size + 4
    area, fill = _mask_stats(_draw_column(name, size, 2 * size + 1, 2 * size + 1, big, big))
    specs.append(
      ShapeSpec(
        name=name,
        column=c,
        size=size,
        x_range=xr,
        y_range=yr,
        area=area,
        area_lo=int(math.ceil(area * (1.0 - _AREA_REL_TOL))),
        area_hi=int(math.floor(area * (1.0 + _AREA_REL_TOL))),
        fill=fill,
        fill_lo=max(0.0, fill - _FILL_TOL),
        fill_hi=min(1.0, fill + _FILL_TOL),
      )
    )
  speck = max(1, int(round(_SPECK_MAX_AREA_FULL * scale * scale)))
  return ShapesGeometry(
    scale=scale,
    canvas=canvas,
    height=height,
    column_edges=edges,
    shapes=tuple(specs),
    speck_max_area=speck,
  )


@functools.lru_cache(maxsize=None)
def _column_tables(scale: float) -> tuple[np.ndarray, ...]:
  """Every possible column image, per shape: bool ``[nx, ny, H, W]``.

  Each entry is drawn by PIL exactly as the generator would draw it, so
  generation is a table look-up and needs no assumption about how PIL
  rasterises a shifted polygon.
  """
  geom = get_geometry(scale)
  tables = []
  for spec, width in zip(geom.shapes, geom.column_widths):
    xs = range(spec.x_range[0], spec.x_range[1] + 1)
    ys = range(spec.y_range[0], spec.y_range[1] + 1)
    table = np.zeros((len(xs), len(ys), geom.height, width), dtype=bool)
    for i, x in enumerate(xs):
      for j, y in enumerate(ys):
        table[i, j] = _draw_column(spec.name, spec.size, x, y, width, geom.height)
    table.flags.writeable = False
    tables.append(table)
  return tuple(tables)


def draw_shape(name: str, x: int, y: int, scale: float = 1.0) -> np.ndarray:
  """Draws a single shape at column position (x, y); uint8 column image.

  Args:
    name: one of `SHAPES`.
    x: x position in column coordinates (any integer; not range checked).
    y: y position in column coordinates.
    scale: geometry scale.

  Returns:
    uint8 ``[H, W]`` column image with values {0, 255}.
  """
  geom = get_geometry(scale)
  c = SHAPES.index(name)
  mask = _draw_column(name, geom.shapes[c].size, x, y, geom.column_widths[c], geom.height)
  return mask.astype(np.uint8) * 255


# ---------------------------------------------------------------------------
# Generator.


def generate(num_images: int, seed: int, scale: float = 1.0, p: float = 0.5) -> ShapesDataset:
  """Generates the Simple Shapes training set.

  Args:
    num_images: number of (non-blank) images to return.
    seed: seed of ``np.random.default_rng``; equal seeds give equal data.
    scale: 1.0 (64x64) or 0.5 (32x32).
    p: probability that each shape is present, before blank rejection.

  Returns:
    A `ShapesDataset`.
  """
  if num_images < 0:
    raise ValueError(f"num_images must be >= 0, got {num_images}")
  if not 0.0 < p <= 1.0:
    raise ValueError(f"p must be in (0, 1], got {p}")
  geom = get_geometry(scale)
  tables = _column_tables(geom.scale)
  rng = np.random.default_rng(seed)
  lo = np.array([[s.x_range[0], s.y_range[0]] for s in geom.shapes])
  hi = np.array([[s.x_range[1], s.y_range[1]] for s in geom.shapes])
  accept = 1.0 - (1.0 - p) ** 3

  present_parts, pos_parts, kept = [], [], 0
  while kept < num_images:
    need = num_images - kept
    batch = max(64, int(math.ceil(1.2 * need / accept)))
    present = rng.random((batch, 3)) < p
    pos = rng.integers(lo, hi + 1, size=(batch, 3, 2))
    keep = present.any(axis=1)  # Blank pictures are rejected.
    present, pos = present[keep][:need], pos[keep][:need]
    present_parts.append(present)
    pos_parts.append(pos)
    kept += present.shape[0]
  if present_parts:
    present = np.concatenate(present_parts)
    pos = np.concatenate(pos_parts)
  else:
    present = np.zeros((0, 3), dtype=bool)
    pos = np.zeros((0, 3, 2), dtype=np.int64)

  images = np.zeros((num_images, geom.canvas, geom.canvas), dtype=np.uint8)
  for c, spec in enumerate(geom.shapes):
    x0, x1 = geom.column_edges[c], geom.column_edges[c + 1]
    rows = np.flatnonzero(present[:, c])
    ix = pos[rows, c, 0] - spec.x_range[0]
    iy = pos[rows, c, 1] - spec.y_range[0]
    images[rows, : geom.height, x0:x1] = tables[c][ix, iy].astype(np.uint8) * 255
  positions = np.where(present[:, :, None], pos, -1).astype(np.int64)
  return ShapesDataset(images=images, present=present, positions=positions, geometry=geom)


def to_model_input(images: np.ndarray) -> np.ndarray:
  """uint8 ``[N, H, W]`` (or ``[N, H, W, 1]``) -> float32 NHWC in [-1, 1]."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] != 1:
    raise ValueError(f"expected [N, H, W] or [N, H, W, 1], got {x.shape}")
  return (x.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def from_model_output(x: np.ndarray, binary: bool = False) -> np.ndarray:
  """Float samples in [-1, 1] (NHWC with C=1, or NHW) -> uint8 ``[N, H, W]``.

  Values are clipped to [-1, 1] and mapped to 0..255 rounding half up, so
  ``x == 0`` maps to 128, which `check` counts as foreground, like the float
  input itself.

  Args:
    x: model output.
    binary: if True, threshold at 0 (mid-grey) and return values {0, 255}.

  Returns:
    uint8 ``[N, H, W]``.
  """
  x = np.asarray(x, dtype=np.float32)
  if x.ndim == 4:
    if x.shape[-1] != 1:
      raise ValueError(f"expected one channel, got shape {x.shape}")
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f"expected [N, H, W] or [N, H, W, 1], got {x.shape}")
  if binary:
    return np.where(x >= 0.0, 255, 0).astype(np.uint8)
  y = np.floor((np.clip(x, -1.0, 1.0) + 1.0) * 127.5 + 0.5)
  return y.astype(np.uint8)


# ---------------------------------------------------------------------------
# Checker.


def _binarise(images: np.ndarray, geom: ShapesGeometry) -> np.ndarray:
  """Foreground mask ``[N, H, W]`` of uint8/int (0..255), bool or float input.

  Integers: ``v > 127.5``. Floats in [-1, 1]: ``x >= 0`` (the tie goes to
  foreground, consistent with `from_model_output`, which maps 0.0 to 128).
  """
  x = np.asarray(images)
  if x.ndim == 4:
    if x.shape[-1] != 1:
      raise ValueError(f"expected one channel, got shape {x.shape}")
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f"expected images [N, H, W] or [N, H, W, 1], got shape {x.shape}")
  if x.shape[1:] != (geom.canvas, geom.canvas):
    raise ValueError(
      f"images are {x.shape[1]}x{x.shape[2]}, scale {geom.scale} expects "
      f"{geom.canvas}x{geom.canvas}"
    )
  if x.dtype == np.bool_:
    return x
  if np.issubdtype(x.dtype, np.integer):
    return x > 127
  if np.issubdtype(x.dtype, np.floating):
    return x >= 0.0
  raise ValueError(f"unsupported image dtype {x.dtype}")


# 8-connectivity within each image, none across the batch axis. Every drawn
# training shape is 4-connected as well, so both choices agree on training
# images. Generated samples, however, often render thin parts (the triangle's
# apex, the pentagon's vertices, a slightly eroded edge) as pixels touching
# only diagonally; 4-connectivity would split such a shape into a body plus
# fragments and call it malformed (or multiple). With 8-connectivity the cost
# is that two shapes touching at a corner merge into one blob, which is too
# large and so malformed -- the conservative outcome.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def _blob_table(mask: np.ndarray) -> dict[str, np.ndarray]:
  """Connected components of a batch of masks and their statistics."""
  from scipy import ndimage  # imported when first needed: it costs a quarter second

  labels, n = ndimage.label(mask, structure=_STRUCTURE)
  flat = labels.ravel()
  idx = np.flatnonzero(flat)
  lab = flat[idx] - 1
  img, y, x = np.unravel_index(idx, mask.shape)
  order = np.argsort(lab, kind="stable")
  lab, img, y, x = lab[order], img[order], y[order], x[order]
  area = np.bincount(lab, minlength=n)
  if n == 0:
    empty = np.zeros(0, dtype=np.int64)
    return dict(
      area=empty, img=empty, xmin=empty, xmax=empty, ymin=empty, ymax=empty, cx=np.zeros(0)
    )
  starts = np.concatenate([[0], np.cumsum(area)[:-1]])
  return dict(
    area=area,
    img=img[starts],
    xmin=np.minimum.reduceat(x, starts),
    xmax=np.maximum.reduceat(x, starts),
    ymin=np.minimum.reduceat(y, starts),
    ymax=np.maximum.reduceat(y, starts),
    cx=np.add.reduceat(x.astype(np.float64), starts) / area,
  )


def check(images: np.ndarray, scale: float = 1.0, check_fill: bool = True) -> CheckResult:
  """Classifies images as in-support, multiple-in-column, malformed or blank.

  Per image: binarise at mid-grey; label 8-connected components over the
  whole image; ignore components of at most ``speck_max_area`` pixels
  (counted in ``specks``); assign each remaining blob to the column holding
  its centroid. A blob is *shape-sized* when its area lies in
  ``[area_lo, area_hi]`` of its column's shape, and *well-formed* when it is
  shape-sized, all its pixels lie in that one column and (if ``check_fill``)
  its bounding-box fill ratio lies in ``[fill_lo, fill_hi]``.

  Verdict precedence (first match wins):

  1. ``blank``: no blob at all (specks only or empty).
  2. ``multiple_in_column``: some column holds two or more shape-sized blobs
     (mode interpolation, e.g. two squares in the square column), whatever
     else the image holds.
  3. ``malformed``: some blob is not well-formed (wrong size, e.g. half a
     shape or merged shapes; straddles a column edge; wrong shape), or some
     column holds two or more blobs.
  4. ``in_support``: every column holds at most one blob and it is
     well-formed.

  Args:
    images: ``[N, H, W]`` or ``[N, H, W, 1]``; uint8 (or any integer) in
      0..255, float in [-1, 1], or bool masks. The kind is told by dtype.
    scale: geometry scale, 1.0 or 0.5.
    check_fill: also require a plausible bounding-box fill ratio.

  Returns:
    A `CheckResult`.
  """
  geom = get_geometry(scale)
  mask = _binarise(images, geom)
  n_img = mask.shape[0]
  specs = geom.shapes
  area_lo = np.array([s.area_lo for s in specs])
  area_hi = np.array([s.area_hi for s in specs])
  fill_lo = np.array([s.fill_lo for s in specs])
  fill_hi = np.array([s.fill_hi for s in specs])

  counts = np.zeros((n_img, 3), dtype=np.int64)
  sized = np.zeros((n_img, 3), dtype=np.int64)
  bad = np.zeros(n_img, dtype=bool)
  specks = np.zeros(n_img, dtype=np.int64)
  areas = [[[] for _ in range(3)] for _ in range(n_img)]

  for start in range(0, n_img, _CHECK_CHUNK):
    t = _blob_table(mask[start : start + _CHECK_CHUNK])
    img = t["img"] + start
    is_speck = t["area"] <= geom.speck_max_area
    specks += np.bincount(img[is_speck], minlength=n_img)
    keep = ~is_speck
    img, area = img[keep], t["area"][keep]
    xmin, xmax = t["xmin"][keep], t["xmax"][keep]
    ymin, ymax = t["ymin"][keep], t["ymax"][keep]
    col = geom.column_of(t["cx"][keep])
    spans = geom.column_of(xmin) != geom.column_of(xmax)
    is_sized = (area >= area_lo[col]) & (area <= area_hi[col])
    ok = is_sized & ~spans
    if check_fill:
      fill = area / ((xmax - xmin + 1) * (ymax - ymin + 1))
      ok &= (fill >= fill_lo[col]) & (fill <= fill_hi[col])
    np.add.at(counts, (img, col), 1)
    np.add.at(sized, (img, col), is_sized.astype(np.int64))
    bad |= np.bincount(img[~ok], minlength=n_img) > 0
    for i, c, a in zip(img.tolist(), col.tolist(), area.tolist()):
      areas[i][c].append(a)

  verdicts = np.full(n_img, IN_SUPPORT, dtype=f"<U{max(map(len, VERDICTS))}")
  verdicts[bad | (counts >= 2).any(axis=1)] = MALFORMED
  verdicts[(sized >= 2).any(axis=1)] = MULTIPLE_IN_COLUMN
  verdicts[counts.sum(axis=1) == 0] = BLANK
  areas_out = [tuple(tuple(sorted(a, reverse=True)) for a in per_img) for per_img in areas]
  return CheckResult(verdicts=verdicts, counts=counts, areas=areas_out, sized=sized, specks=specks)


def count_verdicts(verdicts: Sequence[str] | np.ndarray) -> dict[str, int]:
  """Number of images per verdict; keys are `VERDICTS`, in order."""
  out = {v: 0 for v in VERDICTS}
  for v in np.asarray(verdicts, dtype=str).ravel().tolist():
    if v not in out:
      raise ValueError(f"unknown verdict {v!r}; expected one of {VERDICTS}")
    out[v] += 1
  return out
