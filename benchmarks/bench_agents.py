"""Train-step throughput of our Atari agents against Dopamine's own TF DQN agent, measured side by side.

Entries (ratios are the figures of merit; higher is better for *_vs_dopamine, lower for the others):
  dqn_step_vs_dopamine, cql_qr_step_vs_dopamine, rem_step_vs_dopamine, dqn_lean_step_vs_dopamine
      our compiled train step (in-graph sampling, batch 32, 200 heads / quantiles) in steps/s over Dopamine's
      `DQNAgent._train_step` (update_period 1, its replay buffer filled in place, TF1 graph mode in a
      subprocess, Adam like ours) in steps/s. Goal: DQN (default configuration) >= 1.05. Our step also runs the
      online network on s' for the feature dot-product metrics when DR3 is off (Dopamine's does not), every
      `OfflineAgent.next_state_metrics_every` steps; `dqn_lean` turns those metrics off
      (OfflineAgent.next_state_metrics = False), which is the same network math as Dopamine's step.
  dqn_step_vs_dopamine_jax
      our DQN step (default configuration, sampling included) in steps/s over Dopamine's JAX DQN
      (`JaxDQNAgent`'s jitted `train`, Huber loss, Adam: its `_train_step` without its Python replay sampling)
      on the batch our sampler drew, in a subprocess. Goal >= 2.5.
  step_vs_pure_compute
      DQN step time over the time of the same network math (compute_loss + gradients + Adam) on a batch
      already in memory: the cost of sampling, target sync and graph overhead. Goal <= 1.15.
  dr3_cost
      CQL-QR + DR3 step time over CQL-QR step time. Goal <= 1.25.
  dqn_step_vs_dopamine_ceiling
      the largest dqn_step_vs_dopamine that ANY implementation of our DQN step's float32 arithmetic could reach
      on this machine: Dopamine's step time over (our step's FLOPs / the machine's float32 matmul rate, measured
      in this run); `dqn_lean_step_vs_dopamine_ceiling` the same for the lean step (no s' pass).
  dopamine_step_peak_fraction, dqn_step_peak_fraction
      each step's FLOPs per second over that matmul rate (how close to the machine's float32 limit it runs).
Each is given for the CPU-default jit setting (OfflineAgent.jit_compile default) and, suffixed `_xla` /
`_nojit`, for the other setting (the JAX baseline only for the default). Every ratio is the median over rounds
of the per-round ratio; `spread` gives its min / median / max.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_ACTIONS = 6
BATCH_SIZE = 32

# Run in a subprocess: Dopamine's TF agent switches the process to TF1 graph mode.
_DOPAMINE_SCRIPT = r"""
import json, os, sys, time, types
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# dopamine.discrete_domains.atari_lib imports baselines' Atari wrappers at import time; the train step never
# uses them. A stub satisfies the import, in this benchmark only.
baselines = types.ModuleType("baselines"); common = types.ModuleType("baselines.common")
wrappers = types.ModuleType("baselines.common.atari_wrappers")
baselines.common = common; common.atari_wrappers = wrappers
sys.modules.update({"baselines": baselines, "baselines.common": common, "baselines.common.atari_wrappers": wrappers})
import numpy as np
import tensorflow as tf
from dopamine.tf.agents.dqn import dqn_agent
steps, warmup, batch_size, num_actions = (int(a) for a in sys.argv[1:5])
tf.compat.v1.disable_v2_behavior()
sess = tf.compat.v1.Session()
agent = dqn_agent.DQNAgent(
    sess, num_actions=num_actions, update_period=1, min_replay_history=100, target_update_period=2000,
    optimizer=tf.compat.v1.train.AdamOptimizer(learning_rate=5e-5, epsilon=3.125e-4))
rng = np.random.default_rng(0)
for i in range(2000):
  agent._replay.memory.add(rng.integers(0, 256, size=(84, 84), dtype=np.uint8), int(rng.integers(num_actions)),
                           float(rng.choice([-1.0, 0.0, 1.0])), int(i % 200 == 199))
# Serve timing requests: each stdin line "k" runs k train steps and answers seconds per step, so the parent
# can interleave Dopamine's blocks with ours under the same machine load.
for line in sys.stdin:
  k = int(line)
  start = time.perf_counter()
  for _ in range(k):
    agent._train_step()
  print(json.dumps({"seconds_per_step": (time.perf_counter() - start) / max(k, 1)}), flush=True)
"""


# Dopamine's JAX DQN (JaxDQNAgent, the substrate of its offline lab): its jitted `train` function -- the network
# math of `JaxDQNAgent._train_step` without its Python replay sampling -- on the batch the parent wrote (our
# sampler's), Huber loss and Adam like ours. Served like the TF1 baseline: "k" on stdin -> seconds per step.
_DOPAMINE_JAX_SCRIPT = r"""
import json, os, sys, time, types
baselines = types.ModuleType("baselines"); common = types.ModuleType("baselines.common")
wrappers = types.ModuleType("baselines.common.atari_wrappers")
baselines.common = common; common.atari_wrappers = wrappers
sys.modules.update({"baselines": baselines, "baselines.common": common, "baselines.common.atari_wrappers": wrappers})
import numpy as np
import gin
import jax
from dopamine.jax.agents.dqn import dqn_agent
batch = dict(np.load(sys.argv[1]))
# The replay Dopamine's Atari configs bind (unused here: the batch is given).
gin.parse_config(f"ReplayBuffer.max_capacity = 1000\nReplayBuffer.batch_size = {len(batch['action'])}")
num_actions = int(sys.argv[2])
agent = dqn_agent.JaxDQNAgent(num_actions=num_actions, update_period=1, min_replay_history=100,
                              target_update_period=2000, loss_type="huber", seed=0)
states, next_states = agent.preprocess_fn(batch["state"]), agent.preprocess_fn(batch["next_state"])
def step():
  agent.optimizer_state, agent.online_params, loss = dqn_agent.train(
      agent.network_def, agent.online_params, agent.target_network_params, agent.optimizer,
      agent.optimizer_state, states, batch["action"], next_states, batch["reward"], batch["terminal"],
      agent.cumulative_gamma, "huber")
  return loss
jax.block_until_ready(step())
for line in sys.stdin:
  k = int(line)
  start = time.perf_counter()
  for _ in range(k):
    loss = step()
  jax.block_until_ready((loss, agent.online_params))
  print(json.dumps({"seconds_per_step": (time.perf_counter() - start) / max(k, 1)}), flush=True)
"""


class DopamineStepper:
  """A Dopamine train step in a subprocess (TF1 graph mode, or JAX), timed there in blocks on request."""

  def __init__(self, script=_DOPAMINE_SCRIPT, args=("0", "0", str(BATCH_SIZE), str(NUM_ACTIONS))):
    self._proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))

  def time_block(self, steps: int) -> float:
    self._proc.stdin.write(f"{steps}\n")
    self._proc.stdin.flush()
    while True:
      line = self._proc.stdout.readline()
      if not line:
        raise RuntimeError(f"Dopamine baseline failed:\n{self._proc.stderr.read()[-3000:]}")
      if line.startswith("{"):
        return json.loads(line)["seconds_per_step"]

  def close(self):
    self._proc.stdin.close()
    self._proc.wait(timeout=60)


# The Nature-DQN layers on an 84x84x4 input with 'same' padding: (output positions, output channels, kernel
# volume = multiply-adds per output); the head's channels are the network's outputs.
_NATURE_LAYERS = [(21 * 21, 32, 8 * 8 * 4),   # conv1
                  (11 * 11, 64, 4 * 4 * 32),  # conv2
                  (11 * 11, 64, 3 * 3 * 64),  # conv3
                  (1, 512, 11 * 11 * 64)]     # dense (phi)


def nature_forward_macs(num_outputs: int) -> int:
  """Multiply-adds of one Nature-DQN forward pass with `num_outputs` outputs (x 2 = 32.01 MFLOP for 6 actions;
  TF's profiler counts 32.07 MFLOP on our DQNNetwork graph, the rest being bias adds, ReLUs and the /255)."""
  layers = _NATURE_LAYERS + [(1, num_outputs, 512)]
  return sum(positions * channels * volume for positions, channels, volume in layers)


def dqn_step_flops(batch_size: int, num_outputs: int, next_state_forward: float) -> float:
  """FLOPs of one DQN train step: online forward + backward at s, target forward at s' and, on a fraction
  `next_state_forward` of the steps (0, 1, or 1 / period), the online forward at s' of the dot-product metrics.
  A forward is 2 FLOPs per multiply-add; the backward computes every layer's weight gradient and every input
  gradient but conv1's (the frames need none): 2 x forward minus conv1's share."""
  forward = 2 * nature_forward_macs(num_outputs)
  positions, channels, volume = _NATURE_LAYERS[0]
  backward = 2 * forward - 2 * positions * channels * volume
  forwards = 2 + float(next_state_forward)
  return batch_size * (forwards * forward + backward)


def matmul_flops_per_second(size: int = 2048, calls: int = 10) -> float:
  """The machine's float32 rate on a large matmul (TF's CPU kernels, all cores): the practical ceiling."""
  import numpy as np
  import tensorflow as tf
  a = tf.random.normal([size, size])
  product = tf.function(lambda: tf.matmul(a, a))
  np.asarray(product())
  best = float("inf")
  for _ in range(calls):
    start = time.perf_counter()
    np.asarray(product())
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


def _make_sampler(data_dir):
  """The real in-graph sampler on a small dataset written in the DQN Replay format."""
  sys.path.insert(0, ROOT)
  from batch_rl_dr3.data import fixed_replay
  from tests.replay_fixtures import write_run
  directory = write_run(data_dir, game="Pong", run=1, num_checkpoints=2, capacity=2000)
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1])
  return fixed_replay.InGraphSampler(replay, batch_size=BATCH_SIZE, seed=0)


def _block_until_done(out):
  import numpy as np
  np.asarray(out["total_loss"] if isinstance(out, dict) else out)


def time_interleaved(fns, steps: int, warmup: int, rounds: int = 12):
  """Seconds per call of each contender in each round ({name: [per-round seconds]}), timing blocks of
  steps // rounds calls in round-robin order so that load from other processes on this shared machine hits
  every contender alike. A contender is a callable (timed here) or an object with
  `time_block(n) -> seconds per step` (timed in its own process)."""
  import numpy as np

  def block_time(fn, n):
    if hasattr(fn, "time_block"):
      return fn.time_block(n)
    start = time.perf_counter()
    for _ in range(n):
      out = fn()
    _block_until_done(out)
    return (time.perf_counter() - start) / n

  for fn in fns.values():
    block_time(fn, warmup)
  block = max(1, steps // rounds)
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      samples[name].append(block_time(fn, block))
  return {name: np.asarray(v) for name, v in samples.items()}


def _pure_compute_fn(agent, batch, jit_compile):
  """The step's network math (loss, penalties, metrics, gradients, Adam) on a batch already in memory."""
  import tensorflow as tf

  @tf.function(jit_compile=jit_compile)
  def step(batch):
    with tf.GradientTape() as tape:
      loss, metrics = agent.compute_loss(batch)
    # The agent's own update (Adam + its step counter, which schedules the metrics-only pass on s').
    agent.apply_gradients(tape.gradient(loss, agent.trainable_weights))
    return metrics

  return lambda: step(batch)


def _dr3():
  """DR3 in the paper's form (atari/dr3.gin's c0); a fresh object per agent (it holds the agent's c0)."""
  from batch_rl_dr3.regularizers import DR3
  return {"penalties": [DR3(0.03)]}


# (label, agent class, constructor kwargs: a function, so each agent gets its own penalty objects)
CONFIGS = [("dqn", "DQN", dict), ("rem", "REM", dict), ("cql_qr", "CQLQR", lambda: {"cql_alpha": 1.0}),
           ("dqn+dr3", "DQN", _dr3), ("rem+dr3", "REM", _dr3),
           ("cql_qr+dr3", "CQLQR", lambda: {"cql_alpha": 1.0, **_dr3()})]


def run(quick: bool, sampler=None):
  import inspect
  import numpy as np
  from batch_rl_dr3 import agents as agents_lib
  import spread
  defaults = inspect.signature(agents_lib.OfflineAgent.__init__).parameters
  default_jit = defaults["jit_compile"].default
  # The share of steps that run the online network on s' for the metrics when DR3 is off.
  every = defaults["next_state_metrics_every"].default if "next_state_metrics_every" in defaults else 1
  steps, warmup = (24, 2) if quick else (96, 4)

  print("  starting Dopamine's TF DQN agent in a subprocess ...", flush=True)
  dopamine_stepper = DopamineStepper()

  entries = []
  with tempfile.TemporaryDirectory() as data_dir:
    sampler = sampler or _make_sampler(data_dir)
    batch_path = os.path.join(data_dir, "batch.npz")
    batch = {k: np.asarray(v) for k, v in sampler.sample().items()}
    np.savez(batch_path, **{k: batch[k].astype(np.float32) if k in ("reward", "terminal") else batch[k]
                            for k in ("state", "next_state", "action", "reward", "terminal")})
    print("  starting Dopamine's JAX DQN agent in a subprocess ...", flush=True)
    jax_stepper = DopamineStepper(_DOPAMINE_JAX_SCRIPT, (batch_path, str(NUM_ACTIONS)))
    for jit in (default_jit, not default_jit):
      suffix = "" if jit == default_jit else ("_xla" if jit else "_nojit")
      # Read when each agent traces its step: the frame unpacking that is fastest for this jit setting.
      sampler.frame_unpacking = "swar" if jit else "transpose"
      print(f"  our steps, jit_compile={jit} (tracing / compiling first) ...", flush=True)
      fns = {"dopamine": dopamine_stepper}
      if jit == default_jit:
        fns["dopamine jax"] = jax_stepper
      for label, cls_name, make_kwargs in CONFIGS:
        agent = getattr(agents_lib, cls_name)(NUM_ACTIONS, sampler, jit_compile=jit, **make_kwargs())
        fns[label] = agent.train_step
        if label == "dqn":
          lean_agent = agents_lib.DQN(NUM_ACTIONS, sampler, jit_compile=jit, next_state_metrics=False)
          fns["dqn lean metrics"] = lean_agent.train_step
          pure_agent = agents_lib.DQN(NUM_ACTIONS, sampler, jit_compile=jit)
          fns["dqn pure compute"] = _pure_compute_fn(pure_agent, sampler.sample(), jit)
      times = time_interleaved(fns, steps, warmup)
      for label, seconds in times.items():
        print(f"    {label:<17} {np.median(seconds) * 1e3:7.1f} ms/step (min {seconds.min() * 1e3:.1f}, "
              f"max {seconds.max() * 1e3:.1f})", flush=True)
      pure, dopamine = times["dqn pure compute"], times["dopamine"]

      def rate_entry(name, ours, baseline, goal=""):
        return spread.entry(name, 1.0 / ours, 1.0 / baseline, "steps/s", goal=goal)

      def time_entry(name, ours, baseline, goal=""):
        return spread.entry(name, ours * 1e3, baseline * 1e3, "ms/step", goal=goal, higher_is_better=False)

      for label in ("dqn", "cql_qr", "rem"):
        entries.append(rate_entry(f"{label}_step_vs_dopamine{suffix}", times[label], dopamine,
                                  ">= 1.05" if label == "dqn" else ""))
      if "dopamine jax" in times:
        entries.append(rate_entry("dqn_step_vs_dopamine_jax", times["dqn"], times["dopamine jax"], ">= 2.5"))
      entries.append(rate_entry(f"dqn_lean_step_vs_dopamine{suffix}", times["dqn lean metrics"], dopamine))
      entries.append(time_entry(f"step_vs_pure_compute{suffix}", times["dqn"], pure, "<= 1.15"))
      entries.append(time_entry(f"dr3_cost{suffix}", times["cql_qr+dr3"], times["cql_qr"], "<= 1.25"))
      # The float32 ceiling: measured around the timed blocks, the fastest rate counts.
      peak = max(matmul_flops_per_second() for _ in range(3))
      flops = {"dqn": dqn_step_flops(BATCH_SIZE, NUM_ACTIONS, next_state_forward=1.0 / every),
               "dqn lean metrics": dqn_step_flops(BATCH_SIZE, NUM_ACTIONS, next_state_forward=0),
               "dopamine": dqn_step_flops(BATCH_SIZE, NUM_ACTIONS, next_state_forward=0)}
      print(f"    float32 matmul {peak / 1e9:.0f} GFLOP/s; Dopamine's step {flops['dopamine'] / np.median(dopamine) / 1e9:.0f}, "
            f"ours {flops['dqn'] / np.median(times['dqn']) / 1e9:.0f} GFLOP/s", flush=True)
      for name, label in (("dqn", "dqn"), ("dqn_lean", "dqn lean metrics")):
        at_peak = np.full_like(dopamine, flops[label] / peak)
        entries.append(spread.entry(f"{name}_step_vs_dopamine_ceiling{suffix}", 1.0 / at_peak, 1.0 / dopamine,
                                    "steps/s at the float32 matmul rate", goal="informational"))
      for name, label in (("dopamine", "dopamine"), ("dqn", "dqn")):
        entries.append(spread.entry(f"{name}_step_peak_fraction{suffix}", flops[label] / times[label] / 1e9,
                                    np.full_like(times[label], peak / 1e9), "GFLOP/s", goal="informational"))
      for label in ("dqn", "rem"):
        entries.append(time_entry(f"{label}_dr3_cost{suffix}", times[label + "+dr3"], times[label]))
    jax_stepper.close()
  dopamine_stepper.close()
  return entries


if __name__ == "__main__":
  for entry in run(quick="--quick" in sys.argv):
    print(entry)
