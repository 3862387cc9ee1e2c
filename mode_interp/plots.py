"""Matplotlib figures from arrays (no model, no sampling here).

Every function writes its figure to a file and closes it. The backend is left to matplotlib
(a file-only one where there is no display, the notebook's own in Jupyter).
"""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

HALLU_COLOR = "#d62728"
OK_COLOR = "#1f77b4"


def save(fig, path, tight=True):
  """Writes ``fig`` to ``path`` and closes it (for figures made outside this module too)."""
  # Figures made with layout="constrained" keep theirs; image grids place their own axes.
  if tight and fig.get_layout_engine() is None:
    fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps legends placed outside the axes
  plt.close(fig)
  return path


def hist_1d(path, train, generated, exact=None, means=None, bins=300):
  """Log-scale histograms of training vs generated 1D data (the paper's Fig. 2)."""
  fig, ax = plt.subplots(figsize=(8, 4))
  lo = min(np.min(train), np.min(generated)) - 0.1
  hi = max(np.max(train), np.max(generated)) + 0.1
  edges = np.linspace(lo, hi, bins + 1)
  ax.hist(np.ravel(train), edges, alpha=0.5, label="training data", color="gray")
  ax.hist(
    np.ravel(generated),
    edges,
    alpha=0.6,
    label="learned score",
    color=OK_COLOR,
    histtype="step",
    linewidth=1.2,
  )
  if exact is not None:
    ax.hist(
      np.ravel(exact),
      edges,
      alpha=0.8,
      label="exact score",
      color="green",
      histtype="step",
      linewidth=1.0,
    )
  if means is not None:
    for m in np.ravel(means):
      ax.axvline(m, color="k", lw=0.5, ls=":")
  ax.set_yscale("log")
  ax.set_xlabel("x")
  ax.set_ylabel("count (log)")
  ax.legend()
  return save(fig, path)


def scatter_2d(path, train, generated, is_hallucination, exact=None, title=""):
  """Training data, and generated samples with hallucinations in red."""
  n = 3 if exact is not None else 2
  # Constrained layout leaves room for the suptitle above the panel titles.
  fig, axes = plt.subplots(1, n, figsize=(5 * n, 5), sharex=True, sharey=True, layout="constrained")
  axes[0].scatter(train[:, 0], train[:, 1], s=0.5, c="gray")
  axes[0].set_title(f"training data ({len(train)})")
  h = np.asarray(is_hallucination, bool)
  axes[1].scatter(generated[~h, 0], generated[~h, 1], s=0.5, c=OK_COLOR, label="in support")
  axes[1].scatter(generated[h, 0], generated[h, 1], s=2, c=HALLU_COLOR, label="hallucination")
  axes[1].set_title(f"learned score: {h.mean():.2%} hallucinated")
  # Below the axes, so the legend never hides a mode in a corner.
  axes[1].legend(
    loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, markerscale=5, frameon=False
  )
  if exact is not None:
    axes[2].scatter(exact[:, 0], exact[:, 1], s=0.5, c="green")
    axes[2].set_title("exact score")
  for ax in axes:
    ax.set_aspect("equal")
  if title:
    fig.suptitle(title)
  return save(fig, path)


def predictor_curves(path, xs, learned, exact, times, means=None, xlabel="x_t"):
  """Learned vs exact E[x0 | x_t] along a line, at several t: the smooth
  approximation of a step function is where hallucinations come from."""
  fig, axes = plt.subplots(1, len(times), figsize=(4 * len(times), 3.6), sharey=True)
  axes = np.atleast_1d(axes)
  for ax, t, l, e in zip(axes, times, learned, exact):
    ax.plot(xs, e, color="k", lw=1.5, label="exact")
    ax.plot(xs, l, color=OK_COLOR, lw=1.5, ls="--", label="learned")
    if means is not None:
      for m in np.ravel(means):
        ax.axhline(m, color="gray", lw=0.4, ls=":")
    ax.set_title(f"t = {t}")
    ax.set_xlabel(xlabel)
  axes[0].set_ylabel("predicted x0")
  axes[0].legend()
  return save(fig, path)


def variance_hist(path, scores, groups: dict, threshold=None, bins=80):
  """Trajectory-variance histograms per group (log-x), with the threshold."""
  fig, ax = plt.subplots(figsize=(7, 4))
  s = np.asarray(scores, np.float64)
  pos = s[s > 0]
  lo = np.log10(pos.min()) if pos.size else -12
  hi = np.log10(s.max()) if s.max() > 0 else 0
  edges = np.logspace(lo - 0.1, hi + 0.1, bins)
  for name, mask in groups.items():
    if np.any(mask):
      ax.hist(
        np.maximum(s[mask], edges[0]),
        edges,
        alpha=0.55,
        label=f"{name} ({int(np.sum(mask))})",
        density=True,
      )
  if threshold is not None:
    ax.axvline(threshold, color="k", ls="--", label="threshold")
  ax.set_xscale("log")
  ax.set_xlabel("trajectory variance of predicted x0")
  ax.set_ylabel("density")
  ax.legend()
  return save(fig, path)


def roc(path, fpr, tpr, auroc, point=None):
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(fpr, tpr, lw=1.5, label=f"AUROC {auroc:.3f}")
  ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls=":")
  if point is not None:
    ax.plot(*point, "o", color=HALLU_COLOR, label="operating point")
  ax.set_xlabel("in-support samples removed (FPR)")
  ax.set_ylabel("hallucinations removed (TPR)")
  ax.legend(loc="lower right")
  return save(fig, path)


def sweep_lines(path, tables: dict, ylabel="hallucination rate", yscale="linear"):
  """One panel per swept field. ``tables[field]`` is ``{"xs": [...], "xscale": "log" |
  "linear", LABEL: (ys, lo, hi), ...}`` with one line (and 95% band) per label, e.g. the
  learned and the exact score; ``(xs, ys, lo, hi)`` tuples are read as one line.
  ``yscale="log"`` draws rates that span decades (zeros are left out of a log panel)."""
  fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4), squeeze=False)
  for ax, (field, panel) in zip(axes[0], tables.items()):
    if isinstance(panel, tuple):
      panel = {"xs": panel[0], "hallucination rate": panel[1:]}
    xs = np.asarray(panel["xs"], np.float64)
    for label, (ys, lo, hi) in ((k, v) for k, v in panel.items() if k not in ("xs", "xscale")):
      ys = np.asarray([np.nan if y is None else y for y in ys], np.float64)
      lo = np.asarray([np.nan if y is None else y for y in lo], np.float64)
      hi = np.asarray([np.nan if y is None else y for y in hi], np.float64)
      ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], marker="o", capsize=3, label=label)
    ax.set_xscale(panel.get("xscale", "log"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if yscale == "log":
      ax.set_yscale("log")
    ax.set_xlabel(field)
    ax.set_ylabel(ylabel)
    ax.legend()
  return save(fig, path)


def embedding_scatter(path, points, groups: dict, title=""):
  """A 2D embedding (e.g. t-SNE) with one colour per group: ``groups[name] = indices``."""
  fig, ax = plt.subplots(figsize=(6, 5.5))
  colors = ["#1f77b4", "#2ca02c", HALLU_COLOR, "#ff7f0e", "#7f7f7f"]
  for (name, idx), c in zip(groups.items(), colors):
    idx = np.asarray(idx, int)
    ax.scatter(points[idx, 0], points[idx, 1], s=8, c=c, alpha=0.75, label=f"{name} ({len(idx)})")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=9)
  ax.legend(loc="best", fontsize=8)
  return save(fig, path)


def cell_scatter_grid(path, panels: dict, rows, cols, train=None):
  """One 2D scatter per ``(row, col)`` cell: ``panels[(row, col)] = (samples, is_hallucination)``
  (hallucinations in red, the rate in the title); empty cells are left blank."""
  fig, axes = plt.subplots(
    len(rows),
    len(cols),
    figsize=(2.6 * len(cols), 2.6 * len(rows)),
    squeeze=False,
    sharex=True,
    sharey=True,
  )
  for i, r in enumerate(rows):
    for j, c in enumerate(cols):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(r, fontsize=8)
      if i == 0:
        ax.set_title(f"T' = {c}", fontsize=9)
      if (r, c) not in panels:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="gray")
        continue
      x, h = panels[(r, c)]
      h = np.asarray(h, bool)
      if train is not None:
        ax.scatter(train[:, 0], train[:, 1], s=0.2, c="lightgray")
      ax.scatter(x[~h, 0], x[~h, 1], s=0.3, c=OK_COLOR)
      ax.scatter(x[h, 0], x[h, 1], s=0.8, c=HALLU_COLOR)
      ax.text(
        0.02,
        0.02,
        f"{h.mean():.1%}" if len(h) else "-",
        transform=ax.transAxes,
        fontsize=8,
        color=HALLU_COLOR,
      )
  return save(fig, path)


def image_grid(path, images, labels=None, colors=None, ncols=16, title="", cmap="gray"):
  """A grid of ``[N, H, W]`` or ``[N, H, W, 1]`` images in [-1, 1] or [0, 255],
  with an optional coloured frame and caption per image.

  Drawn as one mosaic on one axes (a frame of colour around each tile, captions as text
  above the tiles): one axes per image made a 64-image grid take ~0.9 s to draw."""
  images = np.asarray(images)
  if images.ndim == 4:
    images = images[..., 0]
  n = len(images)
  ncols = min(ncols, max(n, 1))
  nrows = max(1, -(-n // ncols))
  h, w = images.shape[1:3] if n else (1, 1)
  lo, hi = (-1.0, 1.0) if images.dtype.kind == "f" else (0.0, 255.0)
  rgb = matplotlib.colormaps[cmap](np.clip((images.astype(np.float32) - lo) / (hi - lo), 0, 1))
  frame = max(1, round(max(h, w) / 16))  # frame width, pixels
  gap = max(1, round(max(h, w) / 14))  # white space between tiles
  cap = round(h * 0.28) if labels is not None else 0  # room for a caption above each tile
  th, tw = h + 2 * frame + cap + gap, w + 2 * frame + gap
  mosaic = np.ones((nrows * th, ncols * tw, 3), np.float32)
  for i in range(n):
    r, c = divmod(i, ncols)
    y, x = r * th + cap, c * tw
    if colors is not None:
      mosaic[y : y + h + 2 * frame, x : x + w + 2 * frame] = matplotlib.colors.to_rgb(colors[i])
    mosaic[y + frame : y + frame + h, x + frame : x + frame + w] = rgb[i, ..., :3]
  fig = plt.figure(figsize=(ncols * 1.0, nrows * 1.15 + (0.4 if title else 0)))
  top = 1.0 - (0.4 / (nrows * 1.15 + 0.4) if title else 0.0)
  ax = fig.add_axes((0.0, 0.0, 1.0, top))
  ax.imshow(mosaic, interpolation="nearest", aspect="auto")
  ax.set_axis_off()
  if labels is not None:
    for i in range(n):
      r, c = divmod(i, ncols)
      ax.text(
        c * tw + (w + 2 * frame) / 2,
        r * th + cap - 0.5,
        labels[i],
        ha="center",
        va="bottom",
        fontsize=6,
        color=colors[i] if colors is not None else "k",
      )
  if title:
    fig.suptitle(title, y=1.0 - 0.1 / (nrows * 1.15 + 0.4))
  return save(fig, path, tight=False)


def generation_curves(path, records, filters, keys):
  """One panel per measurement against generation, one line per filter."""
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
  for ax, key in zip(np.atleast_1d(axes), keys):
    for filt in filters:
      pts = sorted(
        (r["generation"], r[key]) for r in records if r["filter"] == filt and r.get(key) is not None
      )
      if pts:
        ax.plot(*zip(*pts), marker="o", label=filt)
    ax.set_xlabel("generation")
    ax.set_ylabel(key)
    ax.legend()
  return save(fig, path)


def scaling_curves(path, lines: dict):
  """Detection against training compute, one line per model: ``lines[label]`` is a list of
  rows with ``train_flops`` (or ``step``), ``scores.paper`` / ``scores.best`` AUROC and
  removed-at-keep, and ``multiple_in_column`` (drawn dotted on a second axis)."""
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  twin = axes[1].twinx()
  use_flops = all(r.get("train_flops") for rows in lines.values() for r in rows)
  for i, (label, rows) in enumerate(lines.items()):
    c = colors[i % len(colors)]
    rows = sorted(rows, key=lambda r: r["step"])
    xs = [r["train_flops"] if use_flops else r["step"] for r in rows]

    def col(role, key):
      return [np.nan if r["scores"][role][key] is None else r["scores"][role][key] for r in rows]

    axes[0].plot(xs, col("paper", "auroc"), "-o", color=c, label=f"{label}: paper's score")
    axes[0].plot(
      xs,
      col("paper", "multiple_in_column_auroc"),
      "--s",
      color=c,
      alpha=0.7,
      label=f"{label}: paper's, two-in-column vs in support",
    )
    rem = [r["scores"]["paper"]["removed_at_keep"] for r in rows]
    ys = np.array([np.nan if d["rate"] is None else d["rate"] for d in rem])
    lo = np.array([np.nan if d["ci95"][0] is None else d["ci95"][0] for d in rem])
    hi = np.array([np.nan if d["ci95"][1] is None else d["ci95"][1] for d in rem])
    axes[1].errorbar(
      xs,
      ys,
      yerr=[ys - lo, hi - ys],
      fmt="-o",
      color=c,
      capsize=3,
      label=f"{label}: removed at 96% kept",
    )
    twin.plot(
      xs,
      [r["multiple_in_column"]["rate"] for r in rows],
      ":^",
      color=c,
      label=f"{label}: two-in-column rate",
    )
    # Detection against how far training has gone: the same AUROC against the rate.
    au = np.array(col("paper", "multiple_in_column_auroc"), float)
    ci = [r["scores"]["paper"].get("multiple_in_column_auroc_ci95") or (None, None) for r in rows]
    au_lo = np.array([np.nan if a is None else a for a, _ in ci], float)
    au_hi = np.array([np.nan if b is None else b for _, b in ci], float)
    axes[2].errorbar(
      [r["multiple_in_column"]["rate"] for r in rows],
      au,
      yerr=[au - au_lo, au_hi - au],
      fmt="-s",
      color=c,
      capsize=3,
      label=label,
    )
  xlabel = "training FLOPs" if use_flops else "training steps"
  for ax in axes[:2]:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
  axes[2].axhline(0.5, color="grey", lw=0.8)
  axes[2].set_xlabel("two shapes in one column (share of samples)")
  axes[2].set_ylabel("paper's score AUROC, two-in-column vs in support")
  axes[2].legend(fontsize=7)
  axes[0].axhline(0.5, color="grey", lw=0.8)
  axes[0].set_ylabel("AUROC (held-out half)")
  axes[1].axhline(0.95, color="grey", lw=0.8, ls="--")
  axes[1].set_ylabel("hallucinations removed at 96% in-support kept")
  twin.set_ylabel("two shapes in one column (dotted)")
  axes[0].legend(fontsize=7)
  h1, l1 = axes[1].get_legend_handles_labels()
  h2, l2 = twin.get_legend_handles_labels()
  axes[1].legend(h1 + h2, l1 + l2, fontsize=7)
  return save(fig, path)


def commit_histograms(path, groups: dict, T: int, xlabel: str):
  """Histograms of commit timesteps (0..T) per group, x axis reversed (time runs right to left
  in the reverse process, so the last steps sit at the right)."""
  fig, ax = plt.subplots(figsize=(7, 4))
  bins = np.linspace(0, T, min(25, T) + 1)
  for name, values in groups.items():
    v = np.asarray(values, np.float64)
    if len(v):
      ax.hist(
        v, bins, alpha=0.5, density=True, label=f"{name} (n={len(v)}, median t={np.median(v):.0f})"
      )
  ax.set_xlim(T, 0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  ax.legend(fontsize=8)
  return save(fig, path)


def column_traces(path, timesteps, examples: dict, column_names):
  """Per-column RMS distance of x0 to the final image along the reverse process, one panel
  per example (``examples[label] = [K, C]``)."""
  n = max(1, len(examples))
  cols = min(3, n)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  for ax, (label, d) in zip(axes.flat, examples.items()):
    for c, name in enumerate(column_names):
      ax.plot(timesteps, np.asarray(d)[:, c], label=name)
    ax.set_xlim(max(timesteps), 0)
    ax.set_title(label, fontsize=9)
    ax.set_xlabel("timestep")
    ax.set_ylabel("RMS distance to final")
  for ax in list(axes.flat)[len(examples) :]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  return save(fig, path)


def hallbench_testbed(path, roc_panels: dict, mitigations, title="", k_curve=None):
  """One testbed of the detector and mitigation benchmark: a panel of ROC curves per sample
  set (``roc_panels[panel_title][detector] = (fpr, tpr, auroc)``), the hallucination rate
  against the cost of each mitigation (``mitigations``: ``(label, network evaluations per
  sample, rate, ci_low, ci_high)``; log-x; methods of equal cost are spread a little along x),
  and with ``k_curve`` (``{"k": [...], "rate": [...], "lo": [...], "hi": [...], "ddpm":
  rate}``) the rate of DDIM against its number of ancestral steps at the end."""
  n = len(roc_panels) + 1 + (k_curve is not None)
  fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.8), squeeze=False)
  axes = axes[0]
  for ax, (ptitle, curves) in zip(axes, roc_panels.items()):
    for label, (fpr, tpr, auc) in curves.items():
      ax.plot(fpr, tpr, lw=1.3, label=f"{label}: {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls=":")
    ax.set_xlabel("in-support samples removed (FPR)")
    ax.set_ylabel("hallucinations removed (TPR)")
    ax.set_title(ptitle, fontsize=10)
    if curves:  # a set with no hallucination (or none in support) has no curve
      ax.legend(loc="lower right", fontsize=7)
  ax = axes[len(roc_panels)]
  seen = {}
  for label, cost, rate, lo, hi in mitigations:
    if rate is None:
      continue
    lo = rate if lo is None else lo
    hi = rate if hi is None else hi
    j = seen.get(round(cost, 6), 0)
    seen[round(cost, 6)] = j + 1
    ax.errorbar(
      [cost * 1.012**j], [rate], yerr=[[rate - lo], [hi - rate]], marker="o", capsize=3, label=label
    )
  ax.set_xscale("log")
  ax.set_xlabel("network evaluations per delivered sample")
  ax.set_ylabel("hallucination rate (Wilson 95%)")
  ax.set_title("mitigations", fontsize=10)
  ax.legend(fontsize=7, loc="best")
  if k_curve is not None:
    ax = axes[-1]
    k = np.asarray(k_curve["k"], np.float64)
    r = np.asarray(k_curve["rate"], np.float64)
    ax.errorbar(
      k + 1,
      r,
      yerr=[r - np.asarray(k_curve["lo"]), np.asarray(k_curve["hi"]) - r],
      marker="o",
      capsize=3,
      label="DDIM, last k steps ancestral",
    )
    if k_curve.get("ddpm") is not None:
      ax.axhline(k_curve["ddpm"], color="k", ls="--", lw=1, label="DDPM (same samples)")
    ax.set_xscale("log")
    ax.set_xlabel("k + 1 (k: ancestral steps at the end of DDIM)")
    ax.set_ylabel("hallucination rate (Wilson 95%)")
    ax.set_title("DDIM with k stochastic steps", fontsize=10)
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return save(fig, path)


def detection_figures(hist_path, roc_path, scores, groups: dict, is_hallucination, det: dict):
  """The score's histogram per group with the threshold, and (when both classes occur) its
  ROC curve with the operating point; ``det`` is ``hallucination.detection_metrics``'s."""
  from mode_interp import hallucination

  variance_hist(hist_path, scores, groups, det["threshold"])
  if det["auroc"] is not None:
    fpr, tpr = hallucination.roc_curve(scores, is_hallucination)
    roc(
      roc_path,
      fpr,
      tpr,
      det["auroc"],
      point=(1 - det["in_support_retained"], det["hallucinations_removed"]),
    )
