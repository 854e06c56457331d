"""The shared training loop: resume, data parallelism, vmapped seeds, one compilation."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g
from gapmmd_jax.train import (
  NonFiniteError,
  StopRequested,
  TrainConfig,
  _rundir,
  fit,
  request_stop,
  stop_on_signals,
  stop_signal,
)

from . import tiny_task

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def task(mnist_dir):
  return tiny_task.make_task(mnist_dir)


@pytest.fixture(scope="module")
def reference(task, tmp_path_factory):
  """An uninterrupted run with seeds 0 and 1."""
  return fit(task, tiny_task.config(tmp_path_factory.mktemp("ref"), seeds=(0, 1)))


def test_run_directory_and_single_compilation(reference):
  run = reference.run_dir
  for name in (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "README.txt",
    "checkpoint.msgpack",
  ):
    assert run.file(name).is_file(), name
  summary = json.loads(run.file("summary.json").read_text())
  assert summary["steps"] == 25 and summary["complete"]  # 2.5 epochs of 10 steps
  assert set(summary["final_eval"]["accuracy"]) == {"per_seed", "mean", "std"}
  assert summary["final_eval"]["accuracy"]["mean"] > 0.6
  rows = run.read_metrics()
  assert {r["split"] for r in rows} == {"train", "eval"}
  assert sorted({r["step"] for r in rows if r["split"] == "eval"}) == [7, 14, 21, 25]
  assert reference.num_traces == 1  # three epochs, four evaluations, one trace


def test_resume_matches_uninterrupted_run(task, reference, tmp_path):
  stopped = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), stop_after=11))
  assert stopped.summary["steps"] == 11 and not stopped.summary["complete"]
  (tmp_path / "run").rename(tmp_path / "moved")  # a renamed run continues under its new name
  cadence = {"log_every": 5, "checkpoint_every": 6}  # what is written when: training unchanged
  resumed = fit(
    task, tiny_task.config(tmp_path, seeds=(0, 1), resume=True, run_name="moved", **cadence)
  )
  assert resumed.summary["resumed_from_step"] == 11
  assert resumed.summary["changed_on_resume"] == {
    "run_name": {"saved": "run", "now": "moved"},
    "log_every": {"saved": 3, "now": 5},
    "checkpoint_every": {"saved": 4, "now": 6},
  }
  np.testing.assert_allclose(
    resumed.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-6,
    atol=1e-7,
  )
  assert resumed.final_eval == reference.final_eval


def test_resume_of_a_named_run_without_a_checkpoint_starts_it(task, reference, tmp_path, capsys):
  started = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), resume=True))
  assert "no checkpoint" in capsys.readouterr().err
  assert started.summary["resumed_from_step"] is None
  np.testing.assert_allclose(
    started.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-6,
    atol=1e-7,
  )
  with pytest.raises(FileNotFoundError, match="--run-name"):  # an unnamed one has nothing to find
    fit(task, tiny_task.config(tmp_path / "empty", run_name=None, resume=True))


def test_resume_refuses_changed_config_and_overwrite(task, reference, tmp_path):
  fit(task, tiny_task.config(tmp_path, stop_after=2))
  with pytest.raises(ValueError, match="batch_size: saved 64, now 32"):
    fit(task, tiny_task.config(tmp_path, batch_size=32, resume=True))
  with pytest.raises(ValueError, match="eval_every: saved 7, now 5"):  # host evals may keep state
    fit(task, tiny_task.config(tmp_path, eval_every=5, resume=True))

  @dataclasses.dataclass(frozen=True)
  class Probed(TrainConfig):  # an experiment's config with a field of its own
    probe_every: int = 1

  @dataclasses.dataclass(frozen=True)
  class ResumablyProbed(Probed):  # ... that --resume may change
    RESUMABLE = ("probe_every",)

  fields = dataclasses.asdict(tiny_task.config(tmp_path, resume=True))
  with pytest.raises(ValueError, match="probe_every: saved 1, now 3"):  # saved: the default
    fit(task, Probed(**fields, probe_every=3))
  resumed = fit(task, ResumablyProbed(**fields, probe_every=3))
  assert resumed.summary["changed_on_resume"] == {"probe_every": {"saved": 1, "now": 3}}
  with pytest.raises(FileExistsError, match="--resume"):
    fit(task, tiny_task.config(tmp_path))


def test_vmapped_seeds_equal_single_seed_runs(task, reference, tmp_path):
  alone = fit(task, tiny_task.config(tmp_path, seeds=(1,)))
  np.testing.assert_allclose(
    alone.state["state"]["params"]["w"][0],
    reference.state["state"]["params"]["w"][1],
    rtol=1e-5,
    atol=1e-6,
  )
  assert alone.final_eval["accuracy"][0] == pytest.approx(
    reference.final_eval["accuracy"][1], abs=1 / 300
  )


def _assert_matches_single_process(result, reference) -> None:
  """A sharded run's saved result equals the 1-device run and the unsharded MMD."""
  assert int(result["num_traces"]) == 1
  np.testing.assert_allclose(
    result["w"], reference.state["state"]["params"]["w"], rtol=1e-4, atol=1e-5
  )
  x, y = tiny_task.mmd_samples()
  np.testing.assert_allclose(
    result["mmd"], g.mmd2(x, y, estimator="unbiased"), rtol=1e-4, atol=1e-6
  )


def test_data_parallel_on_four_devices_matches_one(mnist_dir, reference, tmp_path):
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
  )
  out = tmp_path / "sharded.npz"
  subprocess.run(
    [
      sys.executable,
      os.path.join(HERE, "_sharded_run.py"),
      str(mnist_dir),
      str(tmp_path),
      str(out),
    ],
    env=env,
    check=True,
    timeout=600,
  )
  _assert_matches_single_process(np.load(out), reference)


def test_bad_batch_size(task, tmp_path):
  with pytest.raises(ValueError, match="exceeds the 640 training examples"):
    fit(task, tiny_task.config(tmp_path, batch_size=1024))


@pytest.mark.parametrize("seed_axis", ["vmap", "unroll"])
def test_seed_axis_modes_agree(task, reference, tmp_path, seed_axis):
  result = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), seed_axis=seed_axis))
  np.testing.assert_allclose(
    result.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-5,
    atol=1e-6,
  )
  assert result.num_traces == 1


def test_without_shuffling_every_epoch_takes_the_stored_order(task, tmp_path):
  """``shuffle=False``: step s of every epoch and seed trains on examples [64 s, 64 s + 64)
  (the first label of each batch, logged per step, over two epochs of 10 steps)."""

  def train_step(state, batch, key):
    state, metrics = task.train_step(state, batch, key)
    return state, {**metrics, "first_label": batch["label"][0].astype(jnp.float32)}

  hooked = dataclasses.replace(task, train_step=train_step)
  cfg = tiny_task.config(tmp_path, seeds=(0, 1), epochs=2.0, log_every=1, shuffle=False)
  rows = [r for r in fit(hooked, cfg).run_dir.read_metrics() if r["split"] == "train"]
  labels = task.train_data["label"]
  for seed in (0, 1):
    firsts = [r["first_label"] for r in rows if r["seed"] == seed]
    assert firsts == [float(labels[64 * (s % 10)]) for s in range(20)]


def test_host_update_runs_between_steps_on_every_seed(task, tmp_path):
  calls = []

  def host_update(states, step):
    calls.append(step)
    assert states["params"]["b"].shape == (2, 10)  # NumPy, every seed
    return {**states, "params": {**states["params"], "b": states["params"]["b"] * 0.0}}

  hooked = dataclasses.replace(task, host_update=host_update, host_update_every=10)
  result = fit(hooked, tiny_task.config(tmp_path, seeds=(0, 1), epochs=2.0))
  assert calls == [10, 20]
  np.testing.assert_array_equal(result.state["state"]["params"]["b"], 0.0)


def test_host_eval_keeps_its_state_logs_its_metrics_and_resumes(task, reference, tmp_path):
  """A counter kept by ``host_eval`` in the state: logged at every evaluation, checkpointed,
  continued by ``--resume``, left alone when resuming a finished run; training unchanged."""
  calls = []

  def host_eval(states, step):
    calls.append(step)
    assert states["count"].shape == (2, 1)  # NumPy, every seed
    count = states["count"] + 1.0
    return {**states, "count": count}, {"evaluations": count[:, 0]}

  def init(key):
    return {**task.init(key), "count": np.zeros((1,), np.float32)}

  def train_step(state, batch, key):
    inner, metrics = task.train_step(state, batch, key)
    return {**inner, "count": state["count"]}, metrics

  hooked = dataclasses.replace(task, init=init, train_step=train_step, host_eval=host_eval)
  first = fit(hooked, tiny_task.config(tmp_path, seeds=(0, 1), stop_after=14))
  assert calls == [7, 14]
  resumed = fit(hooked, tiny_task.config(tmp_path, seeds=(0, 1), resume=True))
  assert calls == [7, 14, 21, 25]
  rows = [r for r in resumed.run_dir.read_metrics() if r["split"] == "eval"]
  assert [(r["step"], r["evaluations"]) for r in rows if r["seed"] == 1] == [
    (7, 1.0),
    (14, 2.0),
    (21, 3.0),
    (25, 4.0),
  ]
  np.testing.assert_array_equal(resumed.state["state"]["count"], 4.0)
  assert resumed.summary["final_eval"]["evaluations"]["mean"] == 4.0
  np.testing.assert_allclose(
    resumed.state["state"]["params"]["w"], reference.state["state"]["params"]["w"], rtol=1e-6
  )
  fit(hooked, tiny_task.config(tmp_path, seeds=(0, 1), resume=True))  # already finished
  assert calls == [7, 14, 21, 25] and first.summary["steps"] == 14


def test_a_stop_request_ends_the_run_cleanly_and_resume_continues_it(task, reference, tmp_path):
  """A stop requested during step 6 (as the gapmmd command does on SIGINT / SIGTERM): the run
  ends at step 6 with an evaluation, a checkpoint and its summary there; a later fit refuses to
  start; resuming reaches the uninterrupted run's parameters."""

  def host_update(states, step):
    request_stop(signal.SIGTERM)
    return states

  hooked = dataclasses.replace(task, host_update=host_update, host_update_every=6)
  with stop_on_signals(enabled=False):  # the request is undone when the block ends
    stopped = fit(hooked, tiny_task.config(tmp_path, seeds=(0, 1)))
    with pytest.raises(StopRequested, match=r"not started, a stop was requested \(SIGTERM\)"):
      fit(task, tiny_task.config(tmp_path / "later", seeds=(0, 1)))
  assert stop_signal() is None
  assert (stopped.summary["steps"], stopped.summary["stopped_by"]) == (6, "SIGTERM")
  assert not stopped.summary["complete"]
  assert [r["step"] for r in stopped.run_dir.read_metrics() if r["split"] == "eval"] == [
    6,
    6,
  ]  # one per seed
  resumed = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), resume=True))
  assert resumed.summary["resumed_from_step"] == 6 and resumed.summary["stopped_by"] is None
  np.testing.assert_allclose(
    resumed.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-6,
    atol=1e-7,
  )


def test_a_stop_arriving_during_a_slow_step_ends_the_run_within_one_step(task, tmp_path):
  """The stop request comes from the device while it runs step 6, which then takes 1 s (a
  signal arriving mid-step): the host, which dispatches asynchronously, must not have run
  ahead to the next log step (25, the end) meanwhile; the run stops at step 6 or 7."""

  def on_device(step):
    if int(step) == 6:
      request_stop(signal.SIGTERM)
      time.sleep(1.0)

  def init(key):
    return {**task.init(key), "count": np.zeros((), np.int32)}

  def train_step(state, batch, key):
    inner, metrics = task.train_step(state, batch, key)
    jax.debug.callback(on_device, state["count"] + 1)
    return {**inner, "count": state["count"] + 1}, metrics

  hooked = dataclasses.replace(task, init=init, train_step=train_step)
  cfg = tiny_task.config(tmp_path, seeds=(0,), log_every=25, eval_every=25, checkpoint_every=25)
  with stop_on_signals(enabled=False):
    stopped = fit(hooked, cfg)
  assert stopped.summary["stopped_by"] == "SIGTERM"
  assert stopped.summary["steps"] in (6, 7), stopped.summary["steps"]
  assert int(stopped.state["state"]["count"][0]) == stopped.summary["steps"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_on_jax_distributed_match_one(mnist_dir, reference, tmp_path):
  """2 processes x 2 CPU devices over gloo: the same training run and sharded MMD."""
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
  )
  out, port = tmp_path / "multiprocess.npz", _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(HERE, "_multiprocess_run.py"),
        str(i),
        str(port),
        str(mnist_dir),
        str(tmp_path / "runs"),
        str(out),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=600)[0])
  finally:
    for proc in procs:
      proc.kill()
  if any(proc.returncode == 3 for proc in procs):
    pytest.skip("CPU collectives are unavailable in this jaxlib: " + logs[0].strip()[-500:])
  assert all(proc.returncode == 0 for proc in procs), "\n\n".join(log[-3000:] for log in logs)
  _assert_matches_single_process(np.load(out), reference)


def test_steps_per_call_equal_single_steps(task, reference, tmp_path):
  result = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), steps_per_call=4))
  np.testing.assert_allclose(
    result.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-6,
    atol=1e-7,
  )
  assert result.final_eval == reference.final_eval
  # Calls stop at every log (3), eval (7) and checkpoint (4) step: the same rows are written.
  rows = lambda r: [(row["step"], row["seed"], row["split"]) for row in r.run_dir.read_metrics()]
  assert rows(result) == rows(reference)
  # One compilation per distinct number of steps per call (calls of 1 to 4 steps here).
  assert 1 < result.num_traces <= 4


def _first_step_drawing(row: int, seeds: tuple[int, ...], batch_size: int, num_train: int) -> int:
  """The first (1-based) step at which any seed's epoch-0 batches contain ``row``."""
  from gapmmd_jax.data import _batching
  from gapmmd_jax.train._harness import _seed_keys

  permutations = np.asarray(_batching.epoch_permutations(_seed_keys(seeds)[1], 0, num_train))
  return min(int(np.flatnonzero(p == row)[0]) // batch_size + 1 for p in permutations)


def test_non_finite_loss_stops_and_resume_continues_from_the_last_finite_checkpoint(
  task, reference, tmp_path
):
  poisoned_row = 28
  first_bad = _first_step_drawing(poisoned_row, (0, 1), 64, 640)
  assert 5 <= first_bad <= 10, first_bad  # after the first checkpoint (step 4), within epoch 0
  images = task.train_data["image"].copy()
  images[poisoned_row] = np.nan
  poisoned = dataclasses.replace(task, train_data={**task.train_data, "image": images})
  expected = r"diverged at step 6: non-finite training metric: (.*, )?loss(, .*)? \(seed 1\)"
  with pytest.raises(NonFiniteError, match=expected):
    fit(poisoned, tiny_task.config(tmp_path, seeds=(0, 1)))
  run = _rundir.RunDir(tmp_path / "run")
  saved = run.load_checkpoint(reference.state)
  assert int(saved["step"][0]) == 4 * ((first_bad - 1) // 4)  # the last checkpoint before it
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved))
  # Resuming (here with the clean data) continues from that checkpoint.
  resumed = fit(task, tiny_task.config(tmp_path, seeds=(0, 1), resume=True))
  assert resumed.summary["resumed_from_step"] == int(saved["step"][0])
  np.testing.assert_allclose(
    resumed.state["state"]["params"]["w"],
    reference.state["state"]["params"]["w"],
    rtol=1e-6,
    atol=1e-7,
  )


def test_non_finite_options_are_rejected():
  with pytest.raises(ValueError, match="epochs must be finite"):
    tiny_task.config("/tmp", epochs=float("inf"))
