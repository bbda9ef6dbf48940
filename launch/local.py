r"""Runs a sweep on this machine: one subprocess per run, at most --max_parallel at a time, resumable.

    python -m launch.local --sweep launch/sweeps/smoke.toml --root runs/ --data_dir quickstart_out/data \
        [--max_parallel 2] [--only game=Pong,Breakout] [--dry_run]

Each run's command gets `--base_dir=<root>/<run name>`; its output goes to `<base_dir>/launch.log` (appended
across attempts), or under --log_dir when root is remote (gs://, e.g. from a TPU VM). Launching again skips finished runs (`DONE` in base_dir) and reruns the others, which resume
from their checkpoints. A summary (done / running / failed / pending) is printed whenever a run ends, and at the
end each failure's last log lines. Exit code: 0 when every selected run is done, 1 if any failed, 2 on bad
input, 130 when interrupted. Ctrl-C (or SIGTERM) stops the children: SIGTERM to each one's process group, then
SIGKILL after a grace period; their checkpoints stay, so the next launch resumes them.

The launcher is generic over the command: `--entry_point` overrides the sweep's module, and `launch_sweep`
takes any `command_for(run) -> argv` (tests use small Python commands).
"""
import argparse
import collections
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from launch import estimate as estimate_lib
from launch import sweep as sweep_lib
from batch_rl_dr3.errors import ConfigError

LOG_FILE = "launch.log"
TAIL_LINES = 15
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


@dataclasses.dataclass
class Outcome:
  """How each run of one launch ended: run name -> 'done' | 'skipped' | 'failed' | 'stopped' | 'pending'."""
  status: Dict[str, str]
  exit_codes: Dict[str, int]
  log_paths: Dict[str, str]

  def count(self, status: str) -> int:
    return sum(1 for s in self.status.values() if s == status)

  @property
  def failed(self) -> List[str]:
    return [name for name, s in self.status.items() if s == "failed"]


def tail(path: str, lines: int = TAIL_LINES) -> List[str]:
  """The last `lines` lines of a text file (reads only its end)."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(0, size - 64 * 1024))
      text = f.read().decode("utf-8", errors="replace")
  except FileNotFoundError:
    return []
  return text.splitlines()[-lines:]


def _stop(processes: Dict[str, subprocess.Popen], grace_seconds: float) -> None:
  """SIGTERM each child's process group, then SIGKILL what is still alive after the grace period."""
  for proc in processes.values():
    if proc.poll() is None:
      try:
        os.killpg(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
  deadline = time.monotonic() + grace_seconds
  for proc in processes.values():
    try:
      proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      proc.wait()


def launch_sweep(runs: Sequence[sweep_lib.Run], root: str, command_for: Callable[[sweep_lib.Run], List[str]], *,
                 max_parallel: int = 1, out: TextIO = sys.stdout, poll_seconds: float = 0.2,
                 grace_seconds: float = 30.0, env: Optional[Dict[str, str]] = None,
                 log_root: Optional[str] = None) -> Outcome:
  """Runs every unfinished run of `runs` (skipping those with DONE), at most `max_parallel` at a time.

  A run counts as done when its command exits 0 (the entry point writes DONE at its end). Runs start in
  sweep order. KeyboardInterrupt stops the children (see module docstring) and is re-raised.
  Logs go to `<log_root>/<run name>/launch.log`; log_root defaults to root, and must be local (root may be
  gs://, e.g. on a TPU VM).
  """
  log_root = log_root or root
  if sweep_lib.is_remote(log_root):
    raise ConfigError(f"--log_dir={log_root}: logs are written locally; give a local folder")
  if max_parallel < 1:
    raise ConfigError(f"--max_parallel={max_parallel}; expected >= 1")
  status = collections.OrderedDict((run.name, "pending") for run in runs)
  exit_codes: Dict[str, int] = {}
  log_paths = {run.name: os.path.join(run.base_dir(log_root), LOG_FILE) for run in runs}
  queue = collections.deque()
  for run in runs:
    if sweep_lib.run_status(run.base_dir(root)) == "done":
      status[run.name] = "skipped"
    else:
      queue.append(run)
  skipped = len(runs) - len(queue)
  print(f"{len(runs)} runs: {skipped} already done, {len(queue)} to run (max {max_parallel} at a time)",
        file=out, flush=True)
  running: Dict[str, subprocess.Popen] = {}
  log_files: Dict[str, TextIO] = {}

  def summary(event: str) -> None:
    counts = collections.Counter(status.values())
    print(f"[{time.strftime('%H:%M:%S')}] {event} | done {counts['done'] + counts['skipped']}/{len(runs)}, "
          f"running {len(running)}, failed {counts['failed']}, pending {counts['pending']}", file=out, flush=True)

  try:
    while queue or running:
      while queue and len(running) < max_parallel:
        run = queue.popleft()
        os.makedirs(os.path.dirname(log_paths[run.name]), exist_ok=True)
        if not sweep_lib.is_remote(root):
          os.makedirs(run.base_dir(root), exist_ok=True)
        log = open(log_paths[run.name], "a")
        argv = command_for(run)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} launch: {shlex.join(argv)}\n")
        log.flush()
        # Own process group: Ctrl-C in the terminal reaches only us, and we stop each child's whole tree.
        running[run.name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, env=env)
        log_files[run.name] = log
        status[run.name] = "running"
        summary(f"started {run.name}")
      time.sleep(poll_seconds)
      for name, proc in list(running.items()):
        code = proc.poll()
        if code is None:
          continue
        del running[name]
        log_files.pop(name).close()
        exit_codes[name] = code
        status[name] = "done" if code == 0 else "failed"
        summary(f"{'finished' if code == 0 else f'FAILED (exit {code})'} {name}")
  except BaseException:
    print(f"Stopping {len(running)} running job(s)...", file=out, flush=True)
    _stop(running, grace_seconds)
    for name in running:
      status[name] = "stopped"
    for log in log_files.values():
      log.close()
    raise
  return Outcome(dict(status), exit_codes, log_paths)


def report_failures(outcome: Outcome, out: TextIO = sys.stdout, lines: int = TAIL_LINES) -> None:
  for name in outcome.failed:
    print(f"\n--- FAILED {name} (exit {outcome.exit_codes[name]}), last lines of {outcome.log_paths[name]}:",
          file=out)
    for line in tail(outcome.log_paths[name], lines):
      print(f"    {line}", file=out)


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m launch.local", description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", required=True, help="A sweep file, or a name under launch/sweeps/ (smoke, table1...).")
  parser.add_argument("--root", default=None, help="Folder under which each run gets <root>/<run name> "
                      "(required unless --estimate).")
  parser.add_argument("--log_dir", default=None, help="Local folder for the runs' launch.log files (default: "
                      "--root; required when --root is gs://).")
  parser.add_argument("--data_dir", default=None, help="Dataset root, the sweep's ${data_dir} "
                      "(default: the sweep's default_data_dir).")
  parser.add_argument("--max_parallel", type=int, default=1, help="Runs at a time.")
  parser.add_argument("--only", action="append", default=[], metavar="AXIS=LABEL[,LABEL]",
                      help="Keep the runs with these labels (repeatable), e.g. --only game=Pong --only seed=seed0.")
  parser.add_argument("--gin_files", action="append", default=[], help="Extra gin files for every run, after the "
                      "sweep's (repeatable), e.g. launch/gin/tpu.gin on a TPU VM.")
  parser.add_argument("--entry_point", default=None, help="Module to run instead of the sweep's entry_point.")
  parser.add_argument("--python", default=sys.executable, help="Python that runs the entry point.")
  parser.add_argument("--dry_run", action="store_true", help="Print each run's status and command; run nothing.")
  estimate_lib.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  try:
    sweep, runs, data_dir = sweep_lib.load_selected(args.sweep, args.only, args.data_dir)
    if args.estimate:
      print(estimate_lib.report_from_args(args, sweep, runs, data_dir))
      return 0
    if not args.root:
      raise ConfigError("--root is required (the folder under which each run gets <root>/<run name>)")
    root = args.root if sweep_lib.is_remote(args.root) else os.path.abspath(args.root)
    log_root = os.path.abspath(args.log_dir) if args.log_dir else root
    if sweep_lib.is_remote(log_root) and not args.dry_run:
      raise ConfigError(f"--root={args.root} is remote: pass --log_dir, a local folder for the runs' logs")

    def command_for(run):
      if args.entry_point:
        run = dataclasses.replace(run, entry_point=args.entry_point)
      if args.gin_files:
        run = dataclasses.replace(run, gin_files=run.gin_files + tuple(args.gin_files))
      return run.command(root, data_dir, python=args.python)

    commands = {run.name: command_for(run) for run in runs}  # bad input fails here, before anything starts
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  if args.dry_run:
    for run in runs:
      status = "remote" if sweep_lib.is_remote(root) else sweep_lib.run_status(run.base_dir(root))
      print(f"# {run.name} [{status}]")
      print(shlex.join(commands[run.name]))
    print(f"# {len(runs)} runs of sweep {sweep.name}")
    return 0
  # SIGTERM (e.g. from a batch scheduler) stops the children like Ctrl-C does.
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    outcome = launch_sweep(runs, root, lambda run: commands[run.name], max_parallel=args.max_parallel,
                           log_root=log_root)
  except KeyboardInterrupt:
    print("Interrupted: running jobs stopped; launch the same command again to resume.", file=sys.stderr)
    return EXIT_INTERRUPTED
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  report_failures(outcome)
  done = outcome.count("done") + outcome.count("skipped")
  print(f"\n{sweep.name}: {done}/{len(runs)} done ({outcome.count('skipped')} were already done), "
        f"{len(outcome.failed)} failed")
  return EXIT_FAILED if outcome.failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
