"""`ContinuousExperiment`: the continuous path plugged into the shared runner (`batch_rl_dr3.runner`).

Select it with `run_experiment.create_experiment = @ContinuousExperiment`; configure the data
(`ContinuousExperiment.load_dataset = @load_d4rl`, `@load_minari` or `@load_cog`), the agent (`agent_name` in
{'sac', 'cql_sac', 'brac'}; its options are bound on `Dr3SacAgent`, `Dr3CqlSacAgent`, `BracAgent`), networks
(`FeatureCriticNetwork`, `RegularizedActorNetwork`) and DR3 (`ContinuousExperiment.dr3_coefficient`, its form on `DR3.*`:
continuous/dr3.gin) in gin.
ReBRAC and IQL (`agent_name` 'rebrac' / 'iql') are bound on `ReBracAgent` / `IqlAgent`; the actor regularizers of
every agent on `ActorRegularization` (see gin_configs/continuous/study/).

Checkpointed state: the agent (networks, target networks, optimizers, alpha / CQL alpha, step counter and its
sampling generator) and the replay's index generator; the dataset is reloaded, not checkpointed.
"""
import functools
from typing import Any, Callable, Dict, Optional

from absl import logging
import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import greedy_policy
from tf_agents.trajectories import time_step as ts

from batch_rl_dr3 import diagnostics
from batch_rl_dr3 import labels
from batch_rl_dr3 import regularizers
from batch_rl_dr3.continuous import actor_probes
from batch_rl_dr3.continuous import actor_regularization
from batch_rl_dr3.continuous import brac
from batch_rl_dr3.continuous import cql_sac
from batch_rl_dr3.continuous import evaluation
from batch_rl_dr3.continuous import iql
from batch_rl_dr3.continuous import networks
from batch_rl_dr3.continuous import offline_actor_critic
from batch_rl_dr3.continuous import rebrac
from batch_rl_dr3.continuous import replay as replay_lib
from batch_rl_dr3.continuous import study  # noqa: F401  (registers @study_value for the study's gin files)
from batch_rl_dr3.continuous import sac
from batch_rl_dr3.data import cog  # noqa: F401  (registers @load_cog for gin)
from batch_rl_dr3.data import d4rl
from batch_rl_dr3.data import minari as minari_data  # noqa: F401  (registers @load_minari for gin)
from batch_rl_dr3.data import splits
from batch_rl_dr3.errors import ConfigError

AGENTS = ("sac", "cql_sac", "brac", "rebrac", "iql")
# ReBRAC and IQL are configured on their classes (ReBracAgent.*, IqlAgent.*): their learning rates, gamma and tau
# are per algorithm in the study, so create_continuous_agent's bindings below are for SAC / CQL-SAC / BRAC.
_STUDY_AGENTS = {"rebrac": rebrac.ReBracAgent, "iql": iql.IqlAgent}


def _dr3_label_part(c0: float):
  """(name, settings) of DR3 for the run's label: the penalty object the agents build (`regularizers.DR3` with
  its gin-bound form, see continuous/base.py) for this c0."""
  penalty = regularizers.DR3(coefficient=c0)
  return penalty.label_name, penalty.label_settings()


@gin.configurable(denylist=["time_step_spec", "action_spec", "image_observations", "transitions", "regularization"])
def create_continuous_agent(agent_name: str, time_step_spec, action_spec, image_observations: bool = False,
                            actor_learning_rate: float = 1e-4, critic_learning_rate: float = 3e-4,
                            alpha_learning_rate: float = 1e-4, gamma: float = 0.99,
                            target_update_tau: float = 0.005, dr3_coefficient: float = 0.0,
                            seed: int = 0, transitions=None,
                            regularization: Optional[actor_regularization.ActorRegularization] = None):
  """Builds the agent named `agent_name`: a tf-agents SAC / CQL-SAC / BRAC with our critic/actor networks, or
  ReBRAC / IQL (whose data-derived settings, the HL-Gauss support and the observation statistics, come from
  `transitions`). `regularization` (default: gin's ActorRegularization) goes on the actor of every agent."""
  if agent_name not in AGENTS:
    raise ConfigError(f"ContinuousExperiment.agent_name={agent_name!r}; expected one of {AGENTS}")
  regularization = regularization or actor_regularization.ActorRegularization()
  if agent_name in _STUDY_AGENTS:
    if image_observations:
      raise ConfigError(f"ContinuousExperiment.agent_name={agent_name!r} takes vector observations, not images")
    return _STUDY_AGENTS[agent_name](time_step_spec, action_spec, transitions=transitions,
                                     regularization=regularization, dr3_coefficient=dr3_coefficient, seed=seed)
  observation_spec = time_step_spec.observation
  critic = networks.FeatureCriticNetwork((observation_spec, action_spec), image_observations=image_observations,
                                         seed=seed)
  actor = networks.RegularizedActorNetwork(observation_spec, action_spec, image_observations=image_observations,
                                           regularization=regularization, seed=seed)
  actor.create_variables()
  if regularization.uses_optimizer:
    actor_optimizer = actor_regularization.RegularizedAdam(actor_learning_rate, actor.trainable_variables,
                                                           regularization, seed=seed)
  else:
    actor_optimizer = tf.keras.optimizers.Adam(actor_learning_rate)
  common = dict(
      time_step_spec=time_step_spec, action_spec=action_spec, critic_network=critic, actor_network=actor,
      actor_optimizer=actor_optimizer,
      critic_optimizer=tf.keras.optimizers.Adam(critic_learning_rate),
      alpha_optimizer=tf.keras.optimizers.Adam(alpha_learning_rate),
      gamma=gamma, target_update_tau=target_update_tau, dr3_coefficient=dr3_coefficient, seed=seed)
  if agent_name == "sac":
    agent = sac.Dr3SacAgent(**common)
  elif agent_name == "cql_sac":
    agent = cql_sac.Dr3CqlSacAgent(**common)
  else:
    behavior = networks.RegularizedActorNetwork(observation_spec, action_spec, image_observations=image_observations,
                                     seed=seed + 1, name="BehaviorNetwork")
    agent = brac.BracAgent(behavior_network=behavior, **common)
  agent.initialize()
  return agent


@gin.configurable(denylist=["seed"])
class ContinuousExperiment(tf.Module):
  """Offline training of a continuous-control agent on a fixed transition dataset (the runner's protocol)."""

  def __init__(self, seed: int = 0, task: str = gin.REQUIRED, agent_name: str = "cql_sac",
               load_dataset: Callable[..., Any] = d4rl.load_d4rl, label: Optional[str] = None,
               batch_size: int = 256, dr3_coefficient: float = 0.0, eval_episodes: int = 10,
               eval_max_episode_steps: Optional[int] = None, srank_batch_size: int = 256,
               action_bounds=(-1.0, 1.0), validation_fraction: float = 0.0, validation_selection: str = "random",
               validation_seed: int = 0, actor_diagnostics: bool = False, noisy_evaluation: bool = False,
               plasticity_steps: int = 100, plasticity_batch_size: Optional[int] = None,
               setting: Optional[str] = None, actor_variant: Optional[str] = None):
    super().__init__(name="ContinuousExperiment")
    if agent_name not in AGENTS:
      raise ConfigError(f"ContinuousExperiment.agent_name={agent_name!r}; expected one of {AGENTS}")
    self._seed, self._task, self._agent_name = seed, task, agent_name
    self._setting = setting  # a data setting (e.g. COG's '5pct'), recorded so the report never pools settings
    self._dr3_coefficient = dr3_coefficient
    self._regularization = actor_regularization.ActorRegularization()
    actor_label = self._regularization.short_label()
    # The one label rule (batch_rl_dr3.labels): the actor-regularization variant, DR3's c0 and its form as bound on
    # DR3.*. The variant is `actor_variant` when given (the study's names: 'LN', 'LN+DO+GrN(tuned)'; '' for
    # the algorithm's own baseline, e.g. IQL's dropout on Adroit), else the regularizers on with their settings.
    if actor_variant is None:
      actor_parts = [(actor_label, self._regularization.non_default())] if actor_label else []
    else:
      actor_parts = [(actor_variant, {})] if actor_variant else []
    label_parts = actor_parts + ([_dr3_label_part(dr3_coefficient)] if dr3_coefficient else [])
    self._eval_episodes, self._eval_max_steps = eval_episodes, eval_max_episode_steps
    arrays, self._source = load_dataset(task=task)
    # AntMaze: the data's coordinate frame decides the evaluation maze's (continuous/evaluation.py, README).
    self._antmaze_frame = evaluation.antmaze_frame(self._source) if task.startswith("antmaze") else None
    # The study's validation split (data/splits.py): held-out episodes never enter the replay nor the agent's
    # data statistics; the same split for every training seed unless validation_seed changes.
    arrays, validation, self._validation_info = splits.hold_out_episodes(arrays, validation_fraction,
                                                                         validation_seed, validation_selection)
    self.replay = replay_lib.TransitionReplay(arrays, batch_size, seed=seed, source=self._source)
    if agent_name == "rebrac" or (agent_name == "iql" and dr3_coefficient):
      offline_actor_critic.require_next_action(self.replay.keys, f"{self._source} ({agent_name})")
    observation_spec = self.replay.observation_spec
    self._image_observations = observation_spec.dtype == tf.uint8
    self._observation_dim = int(np.prod(observation_spec.shape))
    action_spec = self.replay.action_spec(*action_bounds)
    self.agent = create_continuous_agent(agent_name, ts.time_step_spec(observation_spec), action_spec,
                                         image_observations=self._image_observations,
                                         dr3_coefficient=dr3_coefficient, seed=seed, transitions=arrays,
                                         regularization=self._regularization)
    # Settings that change the algorithm itself (ReBRAC's squared-error critic) are part of the label too.
    algorithm_settings = self.agent.label_settings() if hasattr(self.agent, "label_settings") else {}
    self._label = labels.run_label(agent_name, algorithm_settings, label_parts, label=label)
    self._train = tf.function(self._train_step_fn)
    rng = np.random.default_rng(seed + 1)
    self._srank_indices = rng.integers(0, self.replay.size, size=min(srank_batch_size, self.replay.size))
    self._greedy = greedy_policy.GreedyPolicy(self.agent.policy)
    self._act = tf.function(self._greedy_action)
    self._noisy_evaluation = noisy_evaluation
    self._probes = (actor_probes.ActorProbes(self.agent, arrays, validation, seed=validation_seed,
                                             plasticity_steps=plasticity_steps,
                                             plasticity_batch_size=plasticity_batch_size)
                    if actor_diagnostics else None)

  def trackables(self) -> Dict[str, Any]:
    return {"agent": self.agent, "replay_generator": self.replay.generator}

  def on_iteration_start(self, iteration: int) -> None:
    del iteration  # the dataset stays resident; nothing to swap

  def _train_step_fn(self):
    return self.agent.train_on_batch(self.replay.sample())

  def before_training(self) -> None:
    """The runner calls this once per process, after restoring, before the compiled train loop."""
    self._pretrain_behavior()

  def train_step(self) -> Dict[str, tf.Tensor]:
    return self._train()

  def _behavior_chunk(self, num_steps):
    for _ in tf.range(num_steps):
      self.agent.train_behavior(replay_lib.to_tf_agents_transition(self.replay.sample()))

  def _pretrain_behavior(self, chunk: int = 1000) -> None:
    """BRAC's behaviour policy: its max-likelihood steps on the data before the agent's first step (brac.py).

    Runs only what a restored checkpoint has not done yet, in compiled chunks of `chunk` steps.
    """
    remaining = getattr(self.agent, "behavior_pretrain_steps_remaining", lambda: 0)()
    if remaining <= 0:
      return
    logging.info("Pre-training the behaviour policy for %d steps (BracAgent.behavior_pretrain_steps).", remaining)
    step = tf.function(self._behavior_chunk)
    while remaining > 0:
      step(tf.constant(min(chunk, remaining)))
      remaining = self.agent.behavior_pretrain_steps_remaining()

  def _greedy_action(self, observation):
    time_step = ts.restart(observation[None], batch_size=1)
    return self._greedy.action(time_step).action[0]

  def evaluate(self, iteration: int) -> Dict[str, float]:
    """Evaluation returns / normalized score; with `noisy_evaluation` the same under action noise 0.2 and state
    noise 0.05 (keys action_noise/..., state_noise/...); with `actor_diagnostics` the §4 actor metrics
    (continuous/actor_probes.py), also when the rollouts are off (eval_episodes=0)."""
    metrics, visited = {}, []
    if self._eval_episodes > 0:
      dtype = self.replay.observation_spec.dtype.as_numpy_dtype
      act = lambda obs: self._act(tf.constant(np.asarray(obs, dtype))).numpy()
      run = functools.partial(evaluation.evaluate, self._task, act, self._eval_episodes,
                              seed=self._seed * 100_003 + iteration * 1000, observation_dim=self._observation_dim,
                              max_episode_steps=self._eval_max_steps,
                              frame=self._antmaze_frame or "d4rl")
      metrics = run(visited=visited if self._probes is not None else None)
      if self._noisy_evaluation:  # the study's values (reference §4)
        for name, noise in actor_probes.noisy_evaluations(self.agent).items():
          metrics.update({f"{name}/{k}": v for k, v in run(**noise).items() if k != "num_episodes"})
    if self._probes is not None:
      metrics.update(self._probes.metrics(visited))
    return metrics

  def diagnostics(self, iteration: int) -> Dict[str, float]:
    """srank (delta = 0.01) of critic 1's features on a fixed batch of the data."""
    del iteration
    batch = self.replay.gather(tf.constant(self._srank_indices))
    _, features = self.agent.critic_features(batch["observation"], batch["action"])
    return {"srank": float(diagnostics.srank(features))}

  def run_info(self) -> Dict[str, Any]:
    info = {"domain": "continuous", "task": self._task, "agent": self._agent_name, "label": self._label,
            "dr3_coefficient": self._dr3_coefficient, "seed": self._seed, "data": self._source}
    if self._validation_info["validation_transitions"]:
      info["validation"] = self._validation_info
    if self._regularization.non_default():
      info["actor_regularization"] = self._regularization.non_default()
    if self._setting:
      info["setting"] = self._setting
    if self._antmaze_frame:
      info["antmaze_frame"] = self._antmaze_frame
    if isinstance(self.agent, brac.BracAgent):
      info["behavior_pretrain_steps"] = self.agent.behavior_pretrain_steps
    return info
