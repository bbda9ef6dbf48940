"""The one progress display of the project: dataset loading, training, evaluation and the report's bootstrap.

`Progress(what, total, unit)` shows `done/total`, the rate and the ETA:
  * on a terminal (stderr is a TTY): a tqdm bar, redrawn in place;
  * otherwise (a log file, a launcher's pipe, a batch job): one plain log line at most every `every_seconds`
    and one at the end, never a carriage return, e.g.
    `train: 12,000/62,500 steps (19%), 95.2 steps/s, ETA 8m50s | losses: td_loss=0.031 | diagnostics: srank=410`.
"""
import sys
import time
from typing import Callable, Optional

from absl import logging
from tqdm import tqdm

LOG_EVERY_SECONDS = 30.0


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _on_terminal() -> bool:
  try:
    return sys.stderr.isatty()
  except (AttributeError, ValueError):
    return False


class Progress:
  """Progress of one phase. `update(n, detail)` after work is done; `close()` (or a `with` block) at the end.

  Args:
    what: the phase, e.g. 'load Pong' or 'train'.
    total: units of work in the phase (None when unknown: no percentage or ETA).
    unit: the unit's name, e.g. 'rows', 'steps', 'replications'.
    initial: units already done before this process (a resumed run): the rate counts only the new ones.
    every_seconds: the least time between two log lines when not on a terminal.
    enabled: False shows nothing.
    terminal: force the bar (True) or the log lines (False); default: whether stderr is a terminal.
    log: where log lines go (default absl logging.info).
  """

  def __init__(self, what: str, total: Optional[int], unit: str, *, initial: int = 0,
               every_seconds: float = LOG_EVERY_SECONDS, enabled: bool = True, terminal: Optional[bool] = None,
               log: Optional[Callable[[str], None]] = None):
    self.what, self.total, self.unit = what, total, unit
    self.done = initial
    self._initial = initial
    self._every = every_seconds
    self._enabled = enabled
    self._log = log or logging.info
    self._start = time.time()
    self._last_line = self._start
    self._detail = ""
    self._closed = False
    self._logged_done = initial
    use_bar = _on_terminal() if terminal is None else terminal
    self._bar = (tqdm(total=total, initial=initial, desc=what, unit=f" {unit}", dynamic_ncols=True,
                      leave=True, file=sys.stderr) if enabled and use_bar else None)

  def rate(self) -> float:
    """Units per second since this Progress started (units done by an earlier process excluded)."""
    return (self.done - self._initial) / max(time.time() - self._start, 1e-9)

  def eta_seconds(self) -> Optional[float]:
    rate = self.rate()
    if self.total is None or rate <= 0:
      return None
    return max(self.total - self.done, 0) / rate

  def line(self) -> str:
    """The text of a log line for the current state."""
    if self.total:
      text = f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
    else:
      text = f"{self.what}: {self.done:,} {self.unit}"
    text += f", {self.rate():,.1f} {self.unit}/s"
    eta = self.eta_seconds()
    if eta is not None and self.done < (self.total or 0):
      text += f", ETA {format_duration(eta)}"
    elif self.done and self.total and self.done >= self.total:
      text += f", took {format_duration(time.time() - self._start)}"
    return text + (f" | {self._detail}" if self._detail else "")

  def update(self, n: int = 1, detail: Optional[str] = None, force_line: bool = False) -> None:
    """`n` more units done; `detail` (e.g. the latest losses) replaces the text shown after the numbers."""
    if self._closed:
      return
    self.done += n
    if detail is not None:
      self._detail = detail
    if not self._enabled:
      return
    if self._bar is not None:
      if detail is not None:
        self._bar.set_postfix_str(detail, refresh=False)
      self._bar.update(n)
      return
    now = time.time()
    finished = self.total is not None and self.done >= self.total
    if force_line or finished or now - self._last_line >= self._every:
      self._emit(now)

  def _emit(self, now: float) -> None:
    self._last_line = now
    self._logged_done = self.done
    self._log(self.line())

  def close(self) -> None:
    """Ends the phase: closes the bar, or logs the final state when it was not the last line logged."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
    elif self._enabled and self.done != self._logged_done:
      self._emit(time.time())

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
