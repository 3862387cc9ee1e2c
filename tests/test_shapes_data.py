"""Tests for the Simple Shapes generator and checker."""

import numpy as np
import pytest

from mode_interp.data import shapes

SCALES = (1.0, 0.5)
# Documented pixel areas (unclipped, and the range seen with edge clipping).
AREAS = {
  1.0: {"triangle": 65, "square": 64, "pentagon": 70},
  0.5: {"triangle": 16, "square": 16, "pentagon": 15},
}
AREA_RANGES = {
  1.0: {"triangle": (64, 65), "square": (64, 64), "pentagon": (69, 70)},
  0.5: {"triangle": (15, 16), "square": (16, 16), "pentagon": (14, 15)},
}
CANVAS = {1.0: 64, 0.5: 32}


@pytest.fixture(scope="module", params=SCALES, ids=["full", "half"])
def data(request):
  return shapes.generate(3000, seed=0, scale=request.param)


def _blank(scale, n=1):
  c = CANVAS[scale]
  return np.zeros((n, c, c), dtype=np.uint8)


def _put_square(img, scale, column, x, y, width=None, height=None):
  """Paints a square (or a width x height block) at column coordinates."""
  g = shapes.get_geometry(scale)
  side = g.shapes[1].size + 1  # rectangle([x, y, x+s, y+s]) is s+1 wide.
  width = side if width is None else width
  height = side if height is None else height
  x0 = g.column_edges[column] + x
  img[y : y + height, x0 : x0 + width] = 255
  return img


# ---------------------------------------------------------------------------
# Geometry.


def test_geometry_values():
  full = shapes.get_geometry(1.0)
  assert full.canvas == 64 and full.height == 63
  assert full.column_edges == (0, 21, 42, 63)
  assert [s.name for s in full.shapes] == list(shapes.SHAPES)
  assert [s.size for s in full.shapes] == [11, 7, 5]
  tri, sq, pent = full.shapes
  assert sq.x_range == (1, 7) and sq.y_range == (1, 49)
  assert tri.x_range == (0, 10) and tri.y_range == (0, 52)
  assert pent.x_range == (5, 16) and pent.y_range == (5, 58)
  half = shapes.get_geometry(0.5)
  assert half.canvas == 32 and half.height == 31
  assert half.column_edges == (0, 10, 21, 31)
  assert [s.size for s in half.shapes] == [5, 3, 2]
  for scale in SCALES:
    g = shapes.get_geometry(scale)
    assert {s.name: s.area for s in g.shapes} == AREAS[scale]
    # Half a shape must fall below the accepted window, two merged above.
    for s in g.shapes:
      assert s.area // 2 < s.area_lo <= s.area <= s.area_hi < 2 * s.area
  assert shapes.get_geometry(1.0).speck_max_area == 2
  assert shapes.get_geometry(0.5).speck_max_area == 1


@pytest.mark.parametrize("scale", [0.25, 2.0, 0.7])
def test_unsupported_scale(scale):
  with pytest.raises(ValueError, match=r"1\.0, 0\.5"):
    shapes.get_geometry(scale)
  with pytest.raises(ValueError):
    shapes.generate(4, seed=0, scale=scale)
  with pytest.raises(ValueError):
    shapes.check(_blank(1.0), scale=scale)


@pytest.mark.parametrize("scale", SCALES)
def test_every_position_area(scale):
  """All possible placements draw areas within the documented ranges."""
  g = shapes.get_geometry(scale)
  for spec in g.shapes:
    areas = set()
    for x in range(spec.x_range[0], spec.x_range[1] + 1):
      for y in range(spec.y_range[0], spec.y_range[1] + 1):
        areas.add(int((shapes.draw_shape(spec.name, x, y, scale) == 255).sum()))
    lo, hi = AREA_RANGES[scale][spec.name]
    assert min(areas) >= lo and max(areas) <= hi, (spec.name, areas)
    assert spec.area in areas


# ---------------------------------------------------------------------------
# Generator.


def test_basic_properties(data):
  g = data.geometry
  n = len(data)
  assert data.images.shape == (n, CANVAS[g.scale], CANVAS[g.scale])
  assert data.images.dtype == np.uint8
  assert set(np.unique(data.images).tolist()) == {0, 255}
  assert data.present.shape == (n, 3) and data.present.dtype == bool
  assert data.positions.shape == (n, 3, 2)
  assert data.present.any(axis=1).all()
  assert (data.images.reshape(n, -1) == 255).any(axis=1).all()  # No blanks.
  # Padding row and column stay black.
  assert not data.images[:, g.height :, :].any()
  assert not data.images[:, :, g.column_edges[-1] :].any()
  assert ((data.positions == -1).all(axis=2) == ~data.present).all()


def test_presence_rates(data):
  p = 0.5
  expected = p / (1.0 - (1.0 - p) ** 3)  # Blank rejection raises marginals.
  rates = data.present.mean(axis=0)
  np.testing.assert_allclose(rates, expected, atol=0.04)
  corrected = rates * (1.0 - (1.0 - p) ** 3)
  assert ((corrected > 0.45) & (corrected < 0.55)).all(), corrected
  # Shapes are independent: P(all three | not blank) = p^3 / accept.
  all_three = data.present.all(axis=1).mean()
  assert abs(all_three - p**3 / (1.0 - (1.0 - p) ** 3)) < 0.04


def test_positions_in_range(data):
  for c, spec in enumerate(data.geometry.shapes):
    pos = data.positions[data.present[:, c], c]
    assert pos[:, 0].min() >= spec.x_range[0]
    assert pos[:, 0].max() <= spec.x_range[1]
    assert pos[:, 1].min() >= spec.y_range[0]
    assert pos[:, 1].max() <= spec.y_range[1]
    # Uniform: every x value is used.
    assert len(np.unique(pos[:, 0])) == spec.x_range[1] - spec.x_range[0] + 1


def test_pixel_areas_per_column(data):
  g = data.geometry
  for c, spec in enumerate(g.shapes):
    col = data.images[:, :, g.column_edges[c] : g.column_edges[c + 1]]
    area = (col == 255).reshape(len(data), -1).sum(axis=1)
    assert (area[~data.present[:, c]] == 0).all()
    lo, hi = AREA_RANGES[g.scale][spec.name]
    got = area[data.present[:, c]]
    assert got.min() >= lo and got.max() <= hi, (spec.name, got.min(), got.max())


def test_full_scale_reference_areas():
  d = shapes.generate(2000, seed=1, scale=1.0)
  edges = d.geometry.column_edges
  area = np.stack(
    [
      (d.images[:, :, edges[c] : edges[c + 1]] == 255).reshape(len(d), -1).sum(axis=1)
      for c in range(3)
    ],
    1,
  )
  assert (area[d.present[:, 1], 1] == 64).all()
  assert (np.abs(area[d.present[:, 0], 0] - 65) <= 2).all()
  assert (np.abs(area[d.present[:, 2], 2] - 70) <= 2).all()


def test_metadata_matches_pixels(data):
  """Records locate the drawn shapes (independent of the drawing code)."""
  g = data.geometry
  sq_side = g.shapes[1].size + 1
  for i in range(200):
    for rec in data.records(i):
      x0 = g.column_edges[rec.column] + rec.x
      img = data.images[i]
      if rec.shape == "square":
        assert (img[rec.y : rec.y + sq_side, x0 : x0 + sq_side] == 255).all()
      elif rec.shape == "triangle":
        right = min(x0 + rec.size, g.column_edges[1] - 1)
        assert (img[rec.y, x0 : right + 1] == 255).all()  # Top edge.
        assert not img[rec.y - 1, x0 : right + 1].any() if rec.y else True
      else:
        assert img[rec.y, x0] == 255  # Centre.
        assert (img[rec.y, x0 - rec.size + 1 : x0 + rec.size] == 255).all()
    assert {r.shape for r in data.records(i)} == {
      shapes.SHAPES[c] for c in np.flatnonzero(data.present[i])
    }


def test_determinism():
  a = shapes.generate(300, seed=7, scale=0.5)
  b = shapes.generate(300, seed=7, scale=0.5)
  c = shapes.generate(300, seed=8, scale=0.5)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.positions, b.positions)
  assert not np.array_equal(a.images, c.images)
  assert len(shapes.generate(0, seed=0)) == 0


def test_model_io_roundtrip():
  d = shapes.generate(16, seed=3, scale=0.5)
  x = shapes.to_model_input(d.images)
  assert x.shape == (16, 32, 32, 1) and x.dtype == np.float32
  assert x.min() == -1.0 and x.max() == 1.0
  np.testing.assert_array_equal(shapes.from_model_output(x), d.images)
  np.testing.assert_array_equal(shapes.from_model_output(x[..., 0]), d.images)
  grey = np.linspace(-1.2, 1.2, 25, dtype=np.float32).reshape(1, 5, 5)
  out = shapes.from_model_output(grey)
  assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
  assert set(np.unique(shapes.from_model_output(grey, binary=True))) == {0, 255}


# ---------------------------------------------------------------------------
# Checker.


def test_training_images_in_support(data):
  res = shapes.check(data.images, data.geometry.scale)
  assert (res.verdicts == shapes.IN_SUPPORT).all(), res.summary()
  np.testing.assert_array_equal(res.counts, data.present.astype(int))
  assert (res.specks == 0).all()
  for i in range(50):
    for c in range(3):
      assert len(res.areas[i][c]) == int(data.present[i, c])


def test_float_input_same_verdicts(data):
  imgs = data.images[:300].copy()
  # Add some out-of-support content so several verdicts occur.
  _put_square(imgs[0], data.geometry.scale, 1, 1, 1)
  imgs[1] = 0
  imgs[2, :, : CANVAS[data.geometry.scale] // 4] = 0
  ref = shapes.check(imgs, data.geometry.scale)
  x = shapes.to_model_input(imgs)
  for arr in (x, x[..., 0], x.astype(np.float64)):
    res = shapes.check(arr, data.geometry.scale)
    np.testing.assert_array_equal(res.verdicts, ref.verdicts)
    np.testing.assert_array_equal(res.counts, ref.counts)
  assert len(set(ref.verdicts.tolist())) >= 2


@pytest.mark.parametrize("scale", SCALES)
def test_constructed_images(scale):
  g = shapes.get_geometry(scale)
  side = g.shapes[1].size + 1
  h = g.height
  imgs = _blank(scale, 8)
  # 0: one square -> in_support.
  _put_square(imgs[0], scale, 1, 1, 1)
  # 1: two squares in the square column -> multiple_in_column.
  _put_square(imgs[1], scale, 1, 1, 1)
  _put_square(imgs[1], scale, 1, 1, h // 2)
  # 2: half a square -> malformed.
  _put_square(imgs[2], scale, 1, 1, 1, width=side // 2)
  # 3: blank -> blank.
  # 4: two squares merged into one blob -> malformed.
  _put_square(imgs[4], scale, 1, 1, 1, height=2 * side)
  # 5: a square across the triangle/square edge -> malformed.
  _put_square(imgs[5], scale, 0, g.column_edges[1] - side // 2, 1)
  # 6: a square in the triangle column (wrong fill ratio) -> malformed.
  _put_square(imgs[6], scale, 0, 1, 1)
  # 7: two squares plus half a square -> multiple takes precedence.
  _put_square(imgs[7], scale, 1, 1, 1)
  _put_square(imgs[7], scale, 1, 1, h // 2)
  _put_square(imgs[7], scale, 2, 1, 1, width=side // 2)
  res = shapes.check(imgs, scale)
  assert res.verdicts.tolist() == [
    "in_support",
    "multiple_in_column",
    "malformed",
    "blank",
    "malformed",
    "malformed",
    "malformed",
    "multiple_in_column",
  ]
  assert res.counts[1].tolist() == [0, 2, 0]
  assert res.areas[1][1] == (side * side, side * side)
  assert res.areas[3] == ((), (), ())
  # Without the fill check a square in the triangle column is accepted.
  assert shapes.check(imgs[6:7], scale, check_fill=False).verdicts[0] == ("in_support")


@pytest.mark.parametrize("scale", SCALES)
def test_specks_ignored(scale):
  d = shapes.generate(20, seed=5, scale=scale)
  imgs = d.images.copy()
  g = d.geometry
  # Single isolated pixels in the padding row and far corners.
  imgs[:, g.canvas - 1, 0] = 255
  imgs[:, g.canvas - 1, g.canvas - 1] = 255
  res = shapes.check(imgs, scale)
  assert (res.verdicts == shapes.IN_SUPPORT).all()
  assert (res.specks == 2).all()
  only_specks = _blank(scale)
  only_specks[0, 0, 0] = 255
  res = shapes.check(only_specks, scale)
  assert res.verdicts.tolist() == ["blank"] and res.specks.tolist() == [1]


def test_check_rejects_wrong_size():
  with pytest.raises(ValueError, match="32x32"):
    shapes.check(_blank(1.0), scale=0.5)


def test_count_verdicts():
  assert shapes.VERDICTS == ("in_support", "multiple_in_column", "malformed", "blank")
  counts = shapes.count_verdicts(["blank", "in_support", "blank"])
  assert list(counts) == list(shapes.VERDICTS)
  assert counts == {"in_support": 1, "multiple_in_column": 0, "malformed": 0, "blank": 2}
  assert shapes.count_verdicts([]) == dict.fromkeys(shapes.VERDICTS, 0)
  with pytest.raises(ValueError):
    shapes.count_verdicts(["hallucination"])
