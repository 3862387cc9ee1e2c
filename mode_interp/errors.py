"""Errors that the entry point reports as one line, without a traceback."""


class ConfigError(ValueError):
  """A config field holds a value that is not allowed."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field


class DataError(RuntimeError):
  """A data file is missing or corrupt; the message says what to do."""


class WorkdirError(RuntimeError):
  """The workdir holds a run that this config cannot resume."""


class TrainingDivergedError(FloatingPointError):
  """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""


class Preempted(RuntimeError):
  """A SIGTERM or SIGINT stopped the run at a safe point, its work saved; a rerun resumes.

  Not a failure: the entry points log the message and exit with
  :func:`mode_interp.preemption.exit_status` (128 + the signal's number), so a scheduler can
  tell a preempted run, to retry, from a failed one.
  """
