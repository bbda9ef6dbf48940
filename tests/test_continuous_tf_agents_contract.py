"""The tf-agents internals our continuous agents depend on: if tf-agents renames or stops calling one, this fails
by name (instead of our override silently no longer being called)."""
import inspect
import re

import pytest
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.cql import cql_sac_agent
from tf_agents.agents.sac import sac_agent

from batch_rl_dr3.continuous import brac
from batch_rl_dr3.continuous import cql_sac
from batch_rl_dr3.continuous import sac
from tests.continuous_fixtures import make_agent, make_networks

# (our class, the private tf-agents method it overrides, the tf-agents class whose code must call it)
OVERRIDES = [
    (sac.Dr3SacAgent, "_actions_and_log_probs", sac_agent.SacAgent),
    (cql_sac.Dr3CqlSacAgent, "_actions_and_log_probs", cql_sac_agent.CqlSacAgent),
    (cql_sac.Dr3CqlSacAgent, "_sample_and_transpose_actions_and_log_probs", cql_sac_agent.CqlSacAgent),
    (cql_sac.Dr3CqlSacAgent, "_critic_loss_with_optional_entropy_term", cql_sac_agent.CqlSacAgent),
    (cql_sac.Dr3CqlSacAgent, "_cql_loss", cql_sac_agent.CqlSacAgent),
    (brac.BracAgent, "_actions_and_log_probs", sac_agent.SacAgent),
    (brac.BracAgent, "_train", tf_agent.TFAgent),
]

# Private attributes of tf-agents' SacAgent / CqlSacAgent that base.Dr3CriticMixin and BracAgent read.
ATTRIBUTES = ["_critic_network_1", "_critic_network_2", "_target_critic_network_1", "_target_critic_network_2",
              "_actor_network", "_log_alpha", "_policy", "_train_policy", "_time_step_spec", "_critic_loss_weight",
              "_actor_loss_weight", "_alpha_loss_weight", "_td_errors_loss_fn", "_gamma", "_reward_scale_factor",
              "_critic_optimizer", "_actor_optimizer", "_alpha_optimizer", "_apply_gradients", "_update_target",
              "_as_transition"]
CQL_ATTRIBUTES = ["_include_critic_entropy_term", "_num_cql_samples", "_softmax_temperature"]


@pytest.mark.parametrize("ours, name, theirs", OVERRIDES, ids=[f"{c.__name__}.{n}" for c, n, _ in OVERRIDES])
def test_overridden_private_methods_exist_and_are_called_by_tf_agents(ours, name, theirs):
  assert name in vars(ours) or any(name in vars(k) for k in ours.__mro__ if k.__module__.startswith("batch_rl_dr3"))
  defining = [k for k in theirs.__mro__ if name in vars(k)]
  assert defining, f"tf-agents {theirs.__name__} no longer defines {name}: our override is dead code"
  source = "".join(inspect.getsource(k) for k in theirs.__mro__ if k.__module__.startswith("tf_agents"))
  calls = re.findall(rf"self\.{name}\b(?!\s*=)", source)
  assert calls, f"tf-agents {theirs.__name__} no longer calls self.{name}: our override would never run"


def test_private_attributes_the_agents_read_exist():
  for cls, names in ((sac.Dr3SacAgent, ATTRIBUTES), (cql_sac.Dr3CqlSacAgent, ATTRIBUTES + CQL_ATTRIBUTES)):
    critic, actor = make_networks()
    agent = make_agent(cls, critic, actor)
    missing = [n for n in names if not hasattr(agent, n)]
    assert not missing, f"tf-agents {cls.__mro__[2].__name__} lost {missing}"
    assert agent.critic_networks[0] is critic and agent.actor_network is actor
    assert agent.actor_optimizer is agent._actor_optimizer
    assert float(agent.entropy_weight()) == pytest.approx(float(tf.exp(-30.0)), rel=1e-5)
