"""The project's error types: one clear line naming the thing at fault and what was expected."""


class DataError(ValueError):
  """A dataset file or folder is missing, truncated, or not in the expected format."""


class ConfigError(ValueError):
  """A gin binding, flag, game name or other user setting is unknown or out of range."""


class TrainingDivergedError(RuntimeError):
  """A loss became NaN or inf; the last good checkpoint is kept."""


class RunPreempted(Exception):
  """The run stopped on SIGTERM after saving a checkpoint; rerunning the same command resumes it (exit 0)."""


def first_line(error: BaseException) -> str:
  """The message's first line: gin appends "In call to configurable ..." lines to errors raised in its calls,
  and TF errors carry stack context; a user needs the one line that names the culprit."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
