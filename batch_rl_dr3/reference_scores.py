"""Reference scores and normalized scores: Atari (random/human) and D4RL (REF_MIN/REF_MAX).

The ground layer of the package: training, evaluation and the report all read these tables from here (never
through `analysis/`).

Conventions (both x100, i.e. percent, as the DR3 paper prints them: "IQM 56.9" means 56.9 % of the way from a
random to a human player, and Table 2's D4RL numbers are D4RL's normalized score times 100):

  human_normalized_score(game, raw) = 100 * (raw - random) / (human - random)
  d4rl_normalized_score(env, raw)   = 100 * (raw - REF_MIN_SCORE) / (REF_MAX_SCORE - REF_MIN_SCORE)

Atari values: google-deepmind/dqn_zoo `dqn_zoo/atari_data.py` (`_ATARI_DATA`, the Atari-57 random and human
scores), keyed here by the CamelCase game names of the DQN Replay folders. Five DQN Replay games are not in
Atari-57 and have no human score (AirRaid, Carnival, ElevatorAction, JourneyEscape, Pooyan):
`human_normalized_score` raises a ConfigError for them rather than inventing a number; `has_human_score` tells
callers beforehand (the report lists such games with raw scores only and leaves them out of aggregates).

D4RL values: Farama-Foundation/D4RL `d4rl/infos.py`. In that file the Gym-MuJoCo v1/v2 and Adroit v1 entries
are copies of the v0 ones, made in a loop; the table below is built the same way.
"""
from typing import Dict, Optional, Tuple, Union

import numpy as np

from batch_rl_dr3.atari_games import canonical_game
from batch_rl_dr3.errors import ConfigError

ArrayOrFloat = Union[float, np.ndarray]

# Game -> (random score, human score), from dqn_zoo's `_ATARI_DATA` (snake_case there, CamelCase here).
ATARI_RANDOM_AND_HUMAN_SCORES: Dict[str, Tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "Asteroids": (719.1, 47388.7),
    "Atlantis": (12850.0, 29028.1),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "Centipede": (2090.9, 12017.0),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "Defender": (2874.5, 18688.9),
    "DemonAttack": (152.1, 1971.0),
    "DoubleDunk": (-18.6, -16.4),
    "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4),
    "Hero": (1027.0, 30826.4),
    "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MontezumaRevenge": (0.0, 4753.3),
    "MsPacman": (307.3, 6951.6),
    "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6),
    "Pitfall": (-229.4, 6463.7),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "Riverraid": (1338.5, 17118.0),
    "RoadRunner": (11.5, 7845.0),
    "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7),
    "Skiing": (-17098.1, -4336.9),
    "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7),
    "StarGunner": (664.0, 10250.0),
    "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3),
    "TimePilot": (3568.0, 5229.2),
    "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11693.2),
    "Venture": (0.0, 1187.5),
    # dqn_zoo notes that other evaluation protocols can give random > human here.
    "VideoPinball": (16256.9, 17667.9),
    "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9),
    "Zaxxon": (32.5, 9173.3),
}

# DQN Replay games outside Atari-57: no human reference exists.
GAMES_WITHOUT_HUMAN_SCORE = ("AirRaid", "Carnival", "ElevatorAction", "JourneyEscape", "Pooyan")


def has_human_score(game: str) -> bool:
  """Whether `game` (any spelling canonical_game accepts) has random and human reference scores."""
  return canonical_game(game) in ATARI_RANDOM_AND_HUMAN_SCORES


def random_and_human_score(game: str) -> Tuple[float, float]:
  name = canonical_game(game)
  if name not in ATARI_RANDOM_AND_HUMAN_SCORES:
    raise ConfigError(
        f"Atari game {name!r} has no human reference score (it is not one of the Atari-57 games of "
        f"dqn_zoo/atari_data.py); its human-normalized score is undefined. Games without one: "
        f"{', '.join(GAMES_WITHOUT_HUMAN_SCORE)}.")
  return ATARI_RANDOM_AND_HUMAN_SCORES[name]


def human_normalized_score(game: str, raw: ArrayOrFloat) -> ArrayOrFloat:
  """100 * (raw - random) / (human - random); a float for a float, an array for an array."""
  random_score, human_score = random_and_human_score(game)
  normalized = 100.0 * (np.asarray(raw, dtype=np.float64) - random_score) / (human_score - random_score)
  return float(normalized) if np.ndim(normalized) == 0 else normalized


# ---------------------------------------------------------------- D4RL
_MUJOCO_REF = {  # env -> (REF_MIN_SCORE, REF_MAX_SCORE) of '<env>-random-v0', copied to every kind/version
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
_MUJOCO_KINDS_V0 = ("random", "medium", "expert", "medium-replay", "medium-expert")
_MUJOCO_KINDS_V1_V2 = _MUJOCO_KINDS_V0 + ("full-replay",)
_ADROIT_REF = {  # '<env>-human-v0' values, copied to the v1 datasets
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "door": (-56.512833, 2880.5693087298737),
}
_ANTMAZE_VARIANTS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
_MAZE2D_REF = {
    "maze2d-open-v0": (0.01, 20.66),
    "maze2d-umaze-v1": (23.85, 161.86),
    "maze2d-medium-v1": (13.13, 277.39),
    "maze2d-large-v1": (6.7, 273.99),
    "maze2d-open-dense-v0": (11.17817, 27.166538620695782),
    "maze2d-umaze-dense-v1": (68.537689, 193.66285642381482),
    "maze2d-medium-dense-v1": (44.264742, 297.4552547777125),
    "maze2d-large-dense-v1": (30.569041, 303.4857382709002),
}


def _d4rl_reference_table() -> Dict[str, Tuple[float, float]]:
  table = dict(_MAZE2D_REF)
  for env, ref in _MUJOCO_REF.items():
    table.update({f"{env}-{kind}-v0": ref for kind in _MUJOCO_KINDS_V0})
    table.update({f"{env}-{kind}-{v}": ref for kind in _MUJOCO_KINDS_V1_V2 for v in ("v1", "v2")})
  for env, ref in _ADROIT_REF.items():
    table.update({f"{env}-{kind}-v0": ref for kind in ("human", "cloned", "expert")})
    table.update({f"{env}-{kind}-v1": ref for kind in ("human", "cloned", "expert")})
  table.update({f"antmaze-{variant}-{v}": (0.0, 1.0) for variant in _ANTMAZE_VARIANTS for v in ("v0", "v2")})
  table.update({f"kitchen-{kind}-v0": (0.0, 4.0) for kind in ("complete", "partial", "mixed")})
  return table


# env name (D4RL spelling, e.g. 'hopper-medium-v2') -> (REF_MIN_SCORE, REF_MAX_SCORE)
D4RL_REFERENCE_SCORES: Dict[str, Tuple[float, float]] = _d4rl_reference_table()


def d4rl_env_name(name: str) -> str:
  """D4RL's env spelling for a D4RL or TFDS name: 'd4rl_mujoco_hopper/v2-medium' -> 'hopper-medium-v2'."""
  name = name.strip()
  if name.startswith("d4rl_") and "/" in name:
    builder, config = name.split("/", 1)
    env = builder.split("_")[-1]  # d4rl_mujoco_hopper -> hopper, d4rl_adroit_door -> door, d4rl_antmaze
    if builder == "d4rl_antmaze":  # config 'medium-play-v0' already ends in the version
      return f"antmaze-{config}"
    version, _, kind = config.partition("-")  # 'v2-medium-replay' -> v2, medium-replay
    if version == "v0" and kind == "mixed":  # the v0 medium-replay data is named 'mixed' in TFDS
      kind = "medium-replay"
    return f"{env}-{kind}-{version}"
  return name


def has_d4rl_reference(env_name: str) -> bool:
  return d4rl_env_name(env_name) in D4RL_REFERENCE_SCORES


def d4rl_normalized_score(env_name: str, raw: ArrayOrFloat) -> ArrayOrFloat:
  """100 * (raw - REF_MIN_SCORE) / (REF_MAX_SCORE - REF_MIN_SCORE) for a D4RL env (or TFDS) name."""
  name = d4rl_env_name(env_name)
  if name not in D4RL_REFERENCE_SCORES:
    raise ConfigError(
        f"D4RL env {env_name!r} has no reference score in d4rl/infos.py (known, e.g.: hopper-medium-v2, "
        f"antmaze-medium-play-v0, kitchen-mixed-v0, door-human-v1); expected a D4RL env name.")
  low, high = D4RL_REFERENCE_SCORES[name]
  normalized = 100.0 * (np.asarray(raw, dtype=np.float64) - low) / (high - low)
  return float(normalized) if np.ndim(normalized) == 0 else normalized


# ---------------------------------------------------------------- units, as progress lines and plots say them
_NORMALIZED_SCORE_UNITS = {
    "atari": "% of human: 0 = random, 100 = human",
    "continuous": "% of D4RL reference: 0 = random, 100 = expert",
}


def normalized_score_unit(domain: Optional[str]) -> str:
  """What a normalized score of `domain` ('atari', 'continuous') measures, in words."""
  return _NORMALIZED_SCORE_UNITS.get(domain, "% of the reference range: 0 = random, 100 = reference")
