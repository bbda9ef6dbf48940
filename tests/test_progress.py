"""The one progress display: plain lines (no carriage return) when redirected, a tqdm bar on a terminal."""
import re

from batch_rl_dr3 import progress as progress_lib
from batch_rl_dr3.progress import Progress


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_log_lines_give_count_rate_and_eta(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(progress_lib.time, "time", clock)
  lines = []
  with Progress("load Pong", 1000, "rows", every_seconds=10, terminal=False, log=lines.append) as p:
    clock.now += 5
    p.update(100)  # 5 s after the start: too early for a line
    clock.now += 5
    p.update(150, detail="2 checkpoints")  # 250 rows in 10 s: 25 rows/s, 750 left -> 30 s
    clock.now += 30
    p.update(750)
  assert lines == ["load Pong: 250/1,000 rows (25%), 25.0 rows/s, ETA 0m30s | 2 checkpoints",
                   "load Pong: 1,000/1,000 rows (100%), 25.0 rows/s, took 0m40s | 2 checkpoints"]
  assert not any("\r" in line for line in lines)


def test_resumed_phase_counts_only_new_work_in_the_rate(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(progress_lib.time, "time", clock)
  lines = []
  p = Progress("train", 10_000, "steps", initial=6_000, every_seconds=0, terminal=False, log=lines.append)
  clock.now += 100
  p.update(1_000)  # 1,000 new steps in 100 s: 10 steps/s; 3,000 left -> 300 s
  assert lines == ["train: 7,000/10,000 steps (70%), 10.0 steps/s, ETA 5m00s"]
  p.close()
  assert len(lines) == 1  # the last state was already logged


def test_close_logs_the_final_state_once(monkeypatch):
  lines = []
  p = Progress("eval Pong", None, "steps", every_seconds=1e9, terminal=False, log=lines.append)
  p.update(40)
  p.close()
  p.close()
  assert len(lines) == 1 and lines[0].startswith("eval Pong: 40 steps, ")


def test_terminal_gets_a_tqdm_bar_and_no_log_lines(capsys):
  lines = []
  with Progress("train", 50, "steps", terminal=True, log=lines.append) as p:
    for _ in range(5):
      p.update(10, detail="losses: td_loss=0.5")
  err = capsys.readouterr().err
  assert lines == []
  assert "\r" in err and re.search(r"train: 100%\|.*\| 50/50", err) and "td_loss=0.5" in err


def test_disabled_shows_nothing(capsys):
  lines = []
  with Progress("x", 3, "steps", enabled=False, terminal=False, log=lines.append) as p:
    p.update(3)
  assert lines == [] and capsys.readouterr().err == ""


def test_evaluation_reports_through_the_same_progress_lines(caplog):
  """Redirected (pytest's stderr is no terminal), an evaluation logs plain lines with its count and rate."""
  from batch_rl_dr3.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  caplog.set_level("INFO")
  result = evaluate(lambda states: [0] * len(states), "Breakout", num_steps=120, max_steps_per_episode=50, seed=0,
                    progress=True)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval Breakout: ")]
  assert any(line.startswith(f"eval Breakout: {result.steps:,}/") and " steps/s" in line for line in lines), lines
  assert not any("\r" in line for line in lines)


def test_dataset_loading_reports_rows_rate_and_duration(tmp_path, caplog):
  from batch_rl_dr3.data import fixed_replay  # pylint: disable=g-import-not-at-top
  from tests.replay_fixtures import write_run  # pylint: disable=g-import-not-at-top
  directory = write_run(str(tmp_path), num_checkpoints=2, capacity=120, seed=1)
  caplog.set_level("INFO")
  replay = fixed_replay.FixedReplay.from_checkpoints(directory, [0, 1])
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("load 2 checkpoint(s) of ")]
  assert len(lines) == 1 and f": {replay.num_rows}/{replay.num_rows} rows (100%), " in lines[0] and "took" in lines[0]


def test_continuous_evaluation_reports_episodes(caplog):
  import gymnasium  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from batch_rl_dr3.continuous.evaluation import rollout_returns  # pylint: disable=g-import-not-at-top
  caplog.set_level("INFO")
  env = gymnasium.make("Pendulum-v1")
  returns = rollout_returns(env, lambda obs: np.zeros(1, np.float32), num_episodes=3, seed=0, max_episode_steps=5)
  env.close()
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval Pendulum-v1: ")]
  assert len(lines) == 1 and lines[0].startswith("eval Pendulum-v1: 3/3 episodes (100%)")
  assert lines[0].endswith(f"mean return {np.mean(returns):.1f}")
