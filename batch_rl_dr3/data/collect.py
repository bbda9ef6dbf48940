r"""Collect an Atari dataset in the DQN Replay format, logged the way the dataset's logger did.

    python -m batch_rl_dr3.data.collect --game Pong --num_transitions 2500 --capacity 1000 --out DIR

plays `atari_env.AtariEnv` (Dopamine's protocol: sticky actions 0.25, frame skip 4, max-pool, 84x84, terminal at
game over) and writes ``DIR/<Game>/<run>/replay_logs/`` exactly as the real dataset is laid out, so
`dqn_replay` / `fixed_replay` (and batch_rl's and Dopamine's own loaders) read it like the real data.

How the data is stored (the TF Dopamine DQN agent + batch_rl's `OutOfGraphLoggedReplayBuffer`):

* every agent step adds one row ``(observation before the action, action, reward, terminal)`` to Dopamine's
  `OutOfGraphReplayBuffer` (stack 4, update horizon 1), whose `add` puts 3 zero padding rows before the
  first row of each episode; the episode's last observation is never stored (as in Dopamine);
* rewards are stored clipped to [-1, 1] (Dopamine's runner clips before the agent stores them); the returns
  reported by `collect` are unclipped;
* ``terminal = 1`` on the last row of an episode: at game over, and also when the episode is cut at
  ``max_steps_per_episode`` (the TF DQN agent's `end_episode` of that era always stored terminal=True);
  the last episode cut by the ``num_transitions`` budget ends with a non-terminal row;
* checkpoint ``k`` (six files, suffix k) is written when ``add_count % capacity == capacity - 1``, i.e. with
  ``add_count = (k + 1) * capacity - 1``, and at the end the partial buffer is written as the next suffix with
  ``add_count`` set to the cursor (batch_rl's `log_final_buffer`). batch_rl's logger tests the condition once per
  `add` call, so when the 3 padding rows of an episode start carry ``add_count`` across ``capacity - 1`` it skips
  that checkpoint (and the rows it held are overwritten before the next one); here the test runs after every
  stored row, which writes the same files whenever batch_rl's logger writes one, and never loses a checkpoint.

Only the six files of the dataset are written (newer Dopamine also saves ``episode_end_indices``, which the
DQN Replay data does not have; Dopamine's `load` accepts its absence). Each checkpoint is first written into
a temporary folder next to ``replay_logs`` and its files are then renamed into place, so a killed collection
leaves complete files only (a checkpoint with fewer than six files is ignored by every loader).

Policies (``--policy``):

* ``dqn`` — a DQN agent that **learns while it logs**, the way the DQN Replay dataset was made (Agarwal et al.
  2020: "the logged replay of a DQN agent trained online", Dopamine's DQN with sticky actions): `LearningDQN`
  acts epsilon-greedily on its Q-network, and after every stored step runs Dopamine's `DQNAgent._train_step`
  schedule on the very buffer being logged (once ``add_count > learning_starts``: a gradient step every
  ``update_period`` agent steps on a batch drawn from that buffer with Dopamine's own
  `sample_transition_batch`, the target network copied every ``target_update_period`` agent steps; epsilon
  decays linearly from 1 to ``epsilon_train`` over ``epsilon_decay_steps`` after the warm-up,
  `dqn_agent.linearly_decaying_epsilon`). The checkpoints therefore hold the replay of a learning agent: early
  suffixes near-random, later ones better. Defaults are Dopamine's `dqn.gin` (the config the dataset was logged
  with) except the optimizer, RMSProp as in that file (lr 2.5e-4, decay 0.95, epsilon 1e-5, centered); scale
  ``learning_starts`` / ``epsilon_decay_steps`` / ``target_update_period`` down with the budget for small datasets.
  Batch indices come from the learner's own seeded generator (Dopamine's `sample_index_batch` rule: uniform in
  the sampling range, rejected until `is_valid_transition`), so a collection is reproducible per seed.
* ``random`` — uniform over the minimal action set (the default).

The library function `collect` takes any policy (states uint8 [1, 84, 84, 4] -> actions [1]) or a `LearningDQN`
as ``learner``, and `epsilon_greedy` wraps a greedy policy.
"""
import dataclasses
import os
import sys
import time
import uuid
from typing import Callable, List, Optional

import batch_rl_dr3  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import batch_rl_dr3.quiet  # noqa: F401  (before TensorFlow: drops start-up lines that are never news)
import numpy as np
from absl import app
from absl import flags

from batch_rl_dr3 import atari_env
from batch_rl_dr3 import atari_games
from batch_rl_dr3.data import dqn_replay
from batch_rl_dr3.errors import ConfigError, DataError, first_line

Policy = Callable[[np.ndarray], np.ndarray]

_TMP_PREFIX = ".replay_logs.partial-"


def random_policy(num_actions: int, seed: int = 0) -> Policy:
  """Uniform actions over [0, num_actions), from its own seeded generator."""
  rng = np.random.default_rng(seed)
  return lambda states: rng.integers(num_actions, size=len(states)).astype(np.int32)


def epsilon_greedy(greedy_policy: Policy, num_actions: int, epsilon: float, seed: int = 0) -> Policy:
  """Each row: a uniform action with probability `epsilon`, else `greedy_policy`'s action."""
  if not 0.0 <= epsilon <= 1.0:
    raise ConfigError(f"epsilon must be in [0, 1]; got {epsilon}")
  rng = np.random.default_rng(seed)

  def policy(states: np.ndarray) -> np.ndarray:
    explore = rng.random(len(states)) < epsilon
    random_actions = rng.integers(num_actions, size=len(states))
    if explore.all():
      return random_actions.astype(np.int32)
    greedy = np.asarray(greedy_policy(states)).astype(np.int32)
    return np.where(explore, random_actions, greedy).astype(np.int32)

  return policy


def linearly_decaying_epsilon(decay_period: int, step: int, warmup_steps: int, epsilon: float) -> float:
  """Dopamine's `dqn_agent.linearly_decaying_epsilon`: 1 during warm-up, then linear down to `epsilon`."""
  steps_left = decay_period + warmup_steps - step
  bonus = (1.0 - epsilon) * steps_left / max(decay_period, 1)
  return float(epsilon + np.clip(bonus, 0.0, 1.0 - epsilon))


class LearningDQN:
  """An online DQN that learns from the replay it is logging (module docstring): `act`, then `observe`.

  Defaults: Dopamine `dqn.gin` (gamma 0.99, update horizon 1, min_replay_history 20000, update_period 4,
  target_update_period 8000, epsilon_train 0.01, epsilon_decay_period 250000, RMSProp lr 0.00025 decay 0.95
  epsilon 1e-5 centered, batch 32; Huber loss), the Nature torso of `networks.DQNNetwork`.
  """

  def __init__(self, num_actions: int, *, seed: int = 0, learning_starts: int = 20_000, update_period: int = 4,
               target_update_period: int = 8_000, epsilon_train: float = 0.01,
               epsilon_decay_steps: int = 250_000, batch_size: int = 32, gamma: float = 0.99,
               learning_rate: float = 2.5e-4):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from batch_rl_dr3 import losses, networks  # pylint: disable=import-outside-toplevel
    for name, value in (("learning_starts", learning_starts), ("update_period", update_period),
                        ("target_update_period", target_update_period), ("batch_size", batch_size),
                        ("epsilon_decay_steps", epsilon_decay_steps)):
      if value < (0 if name == "learning_starts" else 1):
        raise ConfigError(f"--{name}={value}; expected {'>= 0' if name == 'learning_starts' else '>= 1'}")
    if not 0.0 <= epsilon_train <= 1.0:
      raise ConfigError(f"--epsilon_train={epsilon_train}; expected a value in [0, 1]")
    self.num_actions = int(num_actions)
    self.learning_starts, self.update_period = int(learning_starts), int(update_period)
    self.target_update_period, self.batch_size = int(target_update_period), int(batch_size)
    self.epsilon_train, self.epsilon_decay_steps = float(epsilon_train), int(epsilon_decay_steps)
    self.training_steps = 0  # agent steps seen (Dopamine's `training_steps`)
    self.gradient_steps = 0
    self._rng = np.random.default_rng([seed, 0xd9])
    tf.keras.utils.set_random_seed(seed)  # tf-keras initializers draw their seeds from Python's `random`
    self.online = networks.DQNNetwork(self.num_actions, name="online")
    self.target = networks.DQNNetwork(self.num_actions, name="target")
    dummy = tf.zeros((1, 84, 84, atari_env.STACK_SIZE), tf.uint8)
    self.online(dummy)
    self.target(dummy)
    self._sync()
    optimizer = tf.keras.optimizers.legacy.RMSprop(learning_rate=learning_rate, rho=0.95, momentum=0.0,
                                                   epsilon=1e-5, centered=True)
    variables = self.online.trainable_variables

    @tf.function
    def train(state, action, reward, next_state, terminal):
      with tf.GradientTape() as tape:
        chosen = losses.select_actions(self.online(state).q_values, action)
        next_q = tf.reduce_max(self.target(next_state).q_values, axis=1)
        target = losses.bootstrap_target(reward, tf.fill(tf.shape(reward), gamma), terminal, next_q)
        loss = tf.reduce_mean(losses.td_huber_loss(chosen, target))
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    self._train = train
    self._greedy = tf.function(lambda states: tf.argmax(self.online(states).q_values, axis=1, output_type=tf.int32))
    self.last_loss = float("nan")

  def _sync(self) -> None:
    for target, online in zip(self.target.variables, self.online.variables):
      target.assign(online)

  def epsilon(self) -> float:
    return linearly_decaying_epsilon(self.epsilon_decay_steps, self.training_steps, self.learning_starts,
                                     self.epsilon_train)

  def act(self, states: np.ndarray) -> np.ndarray:
    """Epsilon-greedy actions int32 [B] for uint8 states [B, 84, 84, 4]."""
    explore = self._rng.random(len(states)) < self.epsilon()
    random_actions = self._rng.integers(self.num_actions, size=len(states)).astype(np.int32)
    if explore.all():
      return random_actions
    return np.where(explore, random_actions, np.asarray(self._greedy(states))).astype(np.int32)

  def parameters(self) -> List[np.ndarray]:
    return [v.numpy() for v in self.online.trainable_variables]

  def _sample_indices(self, buffer) -> np.ndarray:
    """Dopamine's `sample_index_batch` rule (uniform in the sampling range, rejection by
    `is_valid_transition`), drawn from this learner's generator instead of numpy's global one."""
    capacity, cursor = buffer._replay_capacity, buffer.cursor()  # pylint: disable=protected-access
    stack, horizon = buffer._stack_size, buffer._update_horizon  # pylint: disable=protected-access
    low = cursor - capacity + stack - 1 if buffer.is_full() else stack - 1
    high = cursor - horizon
    indices = []
    for _ in range(1000 + self.batch_size):
      index = int(self._rng.integers(low, high)) % capacity
      if buffer.is_valid_transition(index):
        indices.append(index)
        if len(indices) == self.batch_size:
          return np.array(indices, np.int32)
    raise DataError(f"collect: found only {len(indices)} valid transitions for a batch of {self.batch_size}; "
                    f"raise --learning_starts")

  def observe(self, buffer) -> None:
    """Dopamine's `DQNAgent._train_step` after a stored step: train on the buffer every update_period steps
    once it holds more than learning_starts rows, copy the target every target_update_period steps."""
    can_sample = buffer.is_full() or buffer.cursor() - 1 > atari_env.STACK_SIZE - 1  # Dopamine's RuntimeError
    if int(buffer.add_count) > self.learning_starts and can_sample:
      if self.training_steps % self.update_period == 0:
        elements = buffer.sample_transition_batch(self.batch_size, indices=self._sample_indices(buffer))
        batch = {e.name: value for e, value in zip(buffer.get_transition_elements(self.batch_size), elements)}
        self.last_loss = float(self._train(batch["state"], batch["action"], batch["reward"].astype(np.float32),
                                           batch["next_state"], batch["terminal"].astype(np.float32)))
        self.gradient_steps += 1
      if self.training_steps % self.target_update_period == 0:
        self._sync()
    self.training_steps += 1


def _write_checkpoint_atomically(replay_logs: str, suffix: int, arrays: dict) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  staging = os.path.join(os.path.dirname(replay_logs.rstrip("/")), f"{_TMP_PREFIX}{suffix}-{uuid.uuid4().hex[:8]}")
  dqn_replay.save_checkpoint(staging, suffix, arrays)
  for name in dqn_replay.ARRAY_NAMES:
    tf.io.gfile.rename(dqn_replay.checkpoint_path(staging, name, suffix),
                       dqn_replay.checkpoint_path(replay_logs, name, suffix), overwrite=True)
  tf.io.gfile.rmtree(staging)


def _logged_buffer(replay_logs: str, capacity: int, on_checkpoint: Callable[[int, int], None]):
  """A Dopamine `OutOfGraphReplayBuffer` that writes checkpoint k when add_count reaches (k+1)*capacity - 1."""
  from dopamine.tf.replay_memory import circular_replay_buffer  # pylint: disable=import-outside-toplevel

  class LoggedReplayBuffer(circular_replay_buffer.OutOfGraphReplayBuffer):
    """Dopamine's buffer plus batch_rl's logging rule, tested after every stored row (padding included)."""

    def __init__(self):
      super().__init__(observation_shape=dqn_replay.OBSERVATION_SHAPE, stack_size=atari_env.STACK_SIZE,
                       replay_capacity=capacity, batch_size=32, update_horizon=1, gamma=0.99)
      # Dopamine allocates with np.empty: rows not yet written (the last row of checkpoint 0) would hold
      # leftover memory and make the files differ from run to run. Zeros, as the real data has there.
      for array in self._store.values():
        array.fill(0)
      self.num_logged = 0

    def _add_transition(self, transition):
      super()._add_transition(transition)
      if int(self.add_count) % self._replay_capacity == self._replay_capacity - 1:
        self._log(int(self.add_count))

    def log_final(self) -> None:
      self._log(self.cursor())

    def _log(self, add_count: int) -> None:
      arrays = {name: self._store[name] for name in dqn_replay.STORE_NAMES}
      arrays["add_count"] = np.array(add_count, np.int64)
      arrays["invalid_range"] = np.asarray(self.invalid_range, np.int64)
      _write_checkpoint_atomically(replay_logs, self.num_logged, arrays)
      on_checkpoint(self.num_logged, add_count)
      self.num_logged += 1

  return LoggedReplayBuffer()


@dataclasses.dataclass(frozen=True)
class CollectResult:
  replay_logs: str               # <out>/<Game>/<run>/replay_logs
  suffixes: List[int]            # checkpoints written, in order
  num_transitions: int           # agent steps stored (padding rows not counted)
  returns: List[float]           # unclipped returns of the finished episodes
  num_episodes: int              # episodes started (the last may be cut by the budget)
  add_count: int                 # rows added to the buffer, padding included


def collect(game: str, num_transitions: int, out_dir: str, *, run: int = 1, capacity: int = 1_000_000,
            policy: Optional[Policy] = None, learner: Optional[LearningDQN] = None, seed: int = 0,
            max_steps_per_episode: Optional[int] = atari_env.MAX_STEPS_PER_EPISODE,
            sticky_action_prob: float = atari_env.STICKY_ACTION_PROB, rom_dir: Optional[str] = None,
            progress: bool = True) -> CollectResult:
  """Plays `num_transitions` agent steps of `game` and logs them as DQN Replay checkpoints (module docstring).

  Args:
    game: a DQN Replay game (any spelling `atari_games.canonical_game` accepts).
    num_transitions: agent steps to store (exactly; the last episode is cut there).
    out_dir: dataset root; files go to `<out_dir>/<Game>/<run>/replay_logs`, which must not hold checkpoints.
    run: the run folder name (the real dataset has runs 1..5).
    capacity: rows per checkpoint (1,000,000 in the real data; the buffer holds that many 84x84 frames).
    policy: states uint8 [1, 84, 84, 4] -> actions [1]; None = uniform random seeded with `seed`.
    learner: a `LearningDQN` that acts and learns from the buffer being logged (instead of `policy`).
    seed: seeds the environment (and the default random policy).
    max_steps_per_episode: episodes are cut after this many agent steps (stored as terminal).
    sticky_action_prob, rom_dir: see `atari_env.AtariEnv`.
    progress: print a line per checkpoint and every 10 % of the budget.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  game = atari_games.canonical_game(game)
  if int(num_transitions) < 1:
    raise ConfigError(f"--num_transitions must be >= 1; got {num_transitions}")
  if int(capacity) < atari_env.STACK_SIZE + 1:
    raise ConfigError(f"--capacity must be >= {atari_env.STACK_SIZE + 1} (stack size + update horizon); "
                      f"got {capacity}")
  num_transitions, capacity = int(num_transitions), int(capacity)
  replay_logs = dqn_replay.replay_logs_dir(out_dir, game, run)
  if tf.io.gfile.isdir(replay_logs) and dqn_replay.list_checkpoints(replay_logs):
    raise ConfigError(f"{replay_logs} already holds checkpoints {dqn_replay.list_checkpoints(replay_logs)}; "
                      f"choose another --out or --run (or delete it) instead of mixing two collections")
  run_dir = os.path.dirname(replay_logs)
  tf.io.gfile.makedirs(replay_logs)
  for name in tf.io.gfile.listdir(run_dir):  # staging folders left by a killed collection
    if name.startswith(_TMP_PREFIX):
      tf.io.gfile.rmtree(os.path.join(run_dir, name.rstrip("/")))

  env = atari_env.AtariEnv(game, seed=seed, sticky_action_prob=sticky_action_prob,
                           max_steps_per_episode=max_steps_per_episode, rom_dir=rom_dir)
  if learner is not None:
    if policy is not None:
      raise ConfigError("collect: pass a policy or a learner, not both")
    if learner.num_actions != env.num_actions:
      raise ConfigError(f"collect: the learner has {learner.num_actions} actions, {game} has {env.num_actions}")
    policy = learner.act
  if policy is None:
    policy = random_policy(env.num_actions, seed)
  started = time.time()

  def report(suffix: int, add_count: int) -> None:
    if progress:
      print(f"collect {game}: checkpoint {suffix} written (add_count {add_count}) after {stored:,} "
            f"transitions, {time.time() - started:.0f} s", flush=True)

  buffer = _logged_buffer(replay_logs, capacity, report)
  stack = atari_env.FrameStack()
  stored, num_episodes, returns = 0, 0, []
  report_every = max(1, num_transitions // 10)
  while stored < num_transitions:
    observation = env.reset()
    state = stack.reset(observation)
    num_episodes += 1
    episode_return = 0.0
    while stored < num_transitions:
      action = int(np.asarray(policy(state[None])).reshape(-1)[0])
      next_observation, reward, terminal, truncated = env.step(action)
      episode_return += reward
      episode_ended = terminal or truncated
      stored += 1
      buffer.add(observation, action, np.float32(np.clip(reward, -1.0, 1.0)), int(episode_ended))
      if learner is not None:
        learner.observe(buffer)
      if progress and stored % report_every == 0:
        print(f"collect {game}: {stored:,}/{num_transitions:,} transitions, {len(returns)} episodes done"
              + (f" (mean return {np.mean(returns):.1f}, last 10: {np.mean(returns[-10:]):.1f})" if returns else "")
              + (f", learner: {learner.gradient_steps} gradient steps, epsilon {learner.epsilon():.3f}, "
                 f"loss {learner.last_loss:.4f}" if learner is not None else ""), flush=True)
      if episode_ended:
        returns.append(episode_return)
        break
      observation = next_observation
      state = stack.push(observation)
  buffer.log_final()
  return CollectResult(replay_logs=replay_logs, suffixes=list(range(buffer.num_logged)),
                       num_transitions=stored, returns=returns, num_episodes=num_episodes,
                       add_count=int(buffer.add_count))


FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("game", None, "DQN Replay game, e.g. Pong or MsPacman.")
  flags.DEFINE_integer("num_transitions", None, "Agent steps to store.")
  flags.DEFINE_string("out", None, "Dataset root: writes <out>/<Game>/<run>/replay_logs.")
  flags.DEFINE_integer("run", 1, "Run folder name under <out>/<Game>.")
  flags.DEFINE_integer("capacity", 1_000_000, "Rows per checkpoint (the real data: 1,000,000, about 7 GB of "
                       "frames in memory).")
  flags.DEFINE_enum("policy", "random", ["random", "dqn"], "Behaviour policy: 'random' (uniform over the "
                    "minimal action set) or 'dqn' (a DQN that learns from the replay it logs, as the DQN Replay "
                    "data was made; the flags below set its schedule).")
  flags.DEFINE_integer("learning_starts", 20_000, "dqn: rows in the buffer before learning and epsilon decay "
                       "start (Dopamine dqn.gin min_replay_history).")
  flags.DEFINE_integer("update_period", 4, "dqn: agent steps per gradient step (Dopamine dqn.gin).")
  flags.DEFINE_integer("target_update_period", 8_000, "dqn: agent steps between target copies (Dopamine dqn.gin).")
  flags.DEFINE_float("epsilon_train", 0.01, "dqn: final exploration epsilon (Dopamine dqn.gin).")
  flags.DEFINE_integer("epsilon_decay_steps", 250_000, "dqn: agent steps over which epsilon decays from 1 "
                       "(Dopamine dqn.gin epsilon_decay_period).")
  flags.DEFINE_integer("seed", 0, "Seeds the environment and the policy.")
  flags.DEFINE_integer("max_steps_per_episode", atari_env.MAX_STEPS_PER_EPISODE, "Episode cap in agent steps.")
  flags.DEFINE_float("sticky_action_prob", atari_env.STICKY_ACTION_PROB, "ALE repeat-action probability.")
  flags.DEFINE_string("rom_dir", None, "Folder of ROMs named <rom_id>.bin (default: ale-py's ROMs).")
  flags.mark_flags_as_required(["game", "num_transitions", "out"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    learner = None
    if FLAGS.policy == "dqn":
      learner = LearningDQN(atari_env.num_actions_for_game(FLAGS.game, FLAGS.rom_dir), seed=FLAGS.seed,
                            learning_starts=FLAGS.learning_starts, update_period=FLAGS.update_period,
                            target_update_period=FLAGS.target_update_period, epsilon_train=FLAGS.epsilon_train,
                            epsilon_decay_steps=FLAGS.epsilon_decay_steps)
    result = collect(FLAGS.game, FLAGS.num_transitions, FLAGS.out, run=FLAGS.run, capacity=FLAGS.capacity,
                     learner=learner, seed=FLAGS.seed, max_steps_per_episode=FLAGS.max_steps_per_episode,
                     sticky_action_prob=FLAGS.sticky_action_prob, rom_dir=FLAGS.rom_dir)
  except (ConfigError, DataError) as e:
    print(f"error: {first_line(e)}", file=sys.stderr)
    sys.exit(1)
  mean = f"{np.mean(result.returns):.1f}" if result.returns else "n/a"
  print(f"Wrote checkpoints {result.suffixes} ({result.num_transitions:,} transitions, {result.num_episodes} "
        f"episodes, mean return {mean}) to {result.replay_logs}"
        + (f"; the DQN learner made {learner.gradient_steps} gradient steps" if learner is not None else ""))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
