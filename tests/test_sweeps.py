"""Sweep files: the shipped grids' sizes, stable unique names, the gin config each run really gets, and one clear
error per kind of bad sweep file."""
import itertools
import re
import tomllib

import pytest

from batch_rl_dr3 import atari_games
from batch_rl_dr3.errors import ConfigError
from launch import sweep as sweep_lib


def _write(tmp_path, text, name="s.toml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_table1_is_17_games_by_3_settings_by_4_agents_by_seeds_with_unique_stable_names():
  sweep = sweep_lib.load_sweep("table1")
  with open(sweep.path, "rb") as f:
    seeds = tomllib.load(f)["axis"]["seed"]["values"]
  assert len(atari_games.DR3_PAPER_GAMES) == 17
  assert len(sweep.runs) == 17 * 3 * 4 * len(seeds)
  names = [run.name for run in sweep.runs]
  assert len(set(names)) == len(names)
  # Stable: a fixed grid point always gets the same name (and so the same base_dir), load after load.
  assert names == [run.name for run in sweep_lib.load_sweep("table1").runs]
  assert "table1/1pct/cql_qr+dr3/Pong/seed0" in names
  assert "table1/first10pct/rem/MsPacman/seed2" in names
  for name in names:
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", part) for part in name.split("/")), name
  expected_points = set(itertools.product(["1pct", "5pct", "first10pct"], ["cql_qr", "cql_qr+dr3", "rem", "rem+dr3"],
                                          atari_games.DR3_PAPER_GAMES, [f"seed{s}" for s in seeds]))
  assert {tuple(label for _, label in run.point) for run in sweep.runs} == expected_points


def test_table1_commands_carry_the_grid_point_as_flags_and_gin_files():
  sweep = sweep_lib.load_sweep("table1")
  run = next(r for r in sweep.runs if r.name == "table1/5pct/rem+dr3/Breakout/seed1")
  argv = run.command("/runs", "gs://atari-replay-datasets/dqn/", python="py")
  assert argv[:3] == ["py", "-m", "batch_rl_dr3.train"]
  assert argv[3] == "--base_dir=/runs/table1/5pct/rem+dr3/Breakout/seed1"
  assert [a for a in argv if a.startswith("--gin_files")] == [
      "--gin_files=atari/rem.gin", "--gin_files=atari/dr3.gin", "--gin_files=atari/5pct.gin"]
  assert {"--data_dir=gs://atari-replay-datasets/dqn", "--run=1", "--game=Breakout", "--seed=1"} <= set(argv)
  assert run.base_dir("gs://bucket/exp/") == "gs://bucket/exp/table1/5pct/rem+dr3/Breakout/seed1"
  no_dr3 = [r for r in sweep.runs if r.labels["agent"] in ("cql_qr", "rem")]
  assert all("atari/dr3.gin" not in r.gin_files for r in no_dr3)


def _parse_run(run):
  """Parse a run's files and flags exactly as the entry point does."""
  from batch_rl_dr3 import train
  flags = dict(run.flags)
  bindings = train.flag_bindings("/data", flags["game"], int(flags["run"]), int(flags["seed"]))
  train.parse_gin(run.gin_files, bindings + list(run.gin_bindings))


def _query(name, default=None):
  import gin
  try:
    return gin.query_parameter(name)
  except ValueError:
    return default


def test_table1_runs_get_the_papers_bindings_through_the_real_gin_parser():
  # Read the operative values back: run length of Table 1's caption, CQL alpha per setting from the table in
  # cql_qr.gin, and DR3 in the paper's Eq. 7 form (signed batch sum, gradient through both sides).
  import gin
  sweep = sweep_lib.load_sweep("table1")
  expected = {("1pct", "cql_qr+dr3"): (4.0, 0.03, 6_500_000), ("5pct", "cql_qr"): (1.0, None, 12_500_000),
              ("first10pct", "rem+dr3"): (1.0, 0.03, 12_500_000)}
  try:
    for (setting, agent), (alpha, c0, gradient_steps) in expected.items():
      run = next(r for r in sweep.runs if r.labels["setting"] == setting and r.labels["agent"] == agent)
      _parse_run(run)
      assert gin.query_parameter("load_dataset.setting") == setting
      assert (gin.query_parameter("run_experiment.num_iterations")
              * gin.query_parameter("run_experiment.gradient_steps_per_iteration")) == gradient_steps
      assert gin.query_parameter("AtariExperiment.agent_name") == agent.split("+")[0]
      if agent.startswith("cql_qr"):
        assert _query("CQLQR.cql_alpha") is None
        assert gin.query_parameter("CQLQR.cql_alpha_by_setting")[setting] == alpha
      assert _query("DR3.coefficient") == c0
      if c0 is not None:
        assert [_query(f"DR3.{k}") for k in ("reduction", "use_abs", "stop_gradient_next", "mask_terminal")] == [
            "sum", False, False, False]
      assert gin.query_parameter("AtariExperiment.game") == run.labels["game"]
  finally:
    gin.clear_config()


def test_dr3_tuning_dopamine_and_alpha_sweeps():
  import gin
  c0 = sweep_lib.load_sweep("table1_c0")
  assert len(c0.runs) == 3 * 2 * 5 * 5
  assert {r.labels["c0"] for r in c0.runs} == {"c0_0.001", "c0_0.003", "c0_0.01", "c0_0.03", "c0_0.1"}
  dopamine = sweep_lib.load_sweep("table1_dopamine")
  assert len(dopamine.runs) == 17 * 3 * 2 * 3
  alpha = sweep_lib.load_sweep("cql_alpha_5pct")
  assert len(alpha.runs) == 2 * 5 * 5
  try:
    # The c0 axis's binding comes after atari/dr3.gin's c0, so the grid value is what the run uses.
    _parse_run(next(r for r in c0.runs if r.labels["c0"] == "c0_0.001"))
    assert gin.query_parameter("DR3.coefficient") == 0.001
    _parse_run(dopamine.runs[0])
    assert [_query(f"DR3.{k}") for k in ("coefficient", "reduction", "use_abs")] == [0.1, "mean", True]
    _parse_run(next(r for r in alpha.runs if r.labels["alpha"] == "alpha_4.0"))
    assert gin.query_parameter("CQLQR.cql_alpha") == 4.0 and gin.query_parameter("load_dataset.setting") == "5pct"
  finally:
    gin.clear_config()


def test_table2_brac_and_smoke_sizes():
  table2 = sweep_lib.load_sweep("table2")
  assert len(table2.runs) == 7 * 2 * 4
  tasks = {r.labels["task"] for r in table2.runs}
  assert tasks == {"kitchen-mixed-v0", "kitchen-partial-v0", "kitchen-complete-v0", "antmaze-medium-diverse-v0",
                   "antmaze-medium-play-v0", "antmaze-large-diverse-v0", "antmaze-large-play-v0"}
  kitchen = next(r for r in table2.runs if r.labels["task"] == "kitchen-mixed-v0" and r.labels["agent"] == "cql+dr3")
  args = kitchen.args("/r", "/d4rl")
  assert "--gin_bindings=ContinuousExperiment.task = 'kitchen-mixed-v0'" in args
  assert ("--gin_bindings=load_d4rl.hdf5_path = "
          "'/d4rl/kitchen/kitchen_microwave_kettle_bottomburner_light-v0.hdf5'") in args
  assert [a for a in args if a.startswith("--gin_files")] == [
      "--gin_files=continuous/cql_kitchen.gin", "--gin_files=continuous/dr3.gin"]

  brac = sweep_lib.load_sweep("brac_mujoco")
  assert len(brac.runs) == 15 * 2 * 4
  expected_tasks = {f"{env}-{data}-v0" for env in ("halfcheetah", "hopper", "walker2d")
                    for data in ("random", "medium", "medium-replay", "medium-expert", "expert")}
  assert {r.labels["task"] for r in brac.runs} == expected_tasks
  run = brac.runs[0]
  assert f"--gin_bindings=ContinuousExperiment.task = {run.labels['task']!r}" in run.args("/r", "/tfds")

  assert [r.name for r in sweep_lib.load_sweep("smoke").runs] == ["smoke/dqn/Pong/seed0", "smoke/dqn+dr3/Pong/seed0"]


def test_continuous_runs_get_the_recipes_through_the_real_gin_parser():
  import gin
  from batch_rl_dr3 import train
  from batch_rl_dr3.data import d4rl
  expected = {  # run -> (task, agent, DR3 c0, Lagrange CQL alpha)
      "table2/antmaze-large-play-v0/cql+dr3/seed0": ("antmaze-large-play-v0", "cql_sac", 0.001 / 256, True),
      "table2/kitchen-partial-v0/cql/seed1": ("kitchen-partial-v0", "cql_sac", 0.0, False),
      "brac_mujoco/hopper-medium-replay-v0/brac+dr3/seed2": ("hopper-medium-replay-v0", "brac", 0.001 / 256, None),
      "table2_c0/kitchen-mixed-v0/c0_1.171875e-05/seed1": ("kitchen-mixed-v0", "cql_sac", 0.003 / 256, False),
      "brac_mujoco_c0/walker2d-medium-expert-v0/c0_3.90625e-05/seed0": ("walker2d-medium-expert-v0", "brac",
                                                                        0.01 / 256, None),
  }
  runs = {r.name: r for name in ("table2", "brac_mujoco", "table2_c0", "brac_mujoco_c0")
          for r in sweep_lib.load_sweep(name).runs}
  assert len([r for r in runs if r.startswith("table2_c0/")]) == 2 * 4 * 2
  assert len([r for r in runs if r.startswith("brac_mujoco_c0/")]) == 3 * 4 * 2
  for name, (task, agent, c0, lagrange) in expected.items():
    run = runs[name]
    train.parse_gin(run.gin_files, [b.replace("${data_dir}", "/data") for b in run.gin_bindings])
    assert gin.query_parameter("run_experiment.create_experiment").selector == "ContinuousExperiment"
    assert gin.query_parameter("ContinuousExperiment.task") == task
    assert gin.query_parameter("ContinuousExperiment.agent_name") == agent
    try:
      dr3 = gin.query_parameter("ContinuousExperiment.dr3_coefficient")
    except ValueError:
      dr3 = 0.0
    assert dr3 == pytest.approx(c0, rel=1e-12)
    if c0:  # the paper's Eq. 7 with the terminal mask (continuous/dr3.gin)
      assert [gin.query_parameter(f"DR3.{k}") for k in ("reduction", "use_abs", "stop_gradient_next",
                                                         "mask_terminal")] == ["sum", False, False, True]
    if agent == "brac":
      assert gin.query_parameter("BracAgent.behavior_pretrain_steps") == 300_000
    if lagrange is not None:
      assert gin.query_parameter("Dr3CqlSacAgent.use_lagrange_cql_alpha") == lagrange
    assert gin.query_parameter("load_d4rl.data_dir") == "/data"
    if not task.startswith("kitchen"):
      d4rl.tfds_name(task)  # a task the D4RL loader knows (raises ConfigError otherwise)
  for run in runs.values():
    if not run.labels["task"].startswith("kitchen"):
      d4rl.tfds_name(run.labels["task"])
  gin.clear_config()


def test_only_selects_labels_and_names_unknown_ones():
  sweep = sweep_lib.load_sweep("table1")
  picked = sweep.select(sweep_lib.parse_only(["game=Pong,Breakout", "seed=seed0", "setting=1pct"]))
  assert sorted({r.labels["game"] for r in picked}) == ["Breakout", "Pong"]
  assert len(picked) == 2 * 1 * 1 * 4
  with pytest.raises(ConfigError, match=r"--only game=Pongg.*not a label of axis 'game'"):
    sweep.select({"game": ["Pongg"]})
  with pytest.raises(ConfigError, match=r"no axis 'task'"):
    sweep.select({"task": ["x"]})
  with pytest.raises(ConfigError, match=r"AXIS=LABEL"):
    sweep_lib.parse_only(["Pong"])


_MINIMAL = """
name = "tiny"
axes = ["game", "seed"]
[axis.game]
flag = "game"
values = {games}
[axis.seed]
flag = "seed"
values = [0, 1]
"""


def test_game_spellings_become_canonical_and_unknown_games_are_named(tmp_path):
  sweep = sweep_lib.load_sweep(_write(tmp_path, _MINIMAL.format(games='["pong", "ms_pacman"]')))
  assert [r.name for r in sweep.runs] == ["tiny/Pong/seed0", "tiny/Pong/seed1", "tiny/MsPacman/seed0",
                                          "tiny/MsPacman/seed1"]
  path = _write(tmp_path, _MINIMAL.format(games='["Pong", "Pongg"]'))
  with pytest.raises(ConfigError, match=re.escape(path) + r": axis.game.values: unknown Atari game 'Pongg'.*'Pong'"):
    sweep_lib.load_sweep(path)


@pytest.mark.parametrize("text, key", [
    ("seeds = [1]\n" + _MINIMAL.format(games='["Pong"]'), r": seeds: unknown key"),
    (_MINIMAL.format(games='["Pong"]').replace('flag = "seed"', 'flagg = "seed"'), r": axis.seed.flagg: unknown key"),
    ('name = "t"\naxes = ["agent"]\n[axis.agent.points.dqn]\ngin_file = ["atari/dqn.gin"]\n',
     r": axis.agent.points.dqn.gin_file: unknown key"),
    ('name = "t"\naxes = ["agent"]\n[axis.agent.points.dqn]\ngin_files = ["atari/dqnn.gin"]\n',
     r": axis.agent.points.dqn.gin_files: gin file 'atari/dqnn.gin' not found"),
    ('name = "t"\naxes = ["agent"]\n[axis.agent.points."a/b"]\ngin_bindings = []\n',
     r": axis.agent.points.a/b: label 'a/b' is not filesystem-safe"),
    ('name = "t"\naxes = ["agent", "seed"]\n[axis.agent.points.dqn]\n', r": axis.seed: missing"),
    ('name = "t"\naxes = ["game"]\n[axis.game]\nflag = "game"\nvalues = "batch_rl_dr3.atari_games.NO_SUCH"\n',
     r": axis.game.values: 'batch_rl_dr3.atari_games.NO_SUCH' does not name anything"),
    ('name = "t"\naxes = ["seed"]\n[flags]\nseed = 3\n[axis.seed]\nflag = "seed"\nvalues = [0]\n',
     r": flags: run t/seed0 would get --seed twice"),
    ('name = "t"\naxes = ["seed"\n', r": not valid TOML"),
])
def test_bad_sweep_files_get_one_error_naming_the_file_and_key(tmp_path, text, key):
  path = _write(tmp_path, text)
  with pytest.raises(ConfigError, match=re.escape(path) + key):
    sweep_lib.load_sweep(path)


def test_data_dir_placeholder_needs_a_data_dir(tmp_path):
  path = _write(tmp_path, 'name = "t"\naxes = ["seed"]\n[flags]\ndata_dir = "${data_dir}"\n'
                          '[axis.seed]\nflag = "seed"\nvalues = [0]\n')
  run = sweep_lib.load_sweep(path).runs[0]
  assert "--data_dir=/data" in run.args("/r", "/data/")
  with pytest.raises(ConfigError, match=r"run t/seed0: .*pass --data_dir"):
    run.args("/r", None)
  with pytest.raises(ConfigError, match=r"--sweep=nope: no such file.*smoke.toml"):
    sweep_lib.load_sweep("nope")


def test_done_marker_is_the_runners():
  from batch_rl_dr3 import runner
  assert sweep_lib.DONE_FILE == runner.DONE_FILE


def test_fig3_cog_runs_both_tasks_at_the_papers_two_fractions_with_cogs_crop():
  import gin
  from batch_rl_dr3 import train
  sweep = sweep_lib.load_sweep("fig3_cog")
  assert len(sweep.runs) == 2 * 2 * 2 * 3
  expected = {"5pct": 0.05, "25pct": 0.25}  # "using only 5% and 25% of the data used by Singh et al. (2020)"
  for run in sweep.runs:
    train.parse_gin(run.gin_files, [b.replace("${data_dir}", "/cog") for b in run.gin_bindings])
    fraction = run.labels["fraction"]
    assert gin.query_parameter("COG_DATA_FRACTION/macro.value") == expected[fraction]
    for name in ("load_cog.prior_fraction", "load_cog.task_fraction"):
      assert gin.query_parameter(name).scoped_selector == "COG_DATA_FRACTION/gin.macro"
    assert gin.query_parameter("ContinuousExperiment.setting") == fraction
    assert gin.query_parameter("ImageEncoder.augmentation_padding") == 4
    prior = {"pickplace": "/cog/pickplace_prior.npy", "drawer": "/cog/closed_drawer_prior.npy"}
    assert gin.query_parameter("load_cog.prior_path") == prior[run.labels["task"]]


def _operative(binding):
  """The value gin would pass for `binding`, evaluating `@x/study_value()`-style references."""
  import gin
  value = gin.query_parameter(binding)
  if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
    return value.scoped_configurable_fn()
  return value


def test_actor_regularization_sweeps_cover_every_dataset_regularizer_and_seed():
  from batch_rl_dr3.continuous import study
  assert len(study.DATASETS) == 36 and len({study.domain_of(d) for d in study.DATASETS}) == 3
  sizes = {"actor_reg_rebrac": 22, "actor_reg_iql": 17, "actor_reg_dr3": 10}
  for name, points in sizes.items():
    sweep = sweep_lib.load_sweep(name)
    assert len(sweep.runs) == points * 36 * 5
    names = [r.name for r in sweep.runs]
    assert len(set(names)) == len(names)
    assert {r.labels["dataset"] for r in sweep.runs} == set(study.DATASETS)
    assert {r.labels["seed"] for r in sweep.runs} == {f"seed{s}" for s in range(5)}
  rebrac_points = {r.labels["regularizer"] for r in sweep_lib.load_sweep("actor_reg_rebrac").runs}
  assert {"base", "LN", "FN", "GN", "SN", "DO", "L2", "L1", "EN", "InN", "BCN", "GrN", "LN+DO+GrN", "comb"} <= rebrac_points


def test_actor_regularization_runs_get_the_table_values_through_the_real_gin_parser():
  import gin
  from batch_rl_dr3 import train
  from batch_rl_dr3.continuous import actor_regularization
  from batch_rl_dr3.continuous import study
  runs = {r.name: r for name in ("actor_reg_rebrac", "actor_reg_iql", "actor_reg_dr3")
          for r in sweep_lib.load_sweep(name).runs}

  def parse(name):
    run = runs[name]
    train.parse_gin(run.gin_files, [b.replace("${data_dir}", "/data") for b in run.gin_bindings])
    return actor_regularization.ActorRegularization()

  try:
    reg = parse("actor_reg_rebrac/comb/hopper-medium-replay-v2/seed3")
    assert gin.query_parameter("ContinuousExperiment.agent_name") == "rebrac"
    assert _operative("ContinuousExperiment.task") == "hopper-medium-replay-v2"
    assert (reg.layer_norm, reg.dropout_rate, reg.grad_noise) == (True, 0.0, 0.003)  # §3.3
    assert _operative("ReBracAgent.actor_bc_coef") == 0.01 and _operative("ReBracAgent.num_classes") == 401
    assert _operative("ReBracAgent.v_expand") == -0.05 and _operative("ContinuousExperiment.batch_size") == 1024
    assert _operative("ContinuousExperiment.actor_variant") == "LN+DO+GrN(tuned)"

    parse("actor_reg_rebrac/L1/antmaze-large-diverse-v2/seed0")
    reg = actor_regularization.ActorRegularization()
    assert (reg.weight_decay, reg.l1_ratio, reg.layer_norm) == (1e-5, 1.0, False)
    assert _operative("ReBracAgent.gamma") == 0.999 and _operative("load_d4rl.reward_scale") == 100.0
    assert (_operative("ReBracAgent.v_min"), _operative("ReBracAgent.v_max")) == (0.0, 100.0)
    assert _operative("run_experiment.num_iterations") * _operative(
        "run_experiment.gradient_steps_per_iteration") == 1_000_000
    assert _operative("ContinuousExperiment.eval_episodes") == 100

    reg = parse("actor_reg_iql/base/pen-cloned-v1/seed1")
    assert gin.query_parameter("ContinuousExperiment.agent_name") == "iql"
    assert reg.dropout_rate == 0.1 and not reg.layer_norm  # Adroit baseline keeps IQL's dropout
    assert (_operative("IqlAgent.expectile"), _operative("IqlAgent.temperature")) == (0.9, 10)
    assert _operative("ContinuousExperiment.batch_size") == 256 and _operative("IqlAgent.tau") == 0.005

    reg = parse("actor_reg_dr3/iql-comb+dr3-c0.0001/antmaze-large-diverse-v2/seed4")
    assert (reg.layer_norm, reg.dropout_rate, reg.weight_decay, reg.l1_ratio) == (True, 0.1, 0.01, 0.5)
    assert gin.query_parameter("ContinuousExperiment.dr3_coefficient") == 0.0001
    assert gin.query_parameter("DR3.use_abs") is False and gin.query_parameter("DR3.stop_gradient_next") is True
    assert _operative("ContinuousExperiment.actor_variant") == "LN+DO+WD(tuned)"
    parse("actor_reg_dr3/rebrac-comb+dr3/walker2d-medium-v2/seed0")
    assert gin.query_parameter("ContinuousExperiment.dr3_coefficient") == 0.001
    assert _operative("study_value.dataset") == "walker2d-medium-v2"
    from batch_rl_dr3.data import d4rl
    for dataset in study.DATASETS:
      assert study.study_value("rebrac_num_classes", dataset) in (201, 401)
      d4rl.tfds_name(dataset)  # a task the D4RL loader knows
  finally:
    gin.clear_config()


def test_fig1_and_small_evidence_runs_get_each_backup_through_the_real_gin_parser():
  import gin
  from batch_rl_dr3 import train
  expected = {"monte_carlo": "monte_carlo", "sarsa": "sarsa", "td_behavior_policy": "behavior_policy",
              "q_learning": "q_learning", "q_learning+dr3": "q_learning", "td_behavior_policy_bc100k": "behavior_policy"}
  for name, size in (("fig1", 30), ("small_evidence", 30)):
    sweep = sweep_lib.load_sweep(name)
    assert len(sweep.runs) == size and len({r.name for r in sweep.runs}) == size
    for run in sweep.runs:
      if run.labels["seed"] != "seed0" or run.labels["game"] != "Breakout":
        continue
      flags = dict(run.flags)
      train.parse_gin(run.gin_files, train.flag_bindings("/data", flags["game"], int(flags["run"]),
                                                         int(flags["seed"])) + list(run.gin_bindings))
      arm = run.labels["arm"]
      assert gin.query_parameter("DQN.backup") == expected[arm]
      assert gin.query_parameter("AtariExperiment.agent_name") == "dqn"
      assert gin.query_parameter("AtariExperiment.evaluation_steps") == 0
      assert ("atari/dr3.gin" in run.gin_files) == arm.endswith("+dr3")
      if name == "fig1":  # the paper's "1% of uniformly-sampled data"
        assert gin.query_parameter("load_dataset.setting") == "1pct"
        assert gin.query_parameter("load_dataset.subset") == "uniform"
        if arm.startswith("td_behavior_policy"):
          assert gin.query_parameter("BehaviorPolicy.pretrain_steps") == (100_000 if "100k" in arm else 20_000)
  gin.clear_config()


def test_fig6_and_reinit_sweeps_build_the_agents_they_name():
  import gin
  from batch_rl_dr3 import labels
  from batch_rl_dr3.agents import create_agent
  from batch_rl_dr3.regularizers import LabelNoiseDR3
  from tests.test_agents import A, TableSampler
  fig6, reinit = sweep_lib.load_sweep("fig6_label_noise"), sweep_lib.load_sweep("reinit")
  assert (len(fig6.runs), len(reinit.runs)) == (3 * 5 * 3, 2 * 3 * 5)
  try:
    _parse_run(next(r for r in fig6.runs if r.labels["agent"] == "cql_qr+dr3_label_noise"))
    agent = create_agent("cql_qr", A, TableSampler(), data_setting="1pct")
    (penalty,) = agent.penalties
    assert isinstance(penalty, LabelNoiseDR3) and float(penalty.coefficient) == pytest.approx(0.03)
    assert labels.label_from_parts("cql_qr", agent.label_parts()) == "CQL+DR3-labelnoise (c0=0.03)"
    _parse_run(next(r for r in reinit.runs if r.labels["agent"] == "dqn+dr3" and r.labels["reinit"] == "features+head"))
    agent = create_agent("dqn", A, TableSampler(), data_setting="1pct")
    assert agent.reinitialization_steps() == (3_250_000,) and agent.reinitialize_layers == ("features", "head")
    assert labels.label_from_parts("dqn", agent.label_parts()) == (
        "DQN+DR3 (reinitialize_at_steps=3250000, reinitialize_layers=features+head, c0=0.03)")
  finally:
    gin.clear_config()
