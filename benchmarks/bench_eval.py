"""Evaluation throughput: the default batched evaluation against Dopamine's protocol, side by side.

Entry:
  eval_steps_per_second_vs_single_env
      agent steps per second of `evaluation.evaluate` as `AtariExperiment` runs it by default (its
      `num_eval_envs` games in ale-py's C++ vector environment, one batched policy call per step) over Dopamine's
      protocol: ONE game (`atari_env.AtariEnv` + `FrameStack`: Dopamine's preprocessing in Python) and one
      policy call per agent step on a batch of one. Both use the same policy: the DQN agent's compiled
      epsilon-greedy `select_action` (epsilon 0.001) on the same Nature network (freshly initialized: the
      arithmetic of a trained one is the same). Both play games built before the timing (a run keeps its games)
      and are timed from the first policy call (ours: `EvalResult.seconds`, after the games are reseeded).
      Goal >= 4 on this 2-core machine.
  eval_reseed_share
      what reseeding the games costs every evaluation (ale-py reloads the ROM of each game to reseed it) as a
      share of a whole default evaluation (125,000 agent steps at the measured rate + the reseed). Informational.
"""
import inspect
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from batch_rl_dr3 import atari_env  # noqa: E402
from batch_rl_dr3 import evaluation  # noqa: E402
from batch_rl_dr3.atari_experiment import AtariExperiment  # noqa: E402
import spread  # noqa: E402

GAME = "Breakout"
EPSILON = 0.001


class _NoData:
  def sample(self):
    raise RuntimeError("evaluation only acts")


def _policy():
  from batch_rl_dr3 import agents
  agent = agents.DQN(atari_env.num_actions_for_game(GAME), _NoData())
  return lambda states: np.asarray(agent.select_action(states, EPSILON))


def dopamine_protocol(policy, env, num_steps: int) -> float:
  """Agent steps/s of Dopamine's eval loop: one game, Python preprocessing, one batch-1 policy call a step."""
  start = time.perf_counter()
  stack = atari_env.FrameStack()
  state = stack.reset(env.reset())
  for _ in range(num_steps):
    action = int(policy(state[None])[0])
    observation, _, terminal, truncated = env.step(action)
    state = stack.reset(env.reset()) if terminal or truncated else stack.push(observation)
  return num_steps / (time.perf_counter() - start)


def default_evaluation(policy, num_steps: int, seed: int, num_envs: int):
  """(agent steps/s from the first policy call, seconds spent before it: reseeding the games)."""
  start = time.perf_counter()
  result = evaluation.evaluate(policy, GAME, num_steps=num_steps, seed=seed, num_envs=num_envs, progress=False)
  return result.steps_per_second, time.perf_counter() - start - result.seconds


def run(quick: bool):
  num_envs = inspect.signature(AtariExperiment.__init__).parameters["num_eval_envs"].default
  policy = _policy()
  for batch in (1, num_envs):  # trace / warm the policy for both batch sizes
    policy(np.zeros((batch, 84, 84, 4), np.uint8))
  single_env = atari_env.AtariEnv(GAME, seed=0)
  default_evaluation(policy, num_envs, seed=0, num_envs=num_envs)  # builds the run's games
  rounds, single_steps, batched_steps = (3, 300, num_envs * 60) if quick else (6, 1500, num_envs * 400)
  print(f"  {rounds} rounds: Dopamine's protocol {single_steps} steps, default evaluation ({num_envs} games) "
        f"{batched_steps} steps", flush=True)
  ours, theirs, reseed = [], [], []
  for r in range(rounds):
    theirs.append(dopamine_protocol(policy, single_env, single_steps))
    rate, seconds = default_evaluation(policy, batched_steps, seed=r, num_envs=num_envs)
    ours.append(rate)
    reseed.append(seconds)
    print(f"   round {r + 1}: default {ours[-1]:.0f} steps/s, single game {theirs[-1]:.0f} steps/s, "
          f"ratio {ours[-1] / theirs[-1]:.2f}", flush=True)
  e = spread.entry("eval_steps_per_second_vs_single_env", ours, theirs, "agent steps/s", goal=">= 4",
                   num_envs=num_envs)
  print("  " + spread.describe(e), flush=True)
  steps = inspect.signature(AtariExperiment.__init__).parameters["evaluation_steps"].default
  whole = [steps / rate + s for rate, s in zip(ours, reseed)]
  share = spread.entry("eval_reseed_share", reseed, whole, f"s per evaluation / s of a {steps}-step evaluation",
                       goal="informational", higher_is_better=False)
  print("  " + spread.describe(share), flush=True)
  return [e, share]


if __name__ == "__main__":
  for item in run(quick="--quick" in sys.argv):
    print(item)
