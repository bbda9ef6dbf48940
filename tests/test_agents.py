"""The agent's compiled step: losses by hand, DR3 on/off equivalence, no retracing, target schedule, REM
mixtures, acting, checkpoint continuation, tf.distribute loss scaling, factory and gin files."""
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from batch_rl_dr3 import GIN_CONFIG_DIR
from batch_rl_dr3 import runner  # noqa: F401  (registers run_experiment for the data-setting files)
from batch_rl_dr3.agents import CQLQR, DQN, REM, create_agent
from batch_rl_dr3.regularizers import DR3, FullGradientDR3, LabelNoiseDR3, SrankPenalty
from batch_rl_dr3.errors import ConfigError

B, N, A = 4, 12, 3


class TableSampler(tf.Module):
  """Uniform sampling (tf.random.Generator) from a small in-memory table of transitions."""

  def __init__(self, seed=0, batch_size=B):
    super().__init__()
    rng = np.random.default_rng(123)
    self.batch_size = batch_size
    states = rng.integers(0, 256, size=(N, 84, 84, 4)).astype(np.uint8)
    self.table = {
        "state": tf.Variable(states, trainable=False),
        "next_state": tf.Variable(np.roll(states, -1, axis=0), trainable=False),
        "action": tf.Variable(rng.integers(0, A, N).astype(np.int32), trainable=False),
        "next_action": tf.Variable(rng.integers(0, A, N).astype(np.int32), trainable=False),
        "reward": tf.Variable(rng.uniform(-1, 1, N).astype(np.float32), trainable=False),
        "terminal": tf.Variable((np.arange(N) % 5 == 4).astype(np.float32), trainable=False),
        "return_to_go": tf.Variable(rng.uniform(-2, 2, N).astype(np.float32), trainable=False),
    }
    self.rng = tf.random.Generator.from_seed(seed)

  def sample(self):
    idx = self.rng.uniform([self.batch_size], 0, N, dtype=tf.int32)
    batch = {k: tf.gather(v, idx) for k, v in self.table.items()}
    batch["discount"] = 0.99 * (1.0 - batch["terminal"])
    batch["indices"] = idx
    return batch


def _copy(src, dst):
  for a, b in zip(src.online_network.variables + src.target_network.variables,
                  dst.online_network.variables + dst.target_network.variables):
    b.assign(a)


def _params(agent):
  return [v.numpy().copy() for v in agent.online_network.variables]


def _huber(x):
  return np.where(np.abs(x) <= 1, 0.5 * x * x, np.abs(x) - 0.5)


def dopamine_dr3(c0):
  return DR3(c0, reduction="mean", use_abs=True)


def test_dqn_loss_and_metrics_by_hand():
  agent = DQN(A, TableSampler(), penalties=[dopamine_dr3(0.0), SrankPenalty(0.0)])
  batch = agent.sampler.sample()
  loss, metrics = agent.compute_loss(batch)
  on = agent.online_network(batch["state"])
  q = on.q_values.numpy()
  q_next = agent.target_network(batch["next_state"]).q_values.numpy()
  a = batch["action"].numpy()
  target = batch["reward"].numpy() + batch["discount"].numpy() * (1 - batch["terminal"].numpy()) * q_next.max(1)
  want = _huber(target - q[np.arange(B), a]).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["td_loss"], want, rtol=1e-5)
  phi, phi_next = on.features.numpy(), agent.online_network(batch["next_state"]).features.numpy()
  dots = (phi * phi_next).sum(1)
  np.testing.assert_allclose(metrics["dot_product"], dots.mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics["dr3"], np.abs(dots).mean(), rtol=1e-4)  # Dopamine's form
  np.testing.assert_allclose(metrics["q_data"], q[np.arange(B), a].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["q_max"], q.max(1).mean(), rtol=1e-5)
  lse = np.log(np.exp(q).sum(1))
  np.testing.assert_allclose(metrics["cql_gap"], (lse - q[np.arange(B), a]).mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics["feature_norm"], np.linalg.norm(phi, axis=1).mean(), rtol=1e-5)
  assert set(metrics) >= {"td_loss", "dr3", "srank_penalty", "cql_gap", "q_data", "q_max", "dot_product",
                          "dot_product_abs", "feature_norm", "next_feature_norm", "total_loss"}


def test_sarsa_and_monte_carlo_backups_by_hand():
  sarsa = DQN(A, TableSampler(), backup="sarsa")
  batch = sarsa.sampler.sample()
  q = sarsa.online_network(batch["state"]).q_values.numpy()
  q_next = sarsa.target_network(batch["next_state"]).q_values.numpy()
  rows, a = np.arange(B), batch["action"].numpy()
  target = batch["reward"].numpy() + batch["discount"].numpy() * q_next[rows, batch["next_action"].numpy()]
  np.testing.assert_allclose(sarsa.compute_loss(batch)[0], _huber(target - q[rows, a]).mean(), rtol=1e-5)
  mc = DQN(A, TableSampler(), backup="monte_carlo")
  q = mc.online_network(batch["state"]).q_values.numpy()
  loss, metrics = mc.compute_loss(batch)
  np.testing.assert_allclose(loss, _huber(batch["return_to_go"].numpy() - q[rows, a]).mean(), rtol=1e-5)
  assert "mc_loss" in metrics and "td_loss" not in metrics


def test_rem_mixture_is_shared_by_online_and_target_and_redrawn_each_step():
  agent = REM(A, TableSampler(), num_heads=3)
  w1, w2 = agent.draw_head_weights().numpy(), agent.draw_head_weights().numpy()
  np.testing.assert_allclose([w1.sum(), w2.sum()], [1.0, 1.0], rtol=1e-6)
  assert np.all(w1 > 0) and not np.allclose(w1, w2)
  batch = agent.sampler.sample()
  w = np.array([0.5, 0.3, 0.2], np.float32)
  heads = agent.online_network(batch["state"]).heads.numpy() @ w
  heads_next = agent.target_network(batch["next_state"]).heads.numpy() @ w
  rows, a = np.arange(B), batch["action"].numpy()
  target = batch["reward"].numpy() + batch["discount"].numpy() * heads_next.max(1)
  loss, _ = agent.compute_loss(batch, head_weights=tf.constant(w))
  np.testing.assert_allclose(loss, _huber(target - heads[rows, a]).mean(), rtol=1e-5)


def test_cql_qr_loss_by_hand():
  agent = CQLQR(A, TableSampler(), num_quantiles=3, cql_alpha=2.0)
  batch = agent.sampler.sample()
  theta = agent.online_network(batch["state"]).quantiles.numpy()
  theta_next = agent.target_network(batch["next_state"]).quantiles.numpy()
  rows, a = np.arange(B), batch["action"].numpy()
  a_next = theta_next.mean(2).argmax(1)
  target = batch["reward"].numpy()[:, None] + batch["discount"].numpy()[:, None] * theta_next[rows, a_next]
  tau = (np.arange(3) + 0.5) / 3
  u = target[:, None, :] - theta[rows, a][:, :, None]
  qloss = (np.abs(tau[None, :, None] - (u < 0)) * _huber(u)).mean(2).sum(1)
  q = theta.mean(2)
  gap = np.log(np.exp(q).sum(1)) - q[rows, a]
  loss, metrics = agent.compute_loss(batch)
  np.testing.assert_allclose(loss, (qloss + 2.0 * gap).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["quantile_loss"], qloss.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["cql_gap"], gap.mean(), rtol=1e-4)


@pytest.mark.parametrize("cls,kwargs", [(DQN, {}), (CQLQR, {"num_quantiles": 3, "cql_alpha": 1.0})])
def test_dr3_with_c0_zero_gives_the_same_parameters_as_no_dr3(cls, kwargs):
  off = cls(A, TableSampler(seed=7), **kwargs)
  on = cls(A, TableSampler(seed=7), penalties=[DR3(0.0)], **kwargs)
  strong = cls(A, TableSampler(seed=7), penalties=[DR3(1.0)], **kwargs)
  _copy(off, on)
  _copy(off, strong)
  for _ in range(3):
    off.train_step(), on.train_step(), strong.train_step()
  for x, y in zip(_params(off), _params(on)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.allclose(x, y) for x, y in zip(_params(off), _params(strong)))


@pytest.mark.parametrize("make", [FullGradientDR3, LabelNoiseDR3], ids=["full_gradient", "label_noise"])
def test_other_explicit_forms_train_in_the_compiled_step_and_c0_zero_changes_nothing(make):
  off = DQN(A, TableSampler(seed=2))
  zero = DQN(A, TableSampler(seed=2), penalties=[make(0.0)])
  strong = DQN(A, TableSampler(seed=2), penalties=[make(1e-3)])
  _copy(off, zero)
  _copy(off, strong)
  for _ in range(2):
    off.train_step(), strong.train_step()
    metrics = zero.train_step()
  assert np.isfinite(float(metrics[make.metric_name])) and float(metrics[make.metric_name]) != 0.0
  for x, y in zip(_params(off), _params(zero)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.allclose(x, y) for x, y in zip(_params(off), _params(strong)))
  assert zero.train_step_tracing_count == 1


def test_compiled_step_equals_eager_step_and_coefficient_changes_never_retrace():
  compiled = CQLQR(A, TableSampler(seed=3), num_quantiles=3, cql_alpha=1.0,
                   penalties=[dopamine_dr3(0.1), SrankPenalty(0.01)])
  eager = CQLQR(A, TableSampler(seed=3), num_quantiles=3, cql_alpha=1.0,
                penalties=[dopamine_dr3(0.1), SrankPenalty(0.01)])
  _copy(compiled, eager)
  for step in range(3):
    m_compiled = compiled.train_step()
    m_eager = eager._train_step()  # the same Python function, run op by op
    np.testing.assert_allclose(m_compiled["total_loss"], m_eager["total_loss"], rtol=1e-4)
  for x, y in zip(_params(compiled), _params(eager)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  compiled.penalties[0].coefficient.assign(0.5)
  compiled.penalties[1].coefficient.assign(0.0)
  compiled.cql_alpha.assign(4.0)
  compiled.train_step()
  assert compiled.train_step_tracing_count == 1
  assert int(compiled.gradient_steps) == 4


def test_target_network_syncs_on_dopamines_schedule():
  agent = DQN(A, TableSampler(), target_update_period=3)
  target = lambda: [v.numpy().copy() for v in agent.target_network.variables]  # noqa: E731
  synced_after = []
  for step in range(1, 8):
    before_target = target()
    agent.train_step()
    now_target, online = target(), _params(agent)
    if all(np.array_equal(t, o) for t, o in zip(now_target, online)):
      synced_after.append(step)
    else:
      assert all(np.array_equal(t, b) for t, b in zip(now_target, before_target))
  # Dopamine syncs when training_steps % period == 0, checked after training step training_steps.
  assert synced_after == [1, 4, 7]


def test_select_action_greedy_on_mean_q_and_uniform_under_epsilon_one():
  agent = REM(A, TableSampler(), num_heads=2)
  states = agent.sampler.table["state"][:6]
  greedy = agent.select_action(states, 0.0).numpy()
  np.testing.assert_array_equal(greedy, agent.online_network(states).heads.numpy().mean(2).argmax(1))
  many = np.concatenate([agent.select_action(tf.repeat(states[:1], 50, axis=0), 1.0).numpy()
                         for _ in range(4)])
  counts = np.bincount(many, minlength=A)
  assert many.dtype == np.int32 and counts.shape == (A,) and counts.min() > 40  # ~67 each of 200


def test_checkpoint_restores_an_identical_continuation(tmp_path):
  first = REM(A, TableSampler(seed=5), num_heads=2, penalties=[DR3(0.1)])
  for _ in range(2):
    first.train_step()
  path = tf.train.Checkpoint(agent=first).save(str(tmp_path / "ckpt"))
  continued = [first.train_step()["total_loss"].numpy() for _ in range(2)]
  resumed = REM(A, TableSampler(seed=99), num_heads=2, penalties=[DR3(0.0)], seed=42)
  tf.train.Checkpoint(agent=resumed).restore(path).assert_existing_objects_matched()
  assert int(resumed.gradient_steps) == 2
  again = [resumed.train_step()["total_loss"].numpy() for _ in range(2)]
  np.testing.assert_array_equal(continued, again)
  for x, y in zip(_params(first), _params(resumed)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("make_dr3", [lambda: dopamine_dr3(0.3), lambda: DR3(0.05)], ids=["mean", "sum"])
def test_distributed_loss_scaling_sums_replica_gradients_to_the_global_gradient(make_dr3):
  agent = DQN(A, TableSampler(batch_size=8), penalties=[make_dr3(), SrankPenalty(0.0)])
  batch = agent.sampler.sample()
  with tf.GradientTape() as tape:
    full, _ = agent.compute_loss(batch)
  full_grads = tape.gradient(full, agent.trainable_weights)
  halves = []
  for part in (slice(0, 4), slice(4, 8)):
    with tf.GradientTape() as tape:
      loss, _ = agent.compute_loss({k: v[part] for k, v in batch.items()}, global_batch_size=8)
    halves.append(tape.gradient(loss, agent.trainable_weights))
  for g, h1, h2 in zip(full_grads, *halves):
    np.testing.assert_allclose(g, h1 + h2, rtol=1e-3, atol=1e-6)


def test_create_agent_factory_and_unknown_name():
  assert isinstance(create_agent("rem", A, TableSampler()), REM)
  with pytest.raises(ConfigError, match=r"agent_name='cql'.*\['cql_qr', 'dqn', 'rem'\]"):
    create_agent("cql", A, TableSampler())


def _agent_from_gin(files, bindings=(), data_setting=None):
  gin.clear_config()
  gin.parse_config_files_and_bindings([os.path.join(GIN_CONFIG_DIR, "atari", f) for f in files],
                                      ["CQLQR.num_quantiles = 3", *bindings], skip_unknown=True)
  return create_agent("cql_qr", A, TableSampler(), data_setting=data_setting)


def test_gin_files_bind_the_papers_eq7_form():
  try:
    agent = _agent_from_gin(("cql_qr.gin", "dr3.gin", "1pct.gin"), data_setting="1pct")
    assert float(agent.cql_alpha) == 4.0
    (dr3,) = agent.penalties
    assert (dr3.reduction, dr3.use_abs, dr3.stop_gradient_next, dr3.form_name()) == ("sum", False, False, "paper")
    np.testing.assert_allclose(float(dr3.coefficient), 0.03)
    assert gin.query_parameter("run_experiment.num_iterations") * gin.query_parameter(
        "run_experiment.gradient_steps_per_iteration") == 6_500_000  # Table 1's caption
    batch = agent.sampler.sample()
    on = agent.online_network(batch["state"]).features.numpy()
    on_next = agent.online_network(batch["next_state"]).features.numpy()
    np.testing.assert_allclose(agent.compute_loss(batch)[1]["dr3"], (on * on_next).sum(), rtol=1e-4)
    optimizer = agent.optimizer
    np.testing.assert_allclose([float(optimizer.learning_rate), optimizer.epsilon], [5e-5, 3.125e-4])
    dopamine = _agent_from_gin(("cql_qr.gin", "dr3_dopamine.gin"), data_setting="5pct")
    assert dopamine.penalties[0].form_name() == "dopamine" and float(dopamine.cql_alpha) == 1.0
    np.testing.assert_allclose(float(dopamine.penalties[0].coefficient), 0.1)
    on = dopamine.online_network(batch["state"]).features.numpy()
    on_next = dopamine.online_network(batch["next_state"]).features.numpy()
    np.testing.assert_allclose(dopamine.compute_loss(batch)[1]["dr3"], np.abs((on * on_next).sum(1)).mean(),
                               rtol=1e-4)
  finally:
    gin.clear_config()


@pytest.mark.parametrize("setting,alpha", [("1pct", 4.0), ("5pct", 1.0), ("first10pct", 1.0)])
def test_cql_alpha_does_not_depend_on_the_order_of_gin_files(setting, alpha):
  try:
    for files in (("cql_qr.gin", f"{setting}.gin"), (f"{setting}.gin", "cql_qr.gin")):
      assert float(_agent_from_gin(files, data_setting=setting).cql_alpha) == alpha, files
    # An explicit binding wins over the per-setting table, in either order.
    for files in (("cql_qr.gin", f"{setting}.gin"), (f"{setting}.gin", "cql_qr.gin")):
      assert float(_agent_from_gin(files, ["CQLQR.cql_alpha = 0.1"], data_setting=setting).cql_alpha) == (
          pytest.approx(0.1))
  finally:
    gin.clear_config()


def test_cql_alpha_without_a_value_for_the_setting_is_one_clear_error():
  with pytest.raises(ConfigError, match=r"CQLQR.cql_alpha: not bound.*'explicit'"):
    CQLQR(A, TableSampler(), num_quantiles=3, cql_alpha_by_setting={"1pct": 4.0}, data_setting="explicit")


def test_dropping_next_state_metrics_changes_no_parameter():
  full = DQN(A, TableSampler(seed=4))
  lean = DQN(A, TableSampler(seed=4), next_state_metrics=False)
  _copy(full, lean)
  for _ in range(2):
    metrics = lean.train_step()
    full.train_step()
  assert "dot_product" not in metrics and "dr3" not in metrics and "td_loss" in metrics
  for x, y in zip(_params(full), _params(lean)):
    np.testing.assert_array_equal(x, y)


def test_representation_diagnostics_on_a_fixed_batch():
  agent = DQN(A, TableSampler(batch_size=8))
  batch = agent.sampler.sample()
  got = agent.representation_diagnostics(batch)
  phi = agent.online_network(batch["state"]).features.numpy().astype(np.float64)
  sigma = np.linalg.svd(phi, compute_uv=False)
  want_srank = int(np.argmax(np.cumsum(sigma) / sigma.sum() >= 0.99)) + 1
  assert int(got["srank"]) == want_srank
  phi_next = agent.online_network(batch["next_state"]).features.numpy()
  np.testing.assert_allclose(got["fixed_batch/dot_product"], (phi * phi_next).sum(1).mean(), rtol=1e-4)
  np.testing.assert_allclose(got["fixed_batch/feature_norm"], np.linalg.norm(phi, axis=1).mean(), rtol=1e-5)
  assert float(got["fixed_batch/dead_neurons_frac"]) == pytest.approx(np.mean(np.all(phi <= 0, axis=0)))
  energy = np.cumsum(sigma ** 2)
  assert int(got["fixed_batch/pca_rank"]) == int(np.argmax(energy >= 0.99 * energy[-1])) + 1
  # Prop. 3.2 by hand: over bootstrapped transitions, sum phi.phi' against (1 / gamma) sum ||phi||^2, gamma 0.99.
  live = batch["terminal"].numpy() == 0
  assert 0 < live.sum() < 8 or live.all()
  np.testing.assert_allclose(got["fixed_batch/prop32_dot_sum"], (phi * phi_next).sum(1)[live].sum(), rtol=1e-4)
  np.testing.assert_allclose(got["fixed_batch/prop32_norm_bound"], (phi ** 2).sum(1)[live].sum() / 0.99,
                             rtol=1e-5)
  np.testing.assert_allclose(got["fixed_batch/prop32_ratio"], (phi * phi_next).sum(1)[live].sum() * 0.99
                             / (phi ** 2).sum(1)[live].sum(), rtol=1e-4)


def test_layer_reinitialization_gives_fresh_seeded_weights_and_leaves_the_rest():
  agent = DQN(A, TableSampler(), penalties=[DR3(0.01)], reinitialize_layers=["head"], reinitialize_at_steps=[2])
  for _ in range(2):
    agent.train_step()
  before = {v.name: v.numpy().copy() for v in agent.online_network.variables}
  target_before = [v.numpy().copy() for v in agent.target_network.variables]
  agent.reinitialize_layers_now(["head", "features"], seed=11)
  head, dense = agent.online_network.head, agent.online_network.torso.dense
  # A fresh initialization with the same seeds: 'features' is the 4th named layer (seed 11 + 3), 'head' the 5th.
  np.testing.assert_array_equal(head.kernel, tf.keras.initializers.GlorotUniform(seed=15)(head.kernel.shape))
  np.testing.assert_array_equal(dense.kernel, tf.keras.initializers.GlorotUniform(seed=14)(dense.kernel.shape))
  np.testing.assert_array_equal(head.bias, np.zeros(head.bias.shape))
  fresh = tf.keras.layers.Dense(head.units, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=15))
  fresh.build((None, dense.units))
  np.testing.assert_array_equal(head.kernel, fresh.kernel)
  assert not np.array_equal(before[head.kernel.name], head.kernel.numpy())
  renewed = {head.kernel.name, head.bias.name, dense.kernel.name, dense.bias.name}
  for variable in agent.online_network.variables:
    if variable.name not in renewed:
      np.testing.assert_array_equal(variable, before[variable.name], err_msg=variable.name)
  for variable, value in zip(agent.target_network.variables, target_before):
    np.testing.assert_array_equal(variable, value)
  assert float(tf.reduce_sum(tf.abs(agent.optimizer.get_slot(head.kernel, "m")))) == 0.0
  assert float(tf.reduce_sum(tf.abs(agent.optimizer.get_slot(agent.online_network.torso.convs[0].kernel, "m")))) > 0
  # The runner's hook: only at the configured steps, seeded from (agent seed, step), so two runs agree.
  other = DQN(A, TableSampler(), reinitialize_layers=["head"], reinitialize_at_steps=[2])
  for call in (agent, other):
    call.reinitialize(2)
  np.testing.assert_array_equal(agent.online_network.head.kernel, other.online_network.head.kernel)
  kernel = agent.online_network.head.kernel.numpy().copy()
  agent.reinitialize(3)
  np.testing.assert_array_equal(agent.online_network.head.kernel, kernel)
  assert agent.label_parts()["settings"] == {"reinitialize_layers": ("head",), "reinitialize_at_steps": (2,)}
  with pytest.raises(ConfigError, match=r"reinitialize_layers=\['fc'\].*expected layers among"):
    DQN(A, TableSampler(), reinitialize_layers=["fc"], reinitialize_at_steps=[5])


@pytest.mark.slow
def test_every_penalty_compiles_under_xla_and_matches_graph_mode():
  for make in (lambda: DR3(0.01), lambda: LabelNoiseDR3(0.01), lambda: SrankPenalty(0.01),
               lambda: FullGradientDR3(0.01)):
    graph = DQN(A, TableSampler(seed=6), penalties=[make()])
    xla = DQN(A, TableSampler(seed=6), penalties=[make()], jit_compile=True)
    _copy(graph, xla)
    for _ in range(2):
      m_graph, m_xla = graph.train_step(), xla.train_step()
    name = graph.penalties[0].metric_name
    np.testing.assert_allclose(m_xla[name], m_graph[name], rtol=1e-3)
    np.testing.assert_allclose(m_xla["total_loss"], m_graph["total_loss"], rtol=1e-3)


def test_next_state_metrics_every_k_steps_are_weighted_and_change_nothing_else():
  """Without DR3, phi(s') feeds only metrics: computed on steps 0, k, 2k, ... (weight 1), skipped (weight 0)
  on the others, with the values and parameters of an agent that computes them every step."""
  every_step = DQN(A, TableSampler(seed=4), next_state_metrics_every=1)
  periodic = DQN(A, TableSampler(seed=4), next_state_metrics_every=3)
  _copy(every_step, periodic)
  weights = []
  for step in range(7):
    full, sparse = every_step.train_step(), periodic.train_step()
    assert float(full["dot_product#weight"]) == 1.0
    weights.append(float(sparse["dot_product#weight"]))
    assert float(sparse["next_feature_norm#weight"]) == weights[-1]
    if step % 3 == 0:
      for name in ("dot_product", "dot_product_abs", "next_feature_norm"):
        assert float(sparse[name]) == float(full[name]), (step, name)
    assert float(sparse["td_loss"]) == float(full["td_loss"])
  assert weights == [1, 0, 0, 1, 0, 0, 1]
  for x, y in zip(_params(every_step), _params(periodic)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ConfigError, match="next_state_metrics_every=0"):
    DQN(A, TableSampler(), next_state_metrics_every=0)
