"""Peak memory of a benchmark case (``peak_mem_mb``, ``mem_source``, ``rss_start_mb``) and
XLA's scratch memory of a compiled function (``xla_temp_mb``); the sources are described in
:mod:`experiments.bench`."""

import resource

import jax

_MB = 1024.0 * 1024.0


def _proc_status_kb(field: str):
  """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


class MemProbe:
  """Peak memory of one case; see :mod:`experiments.bench` for the sources."""

  def __init__(self):
    dev = jax.devices()[0]
    stats = None
    if dev.platform != "cpu":
      try:
        stats = dev.memory_stats()
      except Exception:  # pylint: disable=broad-except  # backends without stats
        stats = None
    self.device = dev if stats and "peak_bytes_in_use" in stats else None
    self.rss_start_mb = None
    self.case_reset = False

  def start(self):
    if self.device is not None:
      return
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one
      self.case_reset = _proc_status_kb("VmHWM") is not None
    except OSError:
      self.case_reset = False
    rss = _proc_status_kb("VmRSS")
    self.rss_start_mb = None if rss is None else rss / 1024.0

  def peak(self):
    """``(peak_mb, mem_source)``."""
    if self.device is not None:
      return self.device.memory_stats()["peak_bytes_in_use"] / _MB, "device_peak_bytes_in_use"
    if self.case_reset:
      return _proc_status_kb("VmHWM") / 1024.0, "process_peak_rss_case"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_peak_rss_lifetime"


def xla_temp_mb(compiled):
  """XLA's scratch memory for a compiled function, in MiB (None if not reported)."""
  try:
    ma = compiled.memory_analysis()
    return None if ma is None else ma.temp_size_in_bytes / _MB
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None
