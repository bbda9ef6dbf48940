"""One process per run folder: a `LOCK` file in `--base_dir` naming its holder (host, pid) and a heartbeat.

A second process on the same folder stops with one line naming the folder and the holder. A lock is stale, and
is taken over with a warning, when its holder is gone:
  * same host: the holder's pid is no longer alive (killed with -9, crashed, machine rebooted);
  * any host: its heartbeat (rewritten every `HEARTBEAT_SECONDS` by the holder) is older than `STALE_SECONDS`
    (a lost or preempted machine). A lock of another host whose heartbeat is fresh is respected.

Local disks: the lock is created atomically (`O_CREAT | O_EXCL`), so of two processes starting together
exactly one wins. Remote folders (gs://, any tf.io.gfile URL): object stores offer no create-if-absent through
tf.io.gfile, so the lock is advisory there: it is written, read back after `REMOTE_SETTLE_SECONDS`, and the
process whose record survived holds it. Two processes started within that window on different machines can
still both run; everything started later is refused as on a local disk.
"""
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Optional

from absl import logging

from batch_rl_dr3.errors import ConfigError

LOCK_FILE = "LOCK"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0
REMOTE_SETTLE_SECONDS = 2.0


def _is_remote(path: str) -> bool:
  return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
  return path[len("file://"):] if path.startswith("file://") else path


def pid_alive(pid: int) -> bool:
  """True when a process with this pid exists on this machine (ours or another user's)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _record(started: float) -> Dict[str, Any]:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "heartbeat": time.time()}


def _stale_reason(holder: Dict[str, Any], now: float) -> Optional[str]:
  """Why the holder is gone (a sentence), or None when it may still be running."""
  age = now - float(holder.get("heartbeat", 0))
  if holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1))):
    return f"process {holder.get('pid')} on this host is no longer running"
  if age > STALE_SECONDS:
    return f"its last heartbeat is {age:.0f} s old (> {STALE_SECONDS:.0f} s)"
  return None


class RunLock:
  """Context manager holding `<base_dir>/LOCK` while a run writes into the folder."""

  def __init__(self, base_dir: str):
    self.base_dir = base_dir
    self.path = os.path.join(base_dir, LOCK_FILE)
    self._started = time.time()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # -- file access (local: os, atomic create; remote: tf.io.gfile) --------------------------------------------

  def _read(self) -> Optional[Dict[str, Any]]:
    try:
      if _is_remote(self.path):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        if not tf.io.gfile.exists(self.path):
          return None
        with tf.io.gfile.GFile(self.path) as f:
          text = f.read()
      else:
        with open(_local(self.path)) as f:
          text = f.read()
    except FileNotFoundError:
      return None
    try:
      return json.loads(text)
    except ValueError:
      return {"host": "?", "pid": -1, "heartbeat": 0}  # half-written by a process killed while writing it

  def _write(self, record: Dict[str, Any]) -> None:
    text = json.dumps(record) + "\n"
    if _is_remote(self.path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(self.path, "w") as f:
        f.write(text)
    else:
      tmp = f"{_local(self.path)}.tmp-{os.getpid()}"
      with open(tmp, "w") as f:
        f.write(text)
      os.replace(tmp, _local(self.path))

  def _create_exclusive(self, record: Dict[str, Any]) -> bool:
    """Creates the lock when absent; False when another process has one."""
    if _is_remote(self.path):
      if self._read() is not None:
        return False
      self._write(record)
      time.sleep(REMOTE_SETTLE_SECONDS)
      current = self._read() or {}
      return (current.get("host"), current.get("pid")) == (record["host"], record["pid"])
    try:
      fd = os.open(_local(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps(record) + "\n")
    return True

  def _remove(self) -> None:
    if _is_remote(self.path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      if tf.io.gfile.exists(self.path):
        tf.io.gfile.remove(self.path)
    else:
      try:
        os.remove(_local(self.path))
      except FileNotFoundError:
        pass

  # -- protocol ---------------------------------------------------------------------------------------------

  def holder(self) -> Optional[Dict[str, Any]]:
    """The lock's current record ({'host', 'pid', 'started', 'heartbeat'}), or None when the folder is free."""
    return self._read()

  def acquire(self) -> None:
    """Takes the lock; ConfigError (one line: folder, holder) when a live process holds it."""
    for _ in range(3):  # a stale lock removed by us may be retaken by a third process in between
      if self._create_exclusive(_record(self._started)):
        break
      holder = self._read()
      if holder is None:
        continue  # released between our attempt and our read
      reason = _stale_reason(holder, time.time())
      if reason is None:
        age = time.time() - float(holder.get("heartbeat", 0))
        raise ConfigError(
            f"--base_dir={self.base_dir} is in use by process {holder.get('pid')} on host {holder.get('host')} "
            f"(heartbeat {age:.0f} s ago); wait for it to finish or stop it, or use another --base_dir "
            f"(a lock whose holder died is taken over by itself: at once on the same host, after "
            f"{STALE_SECONDS:.0f} s without heartbeat from another host)")
      logging.warning("Taking over the lock of %s: it was held by process %s on host %s, and %s.", self.base_dir,
                      holder.get("pid"), holder.get("host"), reason)
      self._remove()
    else:
      raise ConfigError(f"--base_dir={self.base_dir}: could not take its lock {self.path} (other processes keep "
                        f"taking it); use another --base_dir")
    if _is_remote(self.path):
      logging.info("Lock %s is advisory on remote storage: runs started on two machines within %.0f s of each "
                   "other are not told apart.", self.path, REMOTE_SETTLE_SECONDS)
    self._stop.clear()
    self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
    self._thread.start()

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._write(_record(self._started))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Could not refresh the lock %s: %s", self.path, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    holder = self._read()
    if holder and (holder.get("host"), holder.get("pid")) == (socket.gethostname(), os.getpid()):
      self._remove()

  def __enter__(self) -> "RunLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
