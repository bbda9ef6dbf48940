"""The actor-regularization study's 36 datasets and every per-dataset value, in ONE table, and the gin lookup
`study_value(key, dataset)` through which gin_configs/continuous/study/*.gin bind them.

Sources (reference/actor-regularization.md, from DT6A/ActoReg configs/offline/*/<env>/<dataset>.yaml):
  rebrac CE  (beta_a, n_classes, v_expand)        configs/offline/rebrac-ce-mt/*      (§1.7; beta_c 0.001 for all)
  rebrac orig (beta_a, beta_c)                     configs/offline/rebrac/*            (§1.7; the MSE-critic ReBRAC)
  iql (expectile, temperature)                     configs/offline/iql/*               (§2.5)
  rebrac comb (LN, DO, GrN)                        configs/offline/rebrac-ce-mt-comb/* (§3.3)
  iql comb (LN, DO, lambda; rho 0.5 only on antmaze-large-diverse)  configs/offline/iql-comb/* (§3.3)
Domain-wide values (batch, learning rates, gamma, AntMaze reward x100 and v range 0..100, evaluation cadence) are
§1.5-1.6 and §2.3; IQL's tau 0.001 on hopper-medium / hopper-medium-replay is §2.3.
"""
from typing import Any, Dict, List

import gin

from batch_rl_dr3.errors import ConfigError

LOCOMOTION_ENVS = ("halfcheetah", "hopper", "walker2d")
LOCOMOTION_KINDS = ("random", "medium", "expert", "medium-expert", "medium-replay", "full-replay")
ANTMAZE_KINDS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
ADROIT_ENVS = ("pen", "door", "hammer", "relocate")
ADROIT_KINDS = ("human", "cloned", "expert")

# dataset: (CE beta_a, n_classes, v_expand, orig beta_a, orig beta_c, IQL expectile, IQL temperature,
#           comb LN, comb DO, comb GrN, IQL comb LN, IQL comb DO, IQL comb lambda)
_ROWS = {
    "halfcheetah-random-v2":        (0.001, 201, 0.05, 0.001, 0.1, 0.95, 10, 0, 0.2, 0.01, 0, 0.0, 0.01),
    "halfcheetah-medium-v2":        (0.001, 201, 0.1, 0.001, 0.01, 0.95, 3, 1, 0.1, 0.01, 1, 0.0, 0.01),
    "halfcheetah-expert-v2":        (0.01, 201, 0.05, 0.01, 0.01, 0.7, 6, 1, 0.0, 0.003, 1, 0.0, 0.0),
    "halfcheetah-medium-expert-v2": (0.01, 201, 0.1, 0.01, 0.1, 0.5, 0.5, 1, 0.0, 0.003, 0, 0.0, 0.001),
    "halfcheetah-medium-replay-v2": (0.001, 201, 0.1, 0.01, 0.001, 0.9, 6, 1, 0.2, 0.01, 1, 0.1, 0.01),
    "halfcheetah-full-replay-v2":   (0.001, 201, -0.05, 0.001, 0.1, 0.5, 0.5, 1, 0.0, 0.01, 0, 0.0, 0.001),
    "hopper-random-v2":             (0.001, 401, -0.05, 0.001, 0.01, 0.95, 10, 0, 0.2, 0.01, 1, 0.1, 0.001),
    "hopper-medium-v2":             (0.01, 201, -0.05, 0.01, 0.01, 0.7, 0.5, 1, 0.2, 0.01, 0, 0.2, 0.01),
    "hopper-expert-v2":             (0.05, 401, 0.1, 0.1, 0.1, 0.9, 0.5, 0, 0.2, 0.003, 0, 0.0, 0.0),
    "hopper-medium-expert-v2":      (0.05, 401, 0.05, 0.1, 0.01, 0.7, 10, 0, 0.0, 0.003, 0, 0.0, 0.0),
    "hopper-medium-replay-v2":      (0.01, 401, -0.05, 0.05, 0.5, 0.7, 0.5, 1, 0.0, 0.003, 1, 0.1, 0.01),
    "hopper-full-replay-v2":        (0.01, 201, 0.05, 0.01, 0.01, 0.7, 3, 0, 0.0, 0.003, 1, 0.2, 0.001),
    "walker2d-random-v2":           (0.05, 201, 0.05, 0.01, 0.0, 0.9, 0.5, 1, 0.1, 0.01, 0, 0.0, 0.0),
    "walker2d-medium-v2":           (0.05, 201, 0.1, 0.05, 0.1, 0.5, 1, 0, 0.1, 0.0, 0, 0.1, 0.001),
    "walker2d-expert-v2":           (0.01, 401, 0.05, 0.01, 0.5, 0.7, 6, 0, 0.2, 0.003, 0, 0.1, 0.01),
    "walker2d-medium-expert-v2":    (0.05, 401, 0.05, 0.01, 0.01, 0.7, 3, 0, 0.2, 0.01, 0, 0.1, 0.01),
    "walker2d-medium-replay-v2":    (0.01, 401, -0.05, 0.05, 0.01, 0.7, 1, 0, 0.2, 0.0, 1, 0.1, 0.001),
    "walker2d-full-replay-v2":      (0.001, 201, 0.1, 0.01, 0.01, 0.7, 10, 1, 0.1, 0.0, 1, 0.2, 0.001),
    "antmaze-umaze-v2":             (0.05, 401, 0.1, 0.003, 0.002, 0.7, 10, 0, 0.2, 0.01, 1, 0.0, 0.001),
    "antmaze-umaze-diverse-v2":     (0.01, 201, 0.1, 0.003, 0.001, 0.9, 10, 1, 0.1, 0.0, 1, 0.0, 0.0),
    "antmaze-medium-play-v2":       (0.001, 401, 0.05, 0.001, 0.0005, 0.9, 6, 1, 0.2, 0.003, 0, 0.1, 0.01),
    "antmaze-medium-diverse-v2":    (0.01, 401, 0.1, 0.001, 0.0, 0.9, 6, 1, 0.2, 0.003, 0, 0.0, 0.0),
    "antmaze-large-play-v2":        (0.01, 401, 0.1, 0.002, 0.001, 0.9, 10, 1, 0.0, 0.0, 1, 0.0, 0.001),
    "antmaze-large-diverse-v2":     (0.01, 401, 0.1, 0.002, 0.002, 0.9, 6, 1, 0.0, 0.003, 1, 0.1, 0.01),
    "pen-human-v1":                 (0.05, 201, -0.05, 0.1, 0.5, 0.7, 0.5, 1, 0.1, 0.01, 0, 0.1, 0.01),
    "pen-cloned-v1":                (0.05, 401, 0.05, 0.05, 0.5, 0.9, 10, 0, 0.1, 0.003, 0, 0.1, 0.01),
    "pen-expert-v1":                (0.01, 401, -0.05, 0.01, 0.01, 0.9, 0.5, 1, 0.1, 0.0, 1, 0.0, 0.001),
    "door-human-v1":                (0.001, 401, -0.05, 0.1, 0.1, 0.95, 1, 1, 0.1, 0.01, 1, 0.0, 0.001),
    "door-cloned-v1":               (0.05, 201, 0.1, 0.01, 0.1, 0.7, 1, 0, 0.2, 0.003, 1, 0.2, 0.001),
    "door-expert-v1":               (0.05, 401, -0.05, 0.05, 0.01, 0.9, 10, 1, 0.1, 0.0, 0, 0.2, 0.01),
    "hammer-human-v1":              (0.05, 201, -0.05, 0.01, 0.5, 0.9, 10, 1, 0.2, 0.0, 0, 0.0, 0.01),
    "hammer-cloned-v1":             (0.05, 401, 0.05, 0.1, 0.5, 0.7, 6, 1, 0.2, 0.01, 1, 0.0, 0.01),
    "hammer-expert-v1":             (0.01, 401, 0.1, 0.01, 0.01, 0.95, 0.5, 1, 0.1, 0.003, 0, 0.1, 0.0),
    "relocate-human-v1":            (0.05, 201, 0.05, 0.1, 0.01, 0.7, 10, 1, 0.2, 0.01, 0, 0.0, 0.0),
    "relocate-cloned-v1":           (0.05, 201, 0.1, 0.1, 0.01, 0.7, 1, 0, 0.2, 0.01, 1, 0.2, 0.0),
    "relocate-expert-v1":           (0.05, 401, 0.05, 0.05, 0.01, 0.5, 0.5, 1, 0.2, 0.003, 1, 0.1, 0.01),
}
_ROW_KEYS = ("rebrac_actor_bc_coef", "rebrac_num_classes", "rebrac_v_expand", "rebrac_orig_actor_bc_coef",
             "rebrac_orig_critic_bc_coef", "iql_expectile", "iql_temperature", "rebrac_comb_layer_norm",
             "rebrac_comb_dropout", "rebrac_comb_grad_noise", "iql_comb_layer_norm", "iql_comb_dropout",
             "iql_comb_weight_decay")

# Per domain (§1.5, §1.6, §2.3). Evaluation: every 10 epochs of 1000 steps with 10 episodes; AntMaze every 50
# epochs with 100 episodes; 1M gradient steps in all.
_DOMAIN = {
    "locomotion": dict(rebrac_batch_size=1024, rebrac_learning_rate=1e-3, rebrac_gamma=0.99, reward_scale=1.0,
                       rebrac_v_min=None, rebrac_v_max=None, eval_episodes=10, eval_every_steps=10_000,
                       rebrac_orig_batch_size=1024, rebrac_orig_actor_learning_rate=1e-3,
                       rebrac_orig_critic_learning_rate=1e-3, iql_dropout=0.0),
    "antmaze": dict(rebrac_batch_size=1024, rebrac_learning_rate=1e-3, rebrac_gamma=0.999, reward_scale=100.0,
                    rebrac_v_min=0.0, rebrac_v_max=100.0, eval_episodes=100, eval_every_steps=50_000,
                    rebrac_orig_batch_size=256, rebrac_orig_actor_learning_rate=3e-4,
                    rebrac_orig_critic_learning_rate=5e-5, iql_dropout=0.0),
    "adroit": dict(rebrac_batch_size=256, rebrac_learning_rate=3e-4, rebrac_gamma=0.99, reward_scale=1.0,
                   rebrac_v_min=None, rebrac_v_max=None, eval_episodes=10, eval_every_steps=10_000,
                   rebrac_orig_batch_size=256, rebrac_orig_actor_learning_rate=3e-4,
                   rebrac_orig_critic_learning_rate=3e-4, iql_dropout=0.1),
}
NUM_GRADIENT_STEPS = 1_000_000


def domain_of(dataset: str) -> str:
  if dataset.startswith("antmaze"):
    return "antmaze"
  if dataset.split("-")[0] in ADROIT_ENVS:
    return "adroit"
  return "locomotion"


def _build() -> Dict[str, Dict[str, Any]]:
  table = {}
  for dataset, row in _ROWS.items():
    domain = domain_of(dataset)
    values = dict(zip(_ROW_KEYS, row), domain=domain, **_DOMAIN[domain])
    values["rebrac_comb_layer_norm"] = bool(values["rebrac_comb_layer_norm"])
    values["iql_comb_layer_norm"] = bool(values["iql_comb_layer_norm"])
    values["iql_comb_l1_ratio"] = 0.5 if dataset == "antmaze-large-diverse-v2" else 0.0
    values["iql_tau"] = 0.001 if dataset in ("hopper-medium-v2", "hopper-medium-replay-v2") else 0.005
    values["num_iterations"] = NUM_GRADIENT_STEPS // values["eval_every_steps"]
    table[dataset] = values
  return table


TABLE = _build()
DATASETS: List[str] = list(TABLE)
KEYS = tuple(next(iter(TABLE.values())))


@gin.configurable
def study_value(key: str = gin.REQUIRED, dataset: str = gin.REQUIRED):
  """TABLE[dataset][key]: what the study's gin files bind per dataset (e.g. `@beta_a/study_value()` with
  `beta_a/study_value.key = 'rebrac_actor_bc_coef'` and `study_value.dataset = %DATASET`)."""
  if dataset not in TABLE:
    raise ConfigError(f"study_value.dataset={dataset!r} is not one of the study's 36 datasets "
                      f"(batch_rl_dr3.continuous.study.DATASETS)")
  if key not in TABLE[dataset]:
    raise ConfigError(f"study_value.key={key!r}; expected one of {KEYS}")
  return TABLE[dataset][key]
