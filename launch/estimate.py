r"""What a sweep costs before it is launched: gradient steps, evaluation steps, and hours at measured rates.

    python -m launch.local --sweep table1 --root runs/ --estimate [--steps_per_second 2000]
        [--eval_steps_per_second 5000] [--benchmarks benchmarks/results.json]

(the same flags on launch/xm_gcp.py, launch/vertex.py and launch/gke.py). Each run's config is parsed with gin
exactly as the entry point parses it (its gin files, bindings and shortcut flags), and read for:

  gradient steps   run_experiment.num_iterations x run_experiment.gradient_steps_per_iteration
                   (x MultiSeedAtariExperiment.num_seeds for multi-seed runs: seed-steps, priced with
                   `multi_seed_step_cost`)
  evaluation       Atari: num_iterations x AtariExperiment.evaluation_steps agent steps;
                   continuous: num_iterations x ContinuousExperiment.eval_episodes episodes

Hours are device-hours (one run after the other on one device like the measuring one; divide by the runs
that run at once). Rates come from `benchmarks/results.json` (`benchmarks/run.py` writes it):

  train steps/s of an agent   `<agent>_step_vs_dopamine` (steps/s); with DR3 the DR3 step time
                              (`dr3_cost` for CQL-QR, `<agent>_dr3_cost` otherwise, ms/step);
                              continuous CQL-SAC + DR3: `cql_sac_dr3_vs_tfagents`
  whole run / bare step       `run_steps_vs_step` (ratio): logging, diagnostics and checkpoints, when measured
  evaluation agent steps/s    `eval_steps_per_second_vs_single_env` (the default evaluation's steps/s)

A figure that is missing leaves its hours unknown with one line saying which figure and which flag gives a
target instead; `--steps_per_second` / `--eval_steps_per_second` add hours at a rate the user states (e.g. a
TPU's). A run uses DR3 when one of its gin files is a `dr3*.gin` (atari/dr3.gin, atari/dr3_dopamine.gin,
continuous/dr3.gin).
"""
import dataclasses
import functools
import inspect
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from batch_rl_dr3 import REPO_ROOT
from batch_rl_dr3.errors import ConfigError
from launch import sweep as sweep_lib

DEFAULT_BENCHMARKS = os.path.join(REPO_ROOT, "benchmarks", "results.json")
EVAL_RATE_FIGURE = "eval_steps_per_second_vs_single_env"
MULTI_SEED_FIGURE = "multi_seed_step_cost"
RUN_OVERHEAD_FIGURE = "run_steps_vs_step"
CONTINUOUS_RATE_FIGURES = {"cql_sac+dr3": "cql_sac_dr3_vs_tfagents"}


@dataclasses.dataclass(frozen=True)
class Workload:
  """What one run computes, read from its parsed gin config."""
  domain: str             # 'atari' | 'continuous'
  agent: str              # e.g. 'cql_qr+dr3'
  gradient_steps: int
  eval_steps: int         # Atari evaluation agent steps (0 for continuous runs)
  eval_episodes: int      # continuous evaluation episodes (0 for Atari runs)
  seeds: int = 1          # seeds trained together in one compiled step (MultiSeedAtariExperiment.num_seeds)


@dataclasses.dataclass(frozen=True)
class Rate:
  per_second: float
  source: str             # the results.json figure, e.g. "dqn_step_vs_dopamine", or "--steps_per_second"


def train_rate_figure(agent: str) -> str:
  """The results.json figure holding an agent's train-step rate (see the module docstring)."""
  if agent in CONTINUOUS_RATE_FIGURES:
    return CONTINUOUS_RATE_FIGURES[agent]
  name, dr3 = agent.split("+dr3")[0], agent.endswith("+dr3")
  if dr3:
    return "dr3_cost" if name == "cql_qr" else f"{name}_dr3_cost"
  return f"{name}_step_vs_dopamine"


def load_figures(path: str) -> Dict[str, dict]:
  """results.json entries by name ({} when the file is missing); ConfigError naming the file if unreadable."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      entries = json.load(f)
    return {entry["name"]: entry for entry in entries}
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"--benchmarks={path}: expected benchmarks/run.py's list of {{name, value, unit}} ({e})")


def figure_rate(figures: Dict[str, dict], name: str, path: str) -> Optional[Rate]:
  """Steps per second from a figure in steps/s (any '... steps/s' unit) or ms/step; None when absent."""
  entry = figures.get(name)
  if entry is None:
    return None
  unit, value = str(entry.get("unit", "")), float(entry["value"])
  if unit == "ms/step":
    per_second = 1e3 / value
  elif unit.endswith("steps/s"):
    per_second = value
  else:
    raise ConfigError(f"--benchmarks={path}: figure {name} has unit {unit!r}; expected steps/s or ms/step")
  return Rate(per_second, name)


def _parameter(name: str, function):
  """A gin binding if bound (a macro `%X` or a call `@f()` evaluated as gin would), else the default in
  `function`'s signature."""
  import gin
  try:
    value = gin.query_parameter(name)
  except ValueError:
    return inspect.signature(function).parameters[name.rsplit(".", 1)[1]].default
  if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
    value = value.scoped_configurable_fn()
  return value


@functools.lru_cache(maxsize=None)
def _workload(gin_files: Tuple[str, ...], gin_bindings: Tuple[str, ...]) -> Workload:
  from batch_rl_dr3 import atari_experiment
  from batch_rl_dr3 import runner
  from batch_rl_dr3 import train
  from batch_rl_dr3.continuous import experiment as continuous_experiment
  import gin
  train.parse_gin(gin_files, gin_bindings)
  try:
    iterations = _parameter("run_experiment.num_iterations", runner.run_experiment)
    steps = iterations * _parameter("run_experiment.gradient_steps_per_iteration", runner.run_experiment)
    created = gin.query_parameter("run_experiment.create_experiment")
    dr3 = any(os.path.basename(path).startswith("dr3") for path in gin_files)
    if "Continuous" in getattr(created, "selector", getattr(created, "__name__", "")):
      cls = continuous_experiment.ContinuousExperiment
      agent = _parameter("ContinuousExperiment.agent_name", cls)
      episodes = iterations * _parameter("ContinuousExperiment.eval_episodes", cls)
      return Workload("continuous", agent + ("+dr3" if dr3 else ""), steps, 0, episodes)
    cls = atari_experiment.AtariExperiment
    agent = _parameter("AtariExperiment.agent_name", cls)
    eval_steps = iterations * _parameter("AtariExperiment.evaluation_steps", cls)
    seeds = 1
    if "MultiSeed" in getattr(created, "selector", getattr(created, "__name__", "")):
      from batch_rl_dr3 import multi_seed
      seeds = _parameter("MultiSeedAtariExperiment.num_seeds", multi_seed.MultiSeedAtariExperiment)
    return Workload("atari", agent + ("+dr3" if dr3 else ""), steps * seeds, eval_steps * seeds, 0, seeds)
  finally:
    gin.clear_config()


def workload(run: sweep_lib.Run, data_dir: Optional[str] = "/data") -> Workload:
  """The run's workload, its config parsed as the entry point parses it (shortcut flags included)."""
  from batch_rl_dr3 import train
  flags = dict(run.flags)
  fill = lambda text: text.replace(sweep_lib.DATA_DIR_PLACEHOLDER, data_dir or "/data")
  shortcut = train.flag_bindings(game=flags.get("game"), run=flags.get("run"), seed=flags.get("seed"))
  return _workload(tuple(run.gin_files), tuple(shortcut + [fill(b) for b in run.gin_bindings]))


@dataclasses.dataclass
class Group:
  """The runs of one agent: totals and the rates that price them."""
  agent: str
  runs: int = 0
  gradient_steps: int = 0
  eval_steps: int = 0
  eval_episodes: int = 0
  train_rate: Optional[Rate] = None
  seeds: int = 1

  def train_hours(self, rate: Optional[Rate], overhead: float = 1.0) -> Optional[float]:
    return None if rate is None else self.gradient_steps / (rate.per_second * overhead) / 3600.0


@dataclasses.dataclass
class Estimate:
  groups: List[Group]
  overhead: Optional[Rate]          # run_steps_vs_step as a ratio (per_second holds the ratio)
  eval_rate: Optional[Rate]
  target_rate: Optional[Rate]
  target_eval_rate: Optional[Rate]
  notes: List[str]

  @property
  def gradient_steps(self) -> int:
    return sum(g.gradient_steps for g in self.groups)

  @property
  def eval_steps(self) -> int:
    return sum(g.eval_steps for g in self.groups)

  @property
  def eval_episodes(self) -> int:
    return sum(g.eval_episodes for g in self.groups)

  def measured_train_hours(self) -> Optional[float]:
    factor = self.overhead.per_second if self.overhead else 1.0
    hours = [g.train_hours(g.train_rate, factor) for g in self.groups if g.gradient_steps]
    return None if any(h is None for h in hours) else sum(hours)

  def measured_eval_hours(self) -> Optional[float]:
    if self.eval_episodes:
      return None  # continuous evaluation: episodes, not timed (see the note)
    return _hours(self.eval_steps, self.eval_rate)

  def target_train_hours(self) -> Optional[float]:
    return _hours(self.gradient_steps, self.target_rate)

  def target_eval_hours(self) -> Optional[float]:
    if self.eval_episodes:
      return None
    return _hours(self.eval_steps, self.target_eval_rate)


def _hours(steps: int, rate: Optional[Rate]) -> Optional[float]:
  if not steps:
    return 0.0
  return None if rate is None else steps / rate.per_second / 3600.0


def estimate(runs: Sequence[sweep_lib.Run], *, data_dir: Optional[str] = None,
             benchmarks: str = DEFAULT_BENCHMARKS, steps_per_second: Optional[float] = None,
             eval_steps_per_second: Optional[float] = None) -> Estimate:
  for flag, value in (("--steps_per_second", steps_per_second), ("--eval_steps_per_second", eval_steps_per_second)):
    if value is not None and value <= 0:
      raise ConfigError(f"{flag}={value}; expected a positive rate")
  figures = load_figures(benchmarks)
  notes = [] if figures else [f"no benchmark figures: {benchmarks} is missing (run benchmarks/run.py)"]
  groups: Dict[str, Group] = {}
  for run in runs:
    work = workload(run, data_dir)
    key = work.agent if work.seeds == 1 else f"{work.agent} x{work.seeds}"
    group = groups.setdefault(key, Group(key, seeds=work.seeds))
    group.runs += 1
    group.gradient_steps += work.gradient_steps
    group.eval_steps += work.eval_steps
    group.eval_episodes += work.eval_episodes
  multi = figures.get(MULTI_SEED_FIGURE)
  for group in groups.values():
    figure = train_rate_figure(group.agent.split(" x")[0])
    group.train_rate = figure_rate(figures, figure, benchmarks)
    if group.seeds > 1 and group.train_rate is not None:
      # Seed-steps of the multi-seed step: one run's step time x the measured cost per seed-step.
      if multi is None:
        notes.append(f"no {MULTI_SEED_FIGURE} figure: {group.agent} seed-steps priced as separate steps")
      else:
        group.train_rate = Rate(group.train_rate.per_second / float(multi["ratio"]),
                                f"{group.train_rate.source} / {MULTI_SEED_FIGURE}")
    if group.train_rate is None and figures:
      notes.append(f"no train rate for {group.agent}: {os.path.basename(benchmarks)} has no figure {figure} "
                   "(its hours stay unknown; --steps_per_second gives a target)")
  overhead_entry = figures.get(RUN_OVERHEAD_FIGURE)
  overhead = None
  if overhead_entry is not None and overhead_entry.get("ratio"):
    overhead = Rate(float(overhead_entry["ratio"]), RUN_OVERHEAD_FIGURE)
  elif figures:
    notes.append(f"train hours are the bare train step's: {os.path.basename(benchmarks)} has no "
                 f"{RUN_OVERHEAD_FIGURE} (a whole run's logging, diagnostics and checkpoints)")
  eval_rate = figure_rate(figures, EVAL_RATE_FIGURE, benchmarks)
  if eval_rate is None and figures and any(g.eval_steps for g in groups.values()):
    notes.append(f"no evaluation rate: {os.path.basename(benchmarks)} has no figure {EVAL_RATE_FIGURE} "
                 "(evaluation hours stay unknown; --eval_steps_per_second gives a target)")
  if any(g.eval_episodes for g in groups.values()):
    notes.append("continuous evaluation is counted in episodes (their length depends on the task); not in hours")
  target = Rate(steps_per_second, "--steps_per_second") if steps_per_second else None
  target_eval = Rate(eval_steps_per_second, "--eval_steps_per_second") if eval_steps_per_second else None
  return Estimate(list(groups.values()), overhead, eval_rate, target, target_eval, notes)


def _h(hours: Optional[float]) -> str:
  return "unknown" if hours is None else f"{hours:,.1f} h" if hours >= 10 else f"{hours:.3g} h"


def format_estimate(sweep_name: str, runs: int, est: Estimate, benchmarks: str = DEFAULT_BENCHMARKS,
                    machine: Optional[str] = None) -> str:
  lines = [f"Estimate for {runs} runs of sweep {sweep_name} (device-hours: one run at a time on one device)"]
  lines.append(f"  {'agent':<16}{'runs':>6}{'gradient steps':>18}{'eval agent steps':>20}{'train steps/s':>15}"
               f"{'train':>12}")
  factor = est.overhead.per_second if est.overhead else 1.0
  for g in est.groups:
    rate = f"{g.train_rate.per_second:.4g}" if g.train_rate else "-"
    evals = f"{g.eval_steps:,}" if not g.eval_episodes else f"{g.eval_episodes:,} episodes"
    lines.append(f"  {g.agent:<16}{g.runs:>6}{g.gradient_steps:>18,}{evals:>20}{rate:>15}"
                 f"{_h(g.train_hours(g.train_rate, factor)):>12}")
  lines.append(f"Total: {est.gradient_steps:,} gradient steps, {est.eval_steps:,} evaluation agent steps"
               + (f", {est.eval_episodes:,} evaluation episodes" if est.eval_episodes else ""))
  where = os.path.relpath(benchmarks, REPO_ROOT) if benchmarks.startswith(REPO_ROOT) else benchmarks
  where += f", {machine}" if machine else ""
  train, evals = est.measured_train_hours(), est.measured_eval_hours()
  total = None if train is None or evals is None else train + evals
  sources = [s.source for s in [est.overhead, est.eval_rate] if s] + [g.train_rate.source for g in est.groups
                                                                       if g.train_rate]
  lines.append(f"At the measured rates ({where}): train {_h(train)} + evaluation {_h(evals)} = {_h(total)}")
  if sources:
    lines.append(f"  figures used: {', '.join(dict.fromkeys(sources))}")
  if est.target_rate or est.target_eval_rate:
    t_train, t_eval = est.target_train_hours(), est.target_eval_hours()
    t_total = None if t_train is None or t_eval is None else t_train + t_eval
    stated = ", ".join(f"{r.source}={r.per_second:g}" for r in (est.target_rate, est.target_eval_rate) if r)
    lines.append(f"At {stated}: train {_h(t_train)} + evaluation {_h(t_eval)} = {_h(t_total)}")
  lines += [f"note: {note}" for note in est.notes]
  return "\n".join(lines)


def machine_of(benchmarks: str) -> Optional[str]:
  """The machine line benchmarks/run.py records beside results.json (results_meta.json), if any."""
  meta = os.path.join(os.path.dirname(benchmarks), "results_meta.json")
  try:
    with open(meta) as f:
      return json.load(f).get("machine")
  except (OSError, ValueError):
    return None


def report(sweep: sweep_lib.Sweep, runs: Sequence[sweep_lib.Run], *, data_dir: Optional[str] = None,
           benchmarks: str = DEFAULT_BENCHMARKS, steps_per_second: Optional[float] = None,
           eval_steps_per_second: Optional[float] = None) -> str:
  """The printed estimate of `runs` (the launchers' --estimate)."""
  est = estimate(runs, data_dir=data_dir, benchmarks=benchmarks, steps_per_second=steps_per_second,
                 eval_steps_per_second=eval_steps_per_second)
  return format_estimate(sweep.name, len(runs), est, benchmarks, machine_of(benchmarks))


def add_arguments(parser) -> None:
  """--estimate and its rates, for the argparse launchers (local.py, vertex.py, gke.py)."""
  parser.add_argument("--estimate", action="store_true", help="Print the sweep's gradient and evaluation steps "
                      "and hours at the benchmarks' rates (and at the stated targets); launch nothing.")
  parser.add_argument("--steps_per_second", type=float, default=None, help="--estimate: a target train rate "
                      "(gradient steps/s per run) to price the sweep at, e.g. a TPU's.")
  parser.add_argument("--eval_steps_per_second", type=float, default=None, help="--estimate: a target "
                      "evaluation rate (agent steps/s per run).")
  parser.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS, help="--estimate: the measured rates "
                      "(benchmarks/run.py's results.json).")


def report_from_args(args, sweep: sweep_lib.Sweep, runs: Sequence[sweep_lib.Run], data_dir: Optional[str]) -> str:
  return report(sweep, runs, data_dir=data_dir, benchmarks=args.benchmarks, steps_per_second=args.steps_per_second,
                eval_steps_per_second=args.eval_steps_per_second)
