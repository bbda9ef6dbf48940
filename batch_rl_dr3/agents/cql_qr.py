"""CQL on a QR-DQN backbone (Kumar et al. 2020, aviralkumar2907/CQL `atari/`): quantile Huber + alpha * CQL(H)."""
from typing import Mapping, Optional

import gin
import tensorflow as tf

from batch_rl_dr3 import losses
from batch_rl_dr3 import networks
from batch_rl_dr3.agents.offline_agent import OfflineAgent
from batch_rl_dr3.errors import ConfigError


@gin.configurable
class CQLQR(OfflineAgent):
  """sum_i mean_j rho_tau_i(T theta_j - theta_i(s, a)) + alpha (logsumexp_a Q(s, a) - Q(s, a_data)), Q the mean
  over quantiles; the target quantiles are theta_target(s', a') with a' by the backup (argmax of the mean),
  or the Monte-Carlo return as a single target sample for backup='monte_carlo'. alpha = 0 is QR-DQN."""

  def __init__(self, num_actions, sampler, num_quantiles: int = 200, cql_alpha: Optional[float] = None,
               cql_alpha_by_setting: Optional[Mapping[str, float]] = None, **kwargs):
    """
    Args:
      num_quantiles: quantiles of the QR-DQN head.
      cql_alpha: alpha of the CQL(H) term; when given it wins over `cql_alpha_by_setting`.
      cql_alpha_by_setting: {data setting: alpha}, the alpha used when `cql_alpha` is not given, looked up with
        the agent's `data_setting` (atari/cql_qr.gin binds the CQL paper's values), so the value never depends
        on the order of gin files.
    """
    self.num_quantiles = int(num_quantiles)
    self.cql_alpha_by_setting = dict(cql_alpha_by_setting or {})
    self.explicit_cql_alpha = cql_alpha is not None
    data_setting = kwargs.get("data_setting")
    if cql_alpha is None:
      if data_setting not in self.cql_alpha_by_setting:
        raise ConfigError(f"CQLQR.cql_alpha: not bound, and CQLQR.cql_alpha_by_setting has no entry for data "
                          f"setting {data_setting!r} (it has {sorted(self.cql_alpha_by_setting)}); bind one")
      cql_alpha = self.cql_alpha_by_setting[data_setting]
    self.cql_alpha = tf.Variable(float(cql_alpha), trainable=False, name="cql_alpha")
    super().__init__(num_actions, sampler, **kwargs)

  def hyperparameters(self):
    return {**super().hyperparameters(), "num_quantiles": self.num_quantiles,
            "cql_alpha": float(self.cql_alpha.numpy())}

  def hyperparameter_defaults(self):
    """CQL alpha's default is the data setting's entry of cql_alpha_by_setting."""
    defaults = super().hyperparameter_defaults()
    if self.data_setting in self.cql_alpha_by_setting:
      defaults["cql_alpha"] = float(self.cql_alpha_by_setting[self.data_setting])
    return defaults

  def make_network(self, num_actions, name):
    return networks.QuantileNetwork(num_actions, num_quantiles=self.num_quantiles, name=name)

  def algorithm_loss(self, batch, online, target_next, next_actions, head_weights):
    chosen = losses.select_actions(online.quantiles, batch["action"])
    if self.backup == "monte_carlo":
      target = batch["return_to_go"][:, None]
    else:
      next_quantiles = losses.select_actions(target_next.quantiles, next_actions)
      target = losses.bootstrap_target(batch["reward"], batch["discount"], batch["terminal"], next_quantiles)
    quantile_loss = losses.quantile_huber_loss(chosen, target, self.huber_delta)
    gap = losses.cql_gap(online.q_values, batch["action"])
    return quantile_loss + self.cql_alpha * gap, {"quantile_loss": tf.reduce_mean(quantile_loss)}
