"""evaluate(): Dopamine's eval-phase protocol (budget, crossing episode, unclipped returns), batched envs."""
import gin
import numpy as np
import pytest

from batch_rl_dr3.errors import ConfigError
from batch_rl_dr3.evaluation import EvalResult, evaluate
from tests.test_atari_env import HandPreprocessing


def pixel_sum_policy(num_actions):
  """Acts on each state on its own (so batching cannot change an action), deterministically."""
  def policy(states):
    return (states.reshape(len(states), -1).sum(axis=1, dtype=np.int64) % num_actions).astype(np.int32)
  return policy


def test_finish_episodes_finishes_the_episode_that_crosses_the_budget():
  """Dopamine's phase accounting (finish_episodes=True): episodes start while steps < budget."""
  policy = pixel_sum_policy(6)
  kw = dict(max_steps_per_episode=40, seed=1, progress=False, finish_episodes=True)
  exact = evaluate(policy, "Pong", num_steps=80, **kw)
  assert (exact.lengths, exact.steps, exact.num_episodes, exact.num_cut_episodes) == ([40, 40], 80, 2, 0)
  crossing = evaluate(policy, "Pong", num_steps=81, **kw)
  assert (crossing.lengths, crossing.steps, crossing.num_episodes) == ([40, 40, 40], 120, 3)
  one = evaluate(policy, "Pong", num_steps=1, **kw)
  assert (one.lengths, one.steps, one.num_episodes) == ([40], 40, 1)
  # The first episodes are the same episodes whatever the budget.
  assert crossing.returns[:2] == exact.returns and crossing.returns[:1] == one.returns


def test_budget_is_a_hard_limit_of_agent_steps():
  """The default: a small budget costs exactly its steps, however long the episodes; cut episodes do not count."""
  policy = pixel_sum_policy(6)
  kw = dict(max_steps_per_episode=40, seed=1, progress=False)
  crossing = evaluate(policy, "Pong", num_steps=81, **kw)
  assert (crossing.lengths, crossing.steps, crossing.num_episodes, crossing.num_cut_episodes) == ([40, 40], 81, 2, 1)
  dopamine = evaluate(policy, "Pong", num_steps=81, finish_episodes=True, **kw)
  assert crossing.returns == dopamine.returns[:2]  # the finished episodes are the same episodes
  # NOOP-only Breakout never serves the ball: no game over until the 27,000-step cap. 300 steps cost 300 steps.
  calls = []

  def noop(states):
    calls.append(len(states))
    return np.zeros(len(states), np.int32)

  short = evaluate(noop, "Breakout", num_steps=300, seed=0, progress=False)
  assert (short.steps, short.num_episodes, short.num_cut_episodes, len(calls)) == (300, 0, 1, 300)
  assert np.isnan(short.mean_return) and short.returns == []
  # Batched: 4 games share 301 steps as ceil(301 / 4) = 76 each: 76 policy calls, 304 steps, 4 cut episodes.
  calls.clear()
  batched = evaluate(noop, "Breakout", num_steps=301, seed=0, num_envs=4, progress=False)
  assert (batched.steps, batched.num_cut_episodes, calls) == (304, 4, [4] * 76)


def test_deterministic_given_seed():
  policy = pixel_sum_policy(4)
  first = evaluate(policy, "Breakout", num_steps=250, max_steps_per_episode=200, seed=3, progress=False)
  second = evaluate(policy, "Breakout", num_steps=250, max_steps_per_episode=200, seed=3, progress=False)
  assert isinstance(first, EvalResult)
  assert first == second
  assert first.steps == 250 and sum(first.lengths) + 50 * first.num_cut_episodes == first.steps


def test_two_envs_share_the_budget_evenly_in_lockstep():
  batch_shapes = []

  def policy(states):
    batch_shapes.append(states.shape)
    return pixel_sum_policy(6)(states)

  both = evaluate(policy, "Pong", num_steps=100, max_steps_per_episode=30, seed=5, num_envs=2, progress=False,
                  finish_episodes=True)
  # Each env has a budget of ceil(100 / 2) = 50 steps: two 30-step episodes each.
  assert both.env_indices == [0, 0, 1, 1]
  assert both.lengths == [30, 30, 30, 30] and both.steps == 120 and both.num_episodes == 4
  assert set(batch_shapes) == {(2, 84, 84, 4)} and len(batch_shapes) == 60
  alone = [evaluate(pixel_sum_policy(6), "Pong", num_steps=50, max_steps_per_episode=30, seed=5 + i,
                    progress=False, finish_episodes=True) for i in range(2)]
  assert both.returns == alone[0].returns + alone[1].returns
  assert both.mean_return == pytest.approx(np.mean(alone[0].returns + alone[1].returns))
  # An odd budget rounds up per env: ceil(61 / 2) = 31 > 30, so each env plays a second episode.
  odd = evaluate(pixel_sum_policy(6), "Pong", num_steps=61, max_steps_per_episode=30, seed=5, num_envs=2,
                 progress=False, finish_episodes=True)
  assert odd.lengths == [30, 30, 30, 30]
  assert odd.returns == both.returns
  # The hard budget: 31 steps each, the second episodes cut after one step.
  hard = evaluate(pixel_sum_policy(6), "Pong", num_steps=61, max_steps_per_episode=30, seed=5, num_envs=2,
                  progress=False)
  assert (hard.lengths, hard.env_indices, hard.steps, hard.num_cut_episodes) == ([30, 30], [0, 1], 62, 2)
  assert hard.returns == [both.returns[0], both.returns[2]]


def test_bad_policies_and_settings_get_clear_errors():
  with pytest.raises(ValueError, match=r"shape \(1,\)"):
    evaluate(lambda s: np.zeros(2, np.int32), "Pong", num_steps=5, progress=False)
  with pytest.raises(ValueError, match="int actions"):
    evaluate(lambda s: np.zeros(1, np.float32), "Pong", num_steps=5, progress=False)
  with pytest.raises(ValueError, match=r"outside \[0, 6\)"):
    evaluate(lambda s: np.full(1, 6, np.int32), "Pong", num_steps=5, progress=False)
  with pytest.raises(ConfigError, match="num_steps"):
    evaluate(pixel_sum_policy(6), "Pong", num_steps=0, progress=False)
  with pytest.raises(ConfigError, match="num_envs"):
    evaluate(pixel_sum_policy(6), "Pong", num_steps=5, num_envs=0, progress=False)
  with pytest.raises(ConfigError, match="'Pongg'"):
    evaluate(pixel_sum_policy(6), "Pongg", num_steps=5, progress=False)


def test_gin_binds_the_protocol_and_progress_is_shown(caplog):
  caplog.set_level("INFO")
  caplog.set_level("INFO", logger="absl")  # an in-process absl app earlier in this worker may have raised its level
  gin.clear_config()
  try:
    gin.parse_config("evaluate.max_steps_per_episode = 12")
    result = evaluate(pixel_sum_policy(6), "Pong", num_steps=20, seed=0, progress=True)
  finally:
    gin.clear_config()
  assert result.lengths == [12] and result.steps == 20 and result.num_cut_episodes == 1
  # Not a terminal here: the progress is plain log lines (progress.py), the last one at 100 %.
  assert any(r.getMessage().startswith("eval Pong: 20/20 steps (100%)") for r in caplog.records)
