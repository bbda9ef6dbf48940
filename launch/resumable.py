r"""Runs one run's command in a cloud job and makes "stopped before the end" a failure the scheduler retries.

    python -m launch.resumable -- python -m batch_rl_dr3.train --base_dir=gs://B/dr3/table1/... [flags]

A preempted or spot TPU host (and GKE when it drains a node) sends SIGTERM; the entry point may then save a
checkpoint and exit 0. To Vertex AI and to a Kubernetes Job an exit code 0 means "done", so the run would never
finish. This wrapper forwards SIGTERM / SIGINT to the command, and when the command exits 0 checks for the
run's `DONE` file (`<base_dir>/DONE`, written by the runner at the very end; through tf.io.gfile, so gs://
works): present -> exit 0; absent -> exit EXIT_RESUME (75, EX_TEMPFAIL), which the GKE Job's podFailurePolicy
ignores (a new pod starts, not counted as a failure) and which Vertex AI counts as a failed attempt. The next
attempt runs the same command with the same --base_dir and resumes from the run's checkpoint. Non-zero exit
codes of the command are passed through (the entry point's 1 = bad input and 2 = diverged fail the job at
once: retrying cannot help).

A job restarted after its predecessor died without releasing the run's lock (a machine lost without notice)
would be refused by the lock for up to `run_lock.STALE_SECONDS` (the holder's heartbeat is still fresh), and
that refusal is exit 1. So before starting, the wrapper waits until such a lock has gone stale, at most
STALE_SECONDS + 1 s; the runner then takes it over. A lock released normally (SIGTERM, end of run) costs no
wait; a live duplicate job is still refused after the wait.
"""
import os
import signal
import subprocess
import sys
import time
from typing import Callable, List, Optional, Sequence

EXIT_RESUME = 75
# The entry point's exit codes that retrying cannot change (batch_rl_dr3/train.py): bad input, diverged.
EXIT_FINAL = (1, 2)


def base_dir_of(command: Sequence[str]) -> str:
  for arg in command:
    if arg.startswith("--base_dir="):
      return arg.split("=", 1)[1]
  raise ValueError(f"launch.resumable: the command has no --base_dir=...: {' '.join(command)}")


def done_exists(base_dir: str) -> bool:
  path = base_dir.rstrip("/") + "/DONE"
  if "://" in base_dir and not base_dir.startswith("file://"):
    import tensorflow as tf  # gs:// goes through tf.io.gfile, as in the runner
    return tf.io.gfile.exists(path)
  return os.path.exists(path.removeprefix("file://"))


def wait_for_stale_lock(base_dir: str, clock: Callable[[], float] = time.time,
                        sleep: Callable[[float], None] = time.sleep, out=sys.stderr) -> float:
  """Sleeps until the run's lock, if any, is older than run_lock.STALE_SECONDS; returns the seconds slept."""
  from batch_rl_dr3 import run_lock
  holder = run_lock.RunLock(base_dir).holder()
  if holder is None:
    return 0.0
  wait = run_lock.STALE_SECONDS + 1.0 - (clock() - float(holder.get("heartbeat", 0)))
  if wait <= 0:
    return 0.0
  print(f"launch.resumable: {base_dir} is locked by {holder.get('host')} (pid {holder.get('pid')}), probably the "
        f"previous attempt of this job; waiting {wait:.0f} s for its lock to go stale", file=out, flush=True)
  sleep(wait)
  return wait


def run(command: List[str], done: Callable[[str], bool] = done_exists, out=sys.stderr) -> int:
  """Runs `command`, forwarding SIGTERM / SIGINT; the exit code as described in the module docstring."""
  base_dir = base_dir_of(command)
  wait_for_stale_lock(base_dir, out=out)
  child = subprocess.Popen(command)
  forward = lambda signum, frame: child.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    code = child.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if code != 0:
    return code if code > 0 else 128 - code  # killed by signal N: the shell's 128 + N
  if done(base_dir):
    return 0
  print(f"launch.resumable: {base_dir} has no DONE yet (stopped before its last iteration); exit {EXIT_RESUME} so "
        "the job is started again and resumes from its checkpoint", file=out, flush=True)
  return EXIT_RESUME


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["--"]:
    argv = argv[1:]
  if not argv:
    print("usage: python -m launch.resumable -- COMMAND --base_dir=DIR ...", file=sys.stderr)
    return 2
  try:
    return run(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
