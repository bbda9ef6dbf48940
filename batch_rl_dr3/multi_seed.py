r"""Several seeds of one configuration trained in one compiled step.

On a GPU or TPU one Nature CNN at batch 32 leaves the chip mostly idle, and Python dispatch per step dominates.
`MultiSeedStep` runs the gradient steps of N independent agents (their own networks, Adam optimizers, RNGs and
samplers drawing their own streams) inside ONE `tf.function`: one dispatch for N steps, and N independent
chains of ops that the runtime (or XLA, with jit_compile) can overlap. It is built only from the agent's
public pieces (`sampler.sample`, `draw_head_weights`, `compute_loss`, `apply_gradients`,
`maybe_sync_target`), so each member's step is the same computation as its own `train_step()`.

`MultiSeedAtariExperiment` is the Atari experiment with N such members sharing one loaded replay; member k is
built exactly as a run with `--seed=<seed + k>` builds its agent and sampler, so its parameters follow that
run's step for step (tests/test_multi_seed.py checks this against separate agents). Select it in gin
(launch/gin/multi_seed.gin):

    import batch_rl_dr3.multi_seed
    run_experiment.create_experiment = @MultiSeedAtariExperiment
    MultiSeedAtariExperiment.num_seeds = 4

Every `AtariExperiment.*` binding applies to each member. The run folder (`--base_dir`, `--seed=s`) holds member
0 (seed s) under the usual metric names and member k under `train/seed<s+k>/...`, `eval/seed<s+k>/...`;
its checkpoint holds every member, so the run resumes as a whole. `run_info.json` lists the seeds. The report
counts the folder as the run with seed s; `python -m batch_rl_dr3.multi_seed split RUN_DIR` writes `RUN_DIR/seed<s+k>/` run
folders (run_info.json with seed s + k, metrics.csv with that member's columns under the usual names), which
the report then finds as runs of their own with a recursive pattern (`--runs='runs/**'`). Memory: the frames once, plus N networks and N diagnostics batches.
Cost on this CPU: `multi_seed_step_cost` in benchmarks/results.json (time per seed-step at N = 4 over one
run's step); the data-parallel `DistributedAtariExperiment` is the other way to fill a chip (one seed, larger
effective throughput per step) and the two do not combine.
"""
import contextlib
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

import gin
import tensorflow as tf

from batch_rl_dr3 import atari_experiment
from batch_rl_dr3 import runner
from batch_rl_dr3.agents import create_agent
from batch_rl_dr3.data import fixed_replay
from batch_rl_dr3.errors import ConfigError


class MultiSeedStep:
  """One compiled function that takes one gradient step of each agent (independent networks and samplers)."""

  def __init__(self, agents: Sequence[Any], jit_compile: Optional[bool] = None):
    if not agents:
      raise ConfigError("MultiSeedStep: expected at least one agent")
    self.agents = list(agents)
    if jit_compile is None:
      jit_compile = all(agent.jit_compile for agent in self.agents)
    self._fn = tf.function(self._step, jit_compile=bool(jit_compile))

  @staticmethod
  def _member_step(agent) -> Dict[str, tf.Tensor]:
    batch = agent.sampler.sample()
    head_weights = agent.draw_head_weights()
    with tf.GradientTape() as tape:
      loss, metrics = agent.compute_loss(batch, head_weights)
    agent.apply_gradients(tape.gradient(loss, agent.trainable_weights))
    agent.maybe_sync_target()
    return metrics

  def _step(self) -> List[Dict[str, tf.Tensor]]:
    return [self._member_step(agent) for agent in self.agents]

  def __call__(self) -> List[Dict[str, tf.Tensor]]:
    """Each agent's metrics of this step, in agent order (agents with the 'behavior_policy' backup clone their
    pi_beta first, as their own train_step would)."""
    for agent in self.agents:
      agent.pretrain_behavior_policy()
    return self._fn()

  @property
  def tracing_count(self) -> int:
    return self._fn.experimental_get_tracing_count()


@gin.configurable(denylist=["seed"])
class MultiSeedAtariExperiment(atari_experiment.AtariExperiment):
  """`AtariExperiment` training seeds seed, seed + 1, ..., seed + num_seeds - 1 in one compiled step."""

  def __init__(self, seed: int = 0, num_seeds: int = 4):
    """
    Args:
      seed: the run's seed: member k trains as a run with seed + k would.
      num_seeds: how many members (>= 1; 1 is a plain run through the multi-seed step).
    """
    if num_seeds < 1:
      raise ConfigError(f"MultiSeedAtariExperiment.num_seeds={num_seeds}; expected >= 1")
    super().__init__(seed=seed)  # member 0, built exactly as a run with this seed
    self.seeds = [seed + k for k in range(num_seeds)]
    self._members = [(seed, self.sampler, self.agent, self._diagnostics_batch)]
    num_actions = self.agent.num_actions
    for member_seed in self.seeds[1:]:
      # What run_experiment does before it builds a run: the networks' initializers draw from these.
      tf.keras.utils.set_random_seed(member_seed)
      sampler = fixed_replay.InGraphSampler(self.replay, batch_size=self.sampler.batch_size,
                                            seed=atari_experiment.derived_seed(member_seed, "sampler"))
      agent = create_agent(self.agent_name, num_actions, sampler,
                           seed=atari_experiment.derived_seed(member_seed, "agent"))
      sampler.frame_unpacking = self.sampler.frame_unpacking
      diagnostics_batch = fixed_replay.InGraphSampler(
          self.replay, batch_size=int(self._diagnostics_batch["state"].shape[0]),
          seed=atari_experiment.derived_seed(member_seed, "diagnostics")).sample()
      self._members.append((member_seed, sampler, agent, diagnostics_batch))
    self.step = MultiSeedStep([agent for _, _, agent, _ in self._members], jit_compile=self.agent.jit_compile)

  @property
  def agents(self) -> List[Any]:
    return [agent for _, _, agent, _ in self._members]

  def _prefix(self, index: int) -> str:
    return "" if index == 0 else f"seed{self._members[index][0]}/"

  @contextlib.contextmanager
  def _as_member(self, index: int):
    """The parent's per-run methods (evaluate, diagnostics) applied to member `index`."""
    saved = (self.seed, self.sampler, self.agent, self._diagnostics_batch)
    self.seed, self.sampler, self.agent, self._diagnostics_batch = self._members[index]
    try:
      yield
    finally:
      self.seed, self.sampler, self.agent, self._diagnostics_batch = saved

  def trackables(self) -> Dict[str, Any]:
    tracked = dict(super().trackables())
    for member_seed, sampler, agent, _ in self._members[1:]:
      tracked[f"agent_seed{member_seed}"] = agent
      tracked[f"sampler_seed{member_seed}"] = sampler
    return tracked

  def initial_weights(self) -> Dict[str, Any]:
    raise ConfigError("run_experiment.init_from: not supported with MultiSeedAtariExperiment (start each seed "
                      "from its own source run instead)")

  def on_iteration_start(self, iteration: int) -> None:
    for _, sampler, _, _ in self._members:
      sampler.on_iteration_start(iteration)

  def train_step(self):
    metrics = {}
    for index, member_metrics in enumerate(self.step()):
      metrics.update({self._prefix(index) + name: value for name, value in member_metrics.items()})
    return metrics

  def _per_member(self, method, iteration: int) -> Dict[str, float]:
    out = {}
    for index in range(len(self._members)):
      with self._as_member(index):
        out.update({self._prefix(index) + k: v for k, v in method(iteration).items()})
    return out

  def diagnostics(self, iteration: int) -> Dict[str, float]:
    return self._per_member(super().diagnostics, iteration)

  def evaluate(self, iteration: int) -> Dict[str, float]:
    return self._per_member(super().evaluate, iteration)

  def run_info(self) -> Dict[str, Any]:
    return dict(super().run_info(), num_seeds=len(self.seeds), seeds=list(self.seeds))



def member_row(row: Dict[str, Any], member_seed: int) -> Dict[str, Any]:
  """Member `member_seed`'s columns of a multi-seed metrics row, under the usual names (train/x, eval/x)."""
  out = {k: row[k] for k in ("iteration", "gradient_steps") if k in row}
  pattern = re.compile(rf"^(train|eval)/seed{member_seed}/(.+)$")
  for key, value in row.items():
    match = pattern.match(key)
    if match:
      out[f"{match.group(1)}/{match.group(2)}"] = value
  return out


def split_members(base_dir: str) -> List[str]:
  """Writes `<base_dir>/seed<k>/` run folders for the members after the first; returns their paths.

  Each gets run_info.json (the run's, with seed k and `multi_seed_run` naming base_dir), metrics.csv /
  metrics.jsonl (member k's columns) and DONE when the run has it. Rewritten from scratch on every call.
  """
  def read(name):
    with tf.io.gfile.GFile(os.path.join(base_dir, name)) as f:
      return f.read()

  try:
    info = json.loads(read(runner.RUN_INFO_FILE))
    rows = [json.loads(line) for line in read(runner.METRICS_JSONL).splitlines() if line.strip()]
  except tf.errors.NotFoundError as e:
    raise ConfigError(f"{base_dir}: not a run folder ({e.message})") from None
  seeds = info.get("seeds")
  if not seeds:
    raise ConfigError(f"{os.path.join(base_dir, runner.RUN_INFO_FILE)}: no 'seeds': not a MultiSeedAtariExperiment run")
  written = []
  for member_seed in seeds[1:]:
    member_dir = os.path.join(base_dir, f"seed{member_seed}")
    tf.io.gfile.makedirs(member_dir)
    member_info = {k: v for k, v in info.items() if k not in ("seeds", "num_seeds")}
    member_info.update(seed=member_seed, multi_seed_run=base_dir)
    with tf.io.gfile.GFile(os.path.join(member_dir, runner.RUN_INFO_FILE), "w") as f:
      f.write(json.dumps(member_info, indent=2, sort_keys=True) + "\n")
    log = runner.MetricsLog(member_dir, tensorboard=False)
    log.truncate(0)
    for row in rows:
      log.append(member_row(row, member_seed))
    if tf.io.gfile.exists(os.path.join(base_dir, runner.DONE_FILE)):
      tf.io.gfile.copy(os.path.join(base_dir, runner.DONE_FILE), os.path.join(member_dir, runner.DONE_FILE),
                       overwrite=True)
    written.append(member_dir)
  return written


def main(argv: Sequence[str]) -> int:
  if len(argv) < 2 or argv[0] != "split":
    print("usage: python -m batch_rl_dr3.multi_seed split RUN_DIR [RUN_DIR ...]", file=sys.stderr)
    return 2
  try:
    for base_dir in argv[1:]:
      for member_dir in split_members(base_dir):
        print(member_dir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
