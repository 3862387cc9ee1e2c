r"""One sweep's record from workdirs that ran its axes apart (on different cores or machines).

  python -m experiments.merge_sweep --config=configs/gaussian1d.py:sweep_paper \
    --into=reports/latest/gaussian1d_sweep_paper runs/sweep_T runs/sweep_distance

A long sweep (``configs/gaussian1d.py:sweep_paper``: ten trainings of 20-90 min of one core
each) runs fastest split by axis, one workdir per core, e.g.
``--config.sweep.num_train='()' --config.sweep.timesteps='()'`` for the distance axis alone.
This command reads each workdir's ``sweep_table.json`` (and ``--into``'s own, so a record is
completed as its points arrive) and writes into ``--into``:

- ``sweep_table.json``: the rows in ``--config``'s axis order; a point whose training equals
  an earlier point's (the default points sit on every axis) is that point's row, marked
  ``same_as``, as a single run writes it;
- ``sweep_seconds.json``: each point's wall time, merged (notes kept);
- ``config.json``: ``--config``;
- ``figures/sweep.png`` (the rate, learned and exact score, 95% intervals, against each axis)
  and ``figures/sweep_detection.png`` (AUROC, removed at 96% kept);
- ``results.json`` once every point of ``--config`` is there (until then the report shows the
  finished points as a sweep in progress), with the trend of each axis.

Every row is checked before anything is written: its workdir's recipe, with only the sweep's
axis lists allowed to differ, must be ``--config``'s; a point that ``--config`` does not sweep,
or two different results for one point, are refused with the field and the workdirs named.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import ConfigDict

from experiments import cli, gaussian
from mode_interp.errors import ConfigError, DataError
from mode_interp.workdir import flatten, write_json

FLAGS = flags.FLAGS

# Fields of a sweep row that are its measurement (compared when two workdirs hold one point).
_MEASURED = ("hallucination_rate", "true_score_hallucination_rate", "auroc", "num_samples")


def _read(path, what):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: unreadable {what} ({e}); rerun the sweep on that workdir") from None


def expected_points(cfg):
  """``[(field, value, tag, key)]`` of ``cfg``'s sweep, in its axis order."""
  return [
    (field, v, gaussian.sweep_tag(field, v), gaussian.sweep_point_key(cfg, field, v))
    for field in gaussian.SWEEP_FIELDS
    for v in cfg.sweep.get(field, ())
  ]


def _diff(a: dict, b: dict) -> list:
  """The fields where workdir config ``a`` and ``--config``'s ``b`` differ. A field absent from
  ``a`` was added to the code after that run and keeps its default's meaning (as on resume,
  :meth:`mode_interp.workdir.Workdir.write_config`): not a difference."""
  a, b = flatten(a), flatten(b)
  return [
    f"{k}: {a[k]!r} (workdir) vs {b.get(k)!r} (--config)" for k in sorted(a) if a[k] != b.get(k)
  ]


def collect(cfg, sources):
  """The rows of ``sources`` (workdirs or records holding ``sweep_table.json``) that belong to
  ``cfg``'s sweep: ``({tag: row}, {tag: seconds entry})``. Raises ``ConfigError`` on a row of
  another recipe, of a point ``cfg`` does not sweep, or on two results for one point."""
  points = {(f, json.dumps(v)): (tag, key) for f, v, tag, key in expected_points(cfg)}
  rows, seconds, origin = {}, {}, {}
  for src in sources:
    table = _read(os.path.join(src, "sweep_table.json"), "sweep table")
    if table is None:
      raise DataError(f"{src}: no sweep_table.json (not a sweep workdir, or no point finished yet)")
    if not isinstance(table, list):
      raise DataError(f"{src}/sweep_table.json: not a list of sweep points")
    src_cfg = _read(os.path.join(src, "config.json"), "config")
    if src_cfg is None:
      raise DataError(f"{src}: no config.json beside sweep_table.json")
    src_cfg = ConfigDict(src_cfg)
    spent = _read(os.path.join(src, "sweep_seconds.json"), "wall times") or {}
    for r in table:
      field, value = r.get("field"), r.get("value")
      if r.get("same_as"):
        continue  # rebuilt from --config below
      where = points.get((field, json.dumps(value)))
      if where is None:
        allowed = ", ".join(f"{f}={v}" for f, v, _, _ in expected_points(cfg))
        raise ConfigError(
          src,
          f"sweep point {field}={value} is not a point of --config's sweep; its points: {allowed}",
        )
      tag, key = where
      try:
        src_key = gaussian.sweep_point_key(src_cfg, field, value)
      except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(
          f"{src}/config.json", f"not a sweep config of this experiment ({e})"
        ) from None
      diff = _diff(json.loads(src_key), json.loads(key))
      if diff:
        raise ConfigError(
          src,
          f"point {field}={value} was trained with another recipe than --config's: "
          + "; ".join(diff[:5]),
        )
      if tag in rows:
        old = rows[tag]
        if any(old.get(k) != r.get(k) for k in _MEASURED):
          raise ConfigError(
            f"{field}={value}",
            f"two different results for this point, in {origin[tag]} and {src}; pass one of them",
          )
      else:
        rows[tag], origin[tag] = r, src
      if tag in spent and (tag not in seconds or not seconds[tag].get("done")):
        seconds[tag] = spent[tag]
  return rows, seconds


def merge(cfg, sources, into, config_name=""):
  """Writes ``into``'s record from ``sources`` (``into`` itself is read first when it holds
  one). Returns ``(table, pending)``: the rows in axis order and the tags still missing."""
  own = [into] if os.path.exists(os.path.join(into, "sweep_table.json")) else []
  rows, seconds = collect(
    cfg, own + [s for s in sources if os.path.abspath(s) != os.path.abspath(into)]
  )
  table, pending, first = [], [], {}
  for field, value, tag, key in expected_points(cfg):
    if key in first and tag not in rows:
      same = first[key]
      if same in rows:
        table.append(
          {**rows[same], "field": field, "value": value, "wall_seconds": 0.0, "same_as": same}
        )
        if field == "distance":
          table[-1]["means"] = list(gaussian.sweep_point_config(cfg, field, value).data.means)
      continue
    first.setdefault(key, tag)
    if tag in rows:
      table.append(rows[tag])
    else:
      pending.append(tag)
  os.makedirs(os.path.join(into, "figures"), exist_ok=True)
  write_json(os.path.join(into, "config.json"), cfg.to_dict(), indent=2, sort_keys=True)
  write_json(os.path.join(into, "sweep_table.json"), table)
  write_json(os.path.join(into, "sweep_seconds.json"), seconds)
  summary = gaussian.sweep_summary(table, os.path.join(into, "figures", "sweep.png"))
  if not pending:
    write_json(
      os.path.join(into, "results.json"),
      {
        "experiment": "gaussian",
        "data": cfg.data.name,
        "seed": cfg.seed,
        "config_name": config_name,
        "merged_from": [os.path.relpath(s) for s in sources],
        **summary,
      },
    )
  return table, pending


def main(argv):
  cli.start(argv[:1], preemptible=False)
  sources = argv[1:]
  if not FLAGS.into:
    sys.exit("error: --into: required (the record to write, e.g. reports/latest/<sweep>)")
  cfg = FLAGS.config
  if not cfg.get("sweep", {}).get("enabled", False):
    sys.exit("error: --config: not a sweep config (sweep.enabled is False)")

  def go():
    table, pending = merge(cfg, sources, FLAGS.into, cli.config_argument())
    for r in table:
      print(
        f"{r['field']} = {r['value']}: rate {r['hallucination_rate']:.5f} (exact "
        f"{r['true_score_hallucination_rate']:.5f}), AUROC {r['auroc']}"
        + (f"  [same as {r['same_as']}]" if r.get("same_as") else "")
      )
    print(
      f"{len(table)} rows in {FLAGS.into}; "
      + (f"pending: {', '.join(pending)}" if pending else "complete: results.json written")
    )

  cli.run_or_exit(go, (ConfigError, DataError))


if __name__ == "__main__":
  cli.define_config_flags()
  flags.DEFINE_string("into", None, "The record to write (read first when it holds one).")
  app.run(main, flags_parser=cli.parse_flags)
