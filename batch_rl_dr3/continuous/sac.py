"""`Dr3SacAgent`: tf-agents `SacAgent` with DR3 on the critic (and optionally CQL's max-Q backup).

Only the critic loss (to add DR3) and the places that draw random numbers are overridden (see `base`); training,
the actor and alpha losses and the target updates stay tf-agents'.
"""
import gin
from tf_agents.agents.sac import sac_agent

from batch_rl_dr3.continuous import base


@gin.configurable
class Dr3SacAgent(base.Dr3CriticMixin, sac_agent.SacAgent):
  """tf-agents SacAgent with DR3 on the critic (and optionally CQL's max-Q backup)."""

  def __init__(self, *args, dr3_coefficient: float = 0.0, seed: int = 0, max_q_backup: bool = False,
               num_backup_samples: int = 10, **kwargs):
    super().__init__(*args, **kwargs)
    self._init_dr3(dr3_coefficient, seed, max_q_backup, num_backup_samples)

  def critic_loss(self, time_steps, actions, next_time_steps, td_errors_loss_fn, gamma=1.0,
                  reward_scale_factor=1.0, weights=None, training=False):
    return self._dr3_critic_loss(time_steps, actions, next_time_steps, td_errors_loss_fn, gamma,
                                 reward_scale_factor, weights, training, include_entropy=True)
