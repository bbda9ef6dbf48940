"""The one label rule: runs that differ in c0, DR3 form, CQL alpha, backup or a penalty get different labels,
identical settings the same label, and an explicit label wins; the report derives the same label from
run_info.json."""
import pytest

from batch_rl_dr3 import labels
from batch_rl_dr3.agents import CQLQR, DQN, REM
from batch_rl_dr3.regularizers import DR3, SrankPenalty
from tests.test_agents import A, TableSampler

TABLE = {"1pct": 4.0, "5pct": 1.0}


def cql(data_setting="1pct", **kwargs):
  return CQLQR(A, TableSampler(), cql_alpha_by_setting=TABLE, data_setting=data_setting, **kwargs)


def label(agent, name):
  return labels.label_from_parts(name, agent.label_parts())


def test_defaults_give_the_bare_agent_name_and_each_penalty_adds_its_settings():
  assert label(cql(), "cql_qr") == "CQL"
  assert label(cql("5pct"), "cql_qr") == "CQL"  # alpha 1.0 is the 5 % default of the table
  assert label(cql(penalties=[DR3(0.03)]), "cql_qr") == "CQL+DR3 (c0=0.03)"
  assert label(REM(A, TableSampler(), num_heads=2), "rem") == "REM (num_heads=2)"
  two = label(DQN(A, TableSampler(), penalties=[DR3(0.1), SrankPenalty(0.01)]), "dqn")
  assert two == "DQN+DR3+srank (DR3.c0=0.1, srank.c0=0.01)"


@pytest.mark.parametrize("first,second", [
    (dict(penalties=[DR3(0.01)]), dict(penalties=[DR3(0.03)])),                                       # c0
    (dict(penalties=[DR3(0.1)]), dict(penalties=[DR3(0.1, reduction="mean", use_abs=True)])),         # form
    (dict(penalties=[DR3(0.1)]), dict(penalties=[DR3(0.1, stop_gradient_next=True)])),                # form
    (dict(), dict(cql_alpha=0.1)),                                                                     # alpha
    (dict(), dict(backup="sarsa")),                                                                    # backup
    (dict(penalties=[DR3(0.1)]), dict(penalties=[SrankPenalty(0.1)])),                                 # penalty
])
def test_runs_that_differ_get_different_labels(first, second):
  assert label(cql(**first), "cql_qr") != label(cql(**second), "cql_qr")


def test_identical_settings_get_the_same_label_and_named_forms_read_as_names():
  one = label(cql(penalties=[DR3(0.1, reduction="mean", use_abs=True)]), "cql_qr")
  assert one == label(cql(penalties=[DR3(0.1, reduction="mean", use_abs=True)]), "cql_qr")
  assert one == "CQL+DR3 (c0=0.1, form=dopamine)"
  # An unnamed combination lists what differs from the paper's form.
  odd = label(cql(penalties=[DR3(0.1, use_abs=True)]), "cql_qr")
  assert odd == "CQL+DR3 (c0=0.1, use_abs=true)"
  assert label(cql(backup="sarsa"), "cql_qr") == "CQL (backup=sarsa)"
  assert label(cql(cql_alpha=4.0), "cql_qr") == "CQL"  # the 1 % default, given explicitly
  assert label(cql(cql_alpha=0.1), "cql_qr") == "CQL (cql_alpha=0.1)"


def test_an_explicit_label_wins():
  agent = cql(penalties=[DR3(0.03)])
  assert labels.label_from_parts("cql_qr", agent.label_parts(), label="mine") == "mine"
  info = {"agent": "cql_qr", "label": "mine", "label_parts": agent.label_parts()}
  assert labels.label_from_run_info(info) == "mine"


def test_the_report_derives_the_same_label_from_run_info():
  agent = cql("5pct", cql_alpha=0.5, penalties=[DR3(0.01)])
  want = label(agent, "cql_qr")
  assert want == "CQL+DR3 (cql_alpha=0.5, c0=0.01)"
  assert labels.label_from_run_info({"agent": "cql_qr", "label_parts": agent.label_parts()}) == want
  # Folders written before label_parts: agent, dr3_coefficient and backup still separate.
  assert labels.label_from_run_info({"agent": "dqn", "dr3_coefficient": 0.1, "backup": "sarsa"}) == (
      "DQN+DR3 (backup=sarsa, c0=0.1)")
  assert labels.base_label(want) == "CQL+DR3"
