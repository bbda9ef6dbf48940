"""The Atari domain for the runner: fixed replay + in-graph sampler + agent + ALE evaluation.

Bound in gin as `run_experiment.create_experiment = @AtariExperiment` (the default in train.py).
The dataset comes from `load_dataset` (gin: `load_dataset.setting`, `load_dataset.data_dir`, ...), the agent
from `create_agent` (gin: `create_agent.*`, `OfflineAgent.*`), the evaluation protocol from `evaluate`.
"""
from typing import Any, Dict, Optional

import gin
import numpy as np
import tensorflow as tf

from batch_rl_dr3 import atari_games
from batch_rl_dr3 import evaluation
from batch_rl_dr3 import labels
from batch_rl_dr3 import reference_scores as scores
from batch_rl_dr3.agents import create_agent
from batch_rl_dr3.atari_env import num_actions_for_game
from batch_rl_dr3.data import fixed_replay
from batch_rl_dr3.errors import ConfigError, DataError

# Bindings that AtariExperiment passes explicitly (so gin would silently ignore them) -> the knob to use.
SHADOWED_BINDINGS = {
    "load_dataset.game": "AtariExperiment.game (--game)",
    "load_dataset.run": "AtariExperiment.data_run (--run)",
    "load_dataset.seed": "run_experiment.seed (--seed)",
    "InGraphSampler.batch_size": "AtariExperiment.batch_size",
    "InGraphSampler.seed": "run_experiment.seed (--seed)",
    "evaluate.num_steps": "AtariExperiment.evaluation_steps",
    "evaluate.max_steps_per_episode": "AtariExperiment.max_steps_per_episode",
    "evaluate.seed": "run_experiment.seed (--seed)",
    "evaluate.num_envs": "AtariExperiment.num_eval_envs",
}


def refuse_shadowed_bindings() -> None:
  for binding, knob in SHADOWED_BINDINGS.items():
    try:
      value = gin.query_parameter(binding)
    except ValueError:
      continue
    raise ConfigError(f"gin: {binding} = {value!r} would be ignored in an Atari run; bind {knob} instead")


def derived_seed(seed: int, stream: str) -> int:
  """Independent seeds for the run's random streams (sampler, agent, diagnostics batch, evaluation)."""
  key = [seed, *stream.encode()]
  return int(np.random.SeedSequence(key).generate_state(1, np.uint32)[0] >> 1)


@gin.configurable(denylist=["seed"])
class AtariExperiment:
  """One game, one dataset, one agent, evaluated with the DQN Replay protocol."""

  def __init__(self, seed: int = 0, game: str = gin.REQUIRED, data_run: int = 1,
               agent_name: str = "cql_qr", batch_size: int = 32, evaluation_steps: int = 125_000,
               epsilon_eval: float = 0.001, max_steps_per_episode: int = 27_000, num_eval_envs: int = 32,
               diagnostics_batch_size: int = 512, label: Optional[str] = None):
    """
    Args:
      seed: the run's seed.
      game: DQN Replay game name (e.g. 'Pong'); unknown names fail here with close matches.
      data_run: which logged DQN run (1..5) of the game to read.
      agent_name: 'dqn', 'rem' or 'cql_qr'.
      batch_size: transitions per gradient step.
      evaluation_steps: agent steps of evaluation per iteration (0 turns evaluation off): a hard limit, shared
        evenly by the games (see `evaluation`; `evaluate.finish_episodes = True` is Dopamine's accounting).
      epsilon_eval: epsilon of the evaluation policy (0.001 in the DQN Replay papers).
      max_steps_per_episode: evaluation episode cap (27,000 agent steps = 108k frames).
      num_eval_envs: games stepped in lockstep during evaluation (one batched policy call a step); 32: about 4x
        the agent steps/s of one game on 2 CPU cores (benchmarks/bench_eval.py). Each game gets
        evaluation_steps / num_eval_envs steps; episodes the budget cuts are not counted (eval/cut_episodes).
      diagnostics_batch_size: size of the fixed batch on which srank and feature norms are measured.
      label: the name the report groups this run under; default: `labels.run_label` of the agent, its
        penalties and every setting that differs from the defaults, e.g. 'CQL+DR3 (c0=0.03)'.
    """
    refuse_shadowed_bindings()
    if num_eval_envs < 1 or max_steps_per_episode < 1 or evaluation_steps < 0:
      raise ConfigError(f"AtariExperiment: num_eval_envs={num_eval_envs}, max_steps_per_episode="
                        f"{max_steps_per_episode}, evaluation_steps={evaluation_steps}; expected >= 1, >= 1, >= 0")
    self.game = atari_games.canonical_game(game)
    self.seed = seed
    self.agent_name = agent_name
    self.evaluation_steps = evaluation_steps
    self.epsilon_eval = epsilon_eval
    self.max_steps_per_episode = max_steps_per_episode
    self.num_eval_envs = num_eval_envs
    self.data_run = data_run
    self.label = label
    num_actions = num_actions_for_game(self.game)
    self.replay = fixed_replay.load_dataset(game=self.game, run=data_run, seed=seed)
    self._check_actions(num_actions)
    self.sampler = fixed_replay.InGraphSampler(self.replay, batch_size=batch_size,
                                               seed=derived_seed(seed, "sampler"))
    self.agent = create_agent(agent_name, num_actions, self.sampler, seed=derived_seed(seed, "agent"),
                              data_setting=self.replay.setting)
    self.batch_size = batch_size
    if self.agent.jit_compile:
      self.sampler.frame_unpacking = "swar"  # read when the step is traced; the faster one inside XLA
    # A fixed batch (the same for the whole run) on which srank / feature norms are measured each iteration.
    self._diagnostics_batch = fixed_replay.InGraphSampler(
        self.replay, batch_size=diagnostics_batch_size, seed=derived_seed(seed, "diagnostics")).sample()

  def _check_actions(self, num_actions: int) -> None:
    """Dataset actions must index the game's minimal action set (a folder of another game would not)."""
    actions = self.replay.dataset_actions()
    if actions.size and (actions.max() >= num_actions or actions.min() < 0):
      raise DataError(f"{self.replay.directory}: stored actions range over [{actions.min()}, {actions.max()}] but "
                      f"{self.game} has {num_actions} actions; is this the {self.game} dataset?")

  def trackables(self) -> Dict[str, Any]:
    return {"agent": self.agent, "sampler": self.sampler}

  def initial_weights(self) -> Dict[str, Any]:
    """What `run_experiment.init_from` copies from another run: the Q-function (online and target networks),
    under the names the run's checkpoint uses for them."""
    return {"agent": tf.train.Checkpoint(online_network=self.agent.online_network,
                                         target_network=self.agent.target_network)}

  def on_iteration_start(self, iteration: int) -> None:
    self.sampler.on_iteration_start(iteration)

  def train_step(self):
    return self.agent.train_step()

  def reinitialization_steps(self):
    return self.agent.reinitialization_steps()

  def reinitialize(self, gradient_step: int) -> None:
    self.agent.reinitialize(gradient_step)

  def diagnostics(self, iteration: int) -> Dict[str, float]:
    return {k: float(np.asarray(v))
            for k, v in self.agent.representation_diagnostics(self._diagnostics_batch).items()}

  def _policy(self, states: np.ndarray) -> np.ndarray:
    return np.asarray(self.agent.select_action(states, self.epsilon_eval))

  def evaluate(self, iteration: int) -> Dict[str, float]:
    if self.evaluation_steps <= 0:
      return {}
    result = evaluation.evaluate(
        self._policy, self.game, num_steps=self.evaluation_steps,
        max_steps_per_episode=self.max_steps_per_episode,
        seed=derived_seed(self.seed, f"evaluation/{iteration}"), num_envs=self.num_eval_envs)
    metrics = {"return": float(result.mean_return), "num_episodes": float(result.num_episodes),
               "cut_episodes": float(result.num_cut_episodes), "steps": float(result.steps)}
    if scores.has_human_score(self.game):
      metrics["normalized_score"] = float(scores.human_normalized_score(self.game, result.mean_return))
    return metrics

  def label_parts(self) -> Dict[str, Any]:
    """The agent's label parts plus the experiment's own settings that differ from their defaults."""
    parts = self.agent.label_parts()
    parts["settings"].update(labels.differing(
        {"batch_size": self.batch_size, "subset": self.replay.subset},
        {"batch_size": labels.constructor_defaults(AtariExperiment)["batch_size"],
         "subset": labels.function_defaults(fixed_replay.load_dataset)["subset"]}))
    return parts

  def run_info(self) -> Dict[str, Any]:
    parts = self.label_parts()
    dr3 = sum(p.coefficient.numpy() for p in self.agent.penalties if p.label_name == "DR3")
    dataset = self.replay.describe()
    return {"domain": "atari", "game": self.game, "agent": self.agent_name,
            "label": labels.label_from_parts(self.agent_name, parts, label=self.label), "label_parts": parts,
            "dr3_coefficient": float(dr3), "backup": self.agent.backup, "setting": self.replay.setting,
            "data_run": self.data_run, "num_transitions": int(self.replay.num_transitions),
            "dataset": {k: dataset[k] for k in ("checkpoints", "transitions_per_checkpoint", "subset",
                                                "subset_seed")}}
