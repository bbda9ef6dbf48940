"""Atari 2600 environment with Dopamine's preprocessing, driven on ale-py's `ALEInterface` directly.

`AtariEnv` reproduces Dopamine's `atari_lib.create_atari_environment` + `AtariPreprocessing` (the protocol of
the DQN Replay dataset and of its evaluations, Machado et al. 2018):

* sticky actions: the ALE repeats the previous action with probability ``sticky_action_prob`` (0.25) per frame;
* the minimal action set of the game (Dopamine's ``full_action_space=False``);
* frame skip 4; the observation is the pixel-wise max of the grayscale screens of the last two frames, resized
  to 84x84 with ``cv2.INTER_AREA``; rewards of the 4 frames are summed, unclipped;
* ``terminal`` only at game over, never at a life loss (Dopamine's ``terminal_on_life_loss=False``);
* episodes are cut after ``max_steps_per_episode`` agent steps (27,000 = 108k frames, 30 minutes of play):
  ``truncated`` is then True (Dopamine's runner does this cut; here the environment reports it).

Details kept from Dopamine: at reset the second pooling buffer is zeroed, so the first observation is the
resized first screen; when the game ends inside the frame skip, the remaining frames are not played and the
pooling buffers are not refreshed (Dopamine pools in place, so that last observation mixes older screens; it is
never used for learning). Seeding: the ALE's ``random_seed`` is gymnasium's `AtariEnv.seed_game` word for ``seed``
(from ``np.random.SeedSequence(seed)``) with its top bit cleared (`ale_seed`): ale-py's vector environment, which
batched evaluation uses, takes only non-negative seeds. So ``AtariEnv(game, seed=s)`` plays exactly the frames of
gymnasium's ``ALE/<Game>-v5`` (frameskip=1) after ``reset(seed=s)`` for the seeds whose word is below 2**31
(about half: 1, 4, 6, 8, 11, 13, ...), and the same frames as `BatchedAtariEnv` for every seed.

`BatchedAtariEnv` runs k such games in ale-py's C++ vector environment (`ale_py.ALEVectorInterface`: worker
threads, max-pool, INTER_AREA resize and frame stacking in C++, no per-step Python work per game), with the
same preprocessing set up to be Dopamine's (no no-op starts, no FIRE reset, no reward clipping, no life-loss
terminals): each of its games plays exactly the frames, rewards and episode ends of an `AtariEnv` with the same
seed and the states of a `FrameStack` over them (tested frame by frame).

One difference from Dopamine 4.1.2, on purpose: its gymnasium path also sets the ALE's
``max_num_frames_per_episode`` to 100,000, which ends episodes (as a game over) at 25,000 agent steps, before
the 27,000-step cap. The DQN Replay data was logged by the older Dopamine (atari-py, gym's TimeLimit removed)
that had no such frame cap; ``max_frames_per_episode=None`` (the default) follows that older protocol, and
``max_frames_per_episode=100_000`` gives Dopamine 4.1.2's.

ROMs: by default ale-py's bundled ROMs. The DQN Replay data was logged with the older ROMs of atari-py <= 0.2.5,
and ale-py ships newer dumps that differ for some games; to evaluate on the ROMs of the data, pass ``rom_dir``,
a folder with the ROM files named by `atari_games.ale_rom_id` (``pong.bin``, ``ms_pacman.bin``, as in atari-py's
``atari_roms`` folder). The ALE recognises a ROM by its MD5 or else by that snake_case file name.
"""
import functools
import os
from typing import Optional, Tuple

import cv2
import numpy as np

from batch_rl_dr3 import atari_games
from batch_rl_dr3.errors import ConfigError

SCREEN_SIZE = 84
STACK_SIZE = 4
FRAME_SKIP = 4
STICKY_ACTION_PROB = 0.25
MAX_STEPS_PER_EPISODE = 27_000


def rom_path(game: str, rom_dir: Optional[str] = None) -> str:
  """Path of the ROM file of `game`: ale-py's bundled one, or ``<rom_dir>/<rom id>.bin``.

  Raises:
    ConfigError: unknown game, or the ROM file is not there.
  """
  rom_id = atari_games.ale_rom_id(game)
  if rom_dir is None:
    from ale_py import roms  # pylint: disable=import-outside-toplevel
    path = roms.get_rom_path(rom_id)
    if path is None or not os.path.isfile(path):
      raise ConfigError(f"ale-py has no ROM for {atari_games.canonical_game(game)} (ROM id {rom_id!r}); pass "
                        f"rom_dir=<folder with {rom_id}.bin>")
    return str(path)
  path = os.path.join(rom_dir, f"{rom_id}.bin")
  if not os.path.isfile(path):
    raise ConfigError(f"rom_dir {rom_dir!r} has no ROM file {rom_id}.bin for {atari_games.canonical_game(game)} "
                      f"(expected ROMs named by their snake_case ALE id, as in atari-py's atari_roms folder)")
  return path


def ale_seed(seed: Optional[int]) -> int:
  """The ALE `random_seed` for `seed`: gymnasium's `AtariEnv.seed_game(seed)` word with its top bit cleared.

  Non-negative, as ale-py's vector environment requires (it ignores negative seeds); equal to gymnasium's
  seed whenever that word is below 2**31.
  """
  _, ale_seed_word = np.random.SeedSequence(seed).generate_state(n_words=2)
  return int(ale_seed_word) & 0x7FFFFFFF


def _new_ale(path: str, seed: Optional[int], sticky_action_prob: float, max_frames_per_episode: Optional[int]):
  import ale_py  # pylint: disable=import-outside-toplevel
  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  ale.setFloat("repeat_action_probability", float(sticky_action_prob))
  if max_frames_per_episode is not None:
    ale.setInt("max_num_frames_per_episode", int(max_frames_per_episode))
  ale.setInt("random_seed", ale_seed(seed))
  ale.loadROM(path)
  return ale


@functools.lru_cache(maxsize=None)
def minimal_action_set(game: str, rom_dir: Optional[str] = None) -> Tuple[int, ...]:
  """The ALE action ids of the game's minimal action set; agent action ``i`` is ``minimal_action_set[i]``."""
  ale = _new_ale(rom_path(game, rom_dir), 0, 0.0, None)
  return tuple(int(a.value) for a in ale.getMinimalActionSet())


def num_actions_for_game(game: str, rom_dir: Optional[str] = None) -> int:
  """Number of agent actions of a game (the size of its minimal action set, as in the DQN Replay data)."""
  return len(minimal_action_set(atari_games.canonical_game(game), rom_dir))


class AtariEnv:
  """One Atari game with Dopamine's preprocessing (see the module docstring); observations uint8 [84, 84]."""

  def __init__(self, game: str, *, seed: Optional[int] = 0, sticky_action_prob: float = STICKY_ACTION_PROB,
               max_steps_per_episode: Optional[int] = MAX_STEPS_PER_EPISODE, rom_dir: Optional[str] = None,
               frame_skip: int = FRAME_SKIP, screen_size: int = SCREEN_SIZE,
               max_frames_per_episode: Optional[int] = None):
    """
    Args:
      game: a DQN Replay game, any spelling `atari_games.canonical_game` accepts.
      seed: seeds the ALE (sticky actions and the game's own randomness), as gymnasium's reset(seed=...).
      sticky_action_prob: probability that the ALE repeats the previous action at each frame.
      max_steps_per_episode: agent steps after which an episode is cut (`truncated`); None = no cap.
      rom_dir: folder of ROM files named `<rom id>.bin` (None: ale-py's ROMs).
      frame_skip: frames per agent step.
      screen_size: side of the square observation.
      max_frames_per_episode: the ALE's own frame cap, reported as game over (None: no cap; Dopamine 4.1.2
        uses 100,000).
    """
    self.game = atari_games.canonical_game(game)
    if not 0.0 <= sticky_action_prob <= 1.0:
      raise ConfigError(f"sticky_action_prob must be in [0, 1]; got {sticky_action_prob}")
    if frame_skip <= 0 or screen_size <= 0:
      raise ConfigError(f"frame_skip and screen_size must be positive; got {frame_skip}, {screen_size}")
    if max_steps_per_episode is not None and max_steps_per_episode <= 0:
      raise ConfigError(f"max_steps_per_episode must be positive or None; got {max_steps_per_episode}")
    self.rom_path = rom_path(self.game, rom_dir)
    self.frame_skip = int(frame_skip)
    self.screen_size = int(screen_size)
    self.max_steps_per_episode = max_steps_per_episode
    self.ale = _new_ale(self.rom_path, seed, sticky_action_prob, max_frames_per_episode)
    # ale_py.Action members, indexed by the agent's action.
    self.action_set = tuple(self.ale.getMinimalActionSet())
    height, width = self.ale.getScreenDims()
    # Two full-resolution grayscale screens, pooled in place as Dopamine's `AtariPreprocessing` does.
    self._screens = [np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)]
    self.episode_steps = 0
    self.game_over = False
    self._needs_reset = True

  @property
  def num_actions(self) -> int:
    return len(self.action_set)

  @property
  def lives(self) -> int:
    return int(self.ale.lives())

  def reset(self) -> np.ndarray:
    """Starts a new episode; returns its first observation."""
    self.ale.reset_game()
    self.episode_steps = 0
    self.game_over = False
    self._needs_reset = False
    self.ale.getScreenGrayscale(self._screens[0])
    self._screens[1].fill(0)
    return self._pool_and_resize()

  def step(self, action: int) -> Tuple[np.ndarray, float, bool, bool]:
    """Plays `action` (an index into the minimal action set) for `frame_skip` frames.

    Returns:
      (observation uint8 [84, 84], reward summed over the frames (unclipped), terminal = game over,
       truncated = the episode reached `max_steps_per_episode` without a game over).
    """
    if self._needs_reset:
      raise RuntimeError(f"{self.game}: step() called before reset() or after the episode ended")
    if not 0 <= int(action) < len(self.action_set):
      raise ValueError(f"{self.game}: action {action} out of range [0, {len(self.action_set)})")
    ale_action = self.action_set[int(action)]
    reward = 0.0
    game_over = False
    for frame in range(self.frame_skip):
      reward += self.ale.act(ale_action)
      game_over = self.ale.game_over()
      if frame >= self.frame_skip - 2:
        self.ale.getScreenGrayscale(self._screens[frame - (self.frame_skip - 2)])
      if game_over:
        break
    observation = self._pool_and_resize()
    self.episode_steps += 1
    self.game_over = game_over
    truncated = (not game_over and self.max_steps_per_episode is not None
                 and self.episode_steps >= self.max_steps_per_episode)
    self._needs_reset = game_over or truncated
    return observation, float(reward), bool(game_over), bool(truncated)

  def _pool_and_resize(self) -> np.ndarray:
    if self.frame_skip > 1:
      np.maximum(self._screens[0], self._screens[1], out=self._screens[0])
    return np.asarray(cv2.resize(self._screens[0], (self.screen_size, self.screen_size),
                                 interpolation=cv2.INTER_AREA), dtype=np.uint8)


class FrameStack:
  """The agent state of Dopamine's DQN agent: the last `stack_size` frames, zeros before the episode's first."""

  def __init__(self, stack_size: int = STACK_SIZE, frame_shape: Tuple[int, int] = (SCREEN_SIZE, SCREEN_SIZE)):
    self._state = np.zeros(tuple(frame_shape) + (int(stack_size),), np.uint8)

  def reset(self, first_frame: Optional[np.ndarray] = None) -> np.ndarray:
    """Zeroes the stack (a new episode) and pushes `first_frame` if given; returns the state."""
    self._state.fill(0)
    return self.push(first_frame) if first_frame is not None else self.state

  def push(self, frame: np.ndarray) -> np.ndarray:
    """Drops the oldest frame and appends `frame` as the newest (last channel); returns the state."""
    self._state[..., :-1] = self._state[..., 1:]
    self._state[..., -1] = frame
    return self.state

  @property
  def state(self) -> np.ndarray:
    """A copy of the stack, uint8 [84, 84, stack_size], oldest frame first."""
    return self._state.copy()


# The vector environment's episode cap counts frames; "no cap" is a count no episode reaches.
_NO_FRAME_CAP = 2 ** 30


def default_num_threads(num_envs: int) -> int:
  """Worker threads of a `BatchedAtariEnv`: one per usable core, at most one per game."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return max(1, min(int(num_envs), cores))


class BatchedAtariEnv:
  """`num_envs` Atari games stepped together in ale-py's C++ vector environment (see the module docstring).

  `reset(seeds)` seeds game ``i`` with ``seeds[i]`` (the seed an `AtariEnv` would take) and starts its first
  episode; an instance can be reset with new seeds any number of times (creating the games loads the ROM once per
  game, the costly part: keep the instance). States are Dopamine's agent states, uint8 ``[num_envs, 84, 84, 4]``.
  `step` resets a game whose episode ended in the same call (ale-py's SameStep autoreset): its state is then the
  first state of its next episode (zeros and the first frame), and its reward / terminal / truncated are those of
  the step that ended the old one.
  """

  def __init__(self, game: str, num_envs: int, *, sticky_action_prob: float = STICKY_ACTION_PROB,
               max_steps_per_episode: Optional[int] = MAX_STEPS_PER_EPISODE, rom_dir: Optional[str] = None,
               num_threads: Optional[int] = None):
    import ale_py  # pylint: disable=import-outside-toplevel
    self.game = atari_games.canonical_game(game)
    if int(num_envs) < 1:
      raise ConfigError(f"BatchedAtariEnv: num_envs must be >= 1; got {num_envs}")
    if not 0.0 <= sticky_action_prob <= 1.0:
      raise ConfigError(f"sticky_action_prob must be in [0, 1]; got {sticky_action_prob}")
    if max_steps_per_episode is not None and max_steps_per_episode <= 0:
      raise ConfigError(f"max_steps_per_episode must be positive or None; got {max_steps_per_episode}")
    self.num_envs = int(num_envs)
    frame_cap = _NO_FRAME_CAP if max_steps_per_episode is None else int(max_steps_per_episode) * FRAME_SKIP
    threads = default_num_threads(self.num_envs) if num_threads is None else int(num_threads)
    self._vector = ale_py.ALEVectorInterface(
        rom_path(self.game, rom_dir), self.num_envs, frame_skip=FRAME_SKIP, stack_num=STACK_SIZE,
        img_height=SCREEN_SIZE, img_width=SCREEN_SIZE, grayscale=True, maxpool=True, noop_max=0,
        use_fire_reset=False, episodic_life=False, life_loss_info=False, reward_clipping=False,
        max_episode_steps=frame_cap, repeat_action_probability=float(sticky_action_prob),
        full_action_space=False, num_threads=threads, autoreset_mode="SameStep")
    self.num_actions = len(minimal_action_set(self.game, rom_dir))
    self._paddle_strength = np.ones(self.num_envs, np.float32)

  @staticmethod
  def _states(observations: np.ndarray) -> np.ndarray:
    # ale-py stacks frames first ([k, 4, 84, 84], oldest first); the agent state is [k, 84, 84, 4].
    return np.ascontiguousarray(np.transpose(observations, (0, 2, 3, 1)))

  def reset(self, seeds) -> np.ndarray:
    """Seeds game i with seeds[i] and starts its first episode; returns the states [num_envs, 84, 84, 4]."""
    seeds = [int(s) for s in seeds]
    if len(seeds) != self.num_envs:
      raise ValueError(f"BatchedAtariEnv.reset: {len(seeds)} seeds for {self.num_envs} games")
    observations, _ = self._vector.reset(list(range(self.num_envs)), [ale_seed(s) for s in seeds])
    return self._states(observations)

  def step(self, actions) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Plays one agent step in every game; actions index the minimal action set.

    Returns:
      (states uint8 [k, 84, 84, 4], rewards float64 [k] (unclipped sums over the frame skip), terminal bool [k]
       (game over), truncated bool [k] (the episode reached max_steps_per_episode without a game over)).
    """
    actions = np.asarray(actions, np.int32)
    self._vector.send(actions, self._paddle_strength)
    observations, rewards, terminal, truncated, _ = self._vector.recv()
    return (self._states(observations), np.asarray(rewards, np.float64), np.asarray(terminal, bool),
            np.asarray(truncated, bool))


@functools.lru_cache(maxsize=1)
def batched_env(game: str, num_envs: int, sticky_action_prob: float, max_steps_per_episode: Optional[int],
                rom_dir: Optional[str], num_threads: Optional[int]) -> BatchedAtariEnv:
  """The last `BatchedAtariEnv` built with these settings (evaluations of one run reuse its games: each
  evaluation only reseeds them, which reloads the ROM in the worker threads, instead of building them)."""
  return BatchedAtariEnv(game, num_envs, sticky_action_prob=sticky_action_prob,
                         max_steps_per_episode=max_steps_per_episode, rom_dir=rom_dir, num_threads=num_threads)
