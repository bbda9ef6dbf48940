"""Offline Atari agents: thin compositions of network + loss + regularizer + optimizer + target update.

`create_agent(agent_name, num_actions, sampler)` is the gin-configurable factory train.py calls.
"""
from typing import Optional

import gin

from batch_rl_dr3.agents.cql_qr import CQLQR
from batch_rl_dr3.agents.dqn import DQN
from batch_rl_dr3.agents.offline_agent import OfflineAgent
from batch_rl_dr3.agents.rem import REM
from batch_rl_dr3.errors import ConfigError

AGENTS = {"dqn": DQN, "rem": REM, "cql_qr": CQLQR}


# The caller passes every argument (AtariExperiment.agent_name picks the agent): binding them here would be
# silently overridden, so gin rejects such bindings instead.
@gin.configurable(denylist=["agent_name", "num_actions", "sampler", "seed", "data_setting"])
def create_agent(agent_name: str, num_actions: int, sampler, seed: int = 0,
                 data_setting: Optional[str] = None) -> OfflineAgent:
  """The agent named `agent_name` ('dqn', 'rem', 'cql_qr'), configured by its gin bindings.

  `seed` is the run's seed: it seeds the agent's RNG (REM mixtures, epsilon-greedy acting). `data_setting` is
  the dataset's setting ('1pct', ...), for the settings whose default depends on it (CQL alpha).
  """
  if agent_name not in AGENTS:
    raise ConfigError(f"create_agent: agent_name={agent_name!r}; expected one of {sorted(AGENTS)}")
  return AGENTS[agent_name](num_actions, sampler, seed=seed, data_setting=data_setting)


__all__ = ["AGENTS", "CQLQR", "DQN", "OfflineAgent", "REM", "create_agent"]
