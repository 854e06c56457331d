"""experiments/timeboxed_run.sh: a run cut into time-limited calls that continue its checkpoint."""

import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "timeboxed_run.sh"


def _call(seconds, dest, env, *extra):
  argv = [str(SCRIPT), str(seconds), "vat-quick", str(dest), "vat", "--variant", "quick", *extra]
  return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def test_calls_continue_the_run_and_copy_all_but_the_checkpoint(tmp_path, mnist_dir):
  env = {
    **os.environ,
    "GAPMMD_DATA_DIR": str(mnist_dir),
    "GAPMMD_RUNS_DIR": str(tmp_path / "runs"),
    "PYTHON": sys.executable,
  }
  dest = tmp_path / "out"
  run_dir, copied = tmp_path / "runs" / "vat-quick", dest / "vat-quick"

  first = _call(600, dest, env, "--stop-after", "4")  # a stop, as at the end of a time limit
  assert first.returncode == 0, first.stdout + first.stderr
  assert (run_dir / "checkpoint.msgpack").is_file()
  assert not json.loads((run_dir / "summary.json").read_text())["complete"]
  assert {"config.json", "metrics.jsonl", "log.txt"} <= {p.name for p in copied.iterdir()}

  second = _call(600, dest, env)
  assert second.returncode == 0, second.stdout + second.stderr
  assert "--run-name vat-quick --resume" in second.stdout
  summary = json.loads((copied / "summary.json").read_text())
  assert summary["complete"] and summary["resumed_from_step"] == 4
  assert not (copied / "checkpoint.msgpack").exists()
  steps = [json.loads(line)["step"] for line in (copied / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(steps) and steps[-1] > 4

  log = (copied / "log.txt").read_text()
  assert log.count("exit status 0") == 2

  cut = _call(1, dest, env)  # no time to start: the time-out's status comes back
  assert cut.returncode == 124
  assert "exit status 124" in (copied / "log.txt").read_text()


def test_usage_without_arguments():
  result = subprocess.run([str(SCRIPT)], capture_output=True, text=True)
  assert result.returncode == 2
  assert "SECONDS RUN_NAME DEST EXPERIMENT" in result.stderr
