"""Atari evaluation with the protocol of the DQN Replay papers (Dopamine's runner, eval phase), batched.

Every episode is played exactly as in Dopamine's eval phase: sticky actions 0.25, frame skip 4, max-pool,
84x84, game over = terminal (not a life loss), episodes cut at `max_steps_per_episode` agent steps (27,000);
the policy sees Dopamine's agent state (the last 4 frames, zeros before the episode's first frame) and the
episode return is the UNCLIPPED sum of game rewards (what Dopamine logs as Eval/AverageReturns). The policy does
its own epsilon-greedy (epsilon_eval 0.001 in the papers): `evaluate` only calls it.

Batched (`num_envs` games, 32 by default in `AtariExperiment`): the games run in ale-py's C++ vector environment
(`atari_env.BatchedAtariEnv`, frames equal to `atari_env.AtariEnv`'s) and step in lockstep with ONE policy call
per step on the batch of their states. Game ``i`` is seeded with ``seed + i`` and has an even share of the budget,
``ceil(num_steps / num_envs)`` agent steps.

The budget is a budget of agent steps (`finish_episodes=False`, the default): every game plays exactly its share
and stops, so an evaluation plays ``num_envs * ceil(num_steps / num_envs)`` agent steps, never more, whatever the
policy does: a 300-step budget costs 300 steps (plus the rounding to a whole batch), not a 27,000-step episode.
Episodes still running when a game's share is spent are cut: they are not full episodes of the protocol, so
they are left out of the returns and counted in `EvalResult.num_cut_episodes` (at most one per game). When no
episode finished within the budget, `mean_return` is NaN (and a warning says to raise the budget).

`finish_episodes=True` is Dopamine's phase accounting exactly: a game starts episodes while its own step count is
below its share and always finishes the episode that crosses it (Dopamine's `Runner._run_one_phase`), so slightly
more than `num_steps` steps are played, and the time is unbounded by the budget (up to `max_steps_per_episode`
more steps per game). With one game this is Dopamine's eval phase; with k games the same episodes as k separate
single-game evaluations with seeds ``seed, ..., seed + k - 1`` and share ``ceil(num_steps / k)`` (for a policy
that acts on each state independently). Games that are done keep stepping in the batch (ale-py steps all of
them; a fixed batch shape does not retrace a compiled policy), their actions and episodes ignored.

Results list episodes game by game, each in the order played.
"""
import dataclasses
import math
import time
from typing import Callable, List, Optional

import gin
import numpy as np
from absl import logging

from batch_rl_dr3 import atari_env
from batch_rl_dr3 import atari_games
from batch_rl_dr3.errors import ConfigError
from batch_rl_dr3.progress import Progress

Policy = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """What an evaluation played: one entry per finished episode, and Dopamine's average return."""
  returns: List[float]          # unclipped episode returns
  lengths: List[int]            # agent steps per episode
  env_indices: List[int]        # which environment played each episode
  num_episodes: int             # Dopamine's Eval/NumEpisodes (finished episodes only)
  steps: int                    # agent steps played in total (cut episodes included)
  mean_return: float            # Dopamine's Eval/AverageReturns (NaN when no episode finished)
  num_cut_episodes: int = 0     # episodes the budget cut (left out of the returns)
  seconds: float = dataclasses.field(default=0.0, compare=False)

  @property
  def steps_per_second(self) -> float:
    return self.steps / self.seconds if self.seconds > 0 else float("nan")


def _check_actions(actions, batch_size: int, num_actions: int) -> np.ndarray:
  actions = np.asarray(actions)
  if actions.shape != (batch_size,) or not (np.issubdtype(actions.dtype, np.integer)):
    raise ValueError(f"policy must return int actions of shape ({batch_size},) for states of shape "
                     f"({batch_size}, 84, 84, 4); got dtype {actions.dtype}, shape {actions.shape}")
  if actions.size and (actions.min() < 0 or actions.max() >= num_actions):
    raise ValueError(f"policy returned actions {actions.tolist()} outside [0, {num_actions}) "
                     f"(the game's minimal action set)")
  return actions


@gin.configurable(denylist=["policy"])
def evaluate(policy: Policy, game: str, *, num_steps: int = 125_000,
             max_steps_per_episode: Optional[int] = atari_env.MAX_STEPS_PER_EPISODE, seed: int = 0,
             num_envs: int = 1, finish_episodes: bool = False, rom_dir: Optional[str] = None,
             sticky_action_prob: float = atari_env.STICKY_ACTION_PROB, num_threads: Optional[int] = None,
             progress: bool = True) -> EvalResult:
  """Evaluates `policy` on `game` with the DQN Replay / Dopamine protocol (see the module docstring).

  Args:
    policy: states uint8 [B, 84, 84, 4] -> actions int [B] (indices into the minimal action set), B = num_envs.
    game: a DQN Replay game (any spelling `atari_games.canonical_game` accepts).
    num_steps: the agent-step budget (125,000 per iteration in the papers), shared evenly by the games.
    max_steps_per_episode: episodes are cut after this many agent steps (27,000).
    seed: seeds the environments (environment i gets seed + i).
    num_envs: games stepped in lockstep, one batched policy call per step.
    finish_episodes: False: the budget is a hard limit (episodes it cuts are not counted); True: each game
      finishes the episode that crosses its share, as Dopamine's eval phase does.
    rom_dir: folder with the ROMs to use (see `atari_env`); None for ale-py's.
    sticky_action_prob: the ALE's repeat-action probability (0.25).
    num_threads: ale-py worker threads stepping the games (default: one per core, at most num_envs).
    progress: show a progress bar (steps, episodes, mean return so far).
  """
  game = atari_games.canonical_game(game)
  if int(num_steps) < 1:
    raise ConfigError(f"evaluate: num_steps must be >= 1 (the agent-step budget); got {num_steps}")
  if int(num_envs) < 1:
    raise ConfigError(f"evaluate: num_envs must be >= 1; got {num_envs}")
  num_envs = int(num_envs)
  share = math.ceil(int(num_steps) / num_envs)
  envs = atari_env.batched_env(game, num_envs, float(sticky_action_prob), max_steps_per_episode, rom_dir,
                               num_threads)
  states = envs.reset([seed + i for i in range(num_envs)])
  env_steps = np.zeros(num_envs, np.int64)
  episode_steps = np.zeros(num_envs, np.int64)
  episode_return = np.zeros(num_envs, np.float64)
  active = np.ones(num_envs, bool)
  returns: List[List[float]] = [[] for _ in range(num_envs)]
  lengths: List[List[int]] = [[] for _ in range(num_envs)]
  num_cut = 0
  started = time.time()
  finished_returns: List[float] = []
  with Progress(f"eval {game}", share * num_envs, "steps", enabled=progress) as bar:
    while active.any():
      actions = _check_actions(policy(states), num_envs, envs.num_actions)
      states, rewards, terminal, truncated = envs.step(actions)
      episode_return += np.where(active, rewards, 0.0)
      episode_steps += active
      env_steps += active
      ended = active & (terminal | truncated)
      for i in np.flatnonzero(ended):
        returns[i].append(float(episode_return[i]))
        lengths[i].append(int(episode_steps[i]))
        finished_returns.append(float(episode_return[i]))
      if ended.any():
        bar.update(0, f"{len(finished_returns)} episodes, mean return {np.mean(finished_returns):.1f}")
      episode_return[ended] = 0.0
      episode_steps[ended] = 0
      spent = active & (env_steps >= share)
      if finish_episodes:
        done = spent & ended
      else:
        done = spent
        num_cut += int(np.count_nonzero(spent & ~ended))
      bar.update(int(np.count_nonzero(active)))
      active &= ~done
  all_returns = [r for per_env in returns for r in per_env]
  mean_return = float(np.mean(all_returns)) if all_returns else float("nan")
  if not all_returns:
    logging.warning("eval %s: no episode finished within the budget of %d agent steps (%d per game, %d games); "
                    "the mean return is NaN: raise the evaluation steps or lower the number of games", game,
                    int(num_steps), share, num_envs)
  result = EvalResult(
      returns=all_returns, lengths=[n for per_env in lengths for n in per_env],
      env_indices=[i for i, per_env in enumerate(returns) for _ in per_env], num_episodes=len(all_returns),
      steps=int(env_steps.sum()), mean_return=mean_return, num_cut_episodes=num_cut,
      seconds=time.time() - started)
  if progress:
    logging.info("eval %s: %d episodes (%d cut by the budget), %d steps, mean return %.2f (%.0f steps/s, %d envs)",
                 game, result.num_episodes, num_cut, result.steps, result.mean_return, result.steps_per_second,
                 num_envs)
  return result
