"""Config variants and overrides, the CLI, and the README's code example."""

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from gapmmd_jax import _xla_flags, cli
from gapmmd_jax._xla_flags import YNN_DOTS, with_xla_flags
from gapmmd_jax.experiments import gap_mmd, vat

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def parse(argv):
  return cli._parser().parse_args(argv)


def test_variant_and_overrides():
  args = parse(
    [
      "gap-mmd",
      "--variant",
      "quick",
      "--seeds",
      "3",
      "4",
      "--learning-rate",
      "0.01",
      "--dataset",
      "cluttered_mnist",
      "--no-progress",
      "--max-eval-examples",
      "50",
    ]
  )
  cfg = cli.config_lib.from_arguments(args, gap_mmd.VARIANTS)
  expected = dataclasses.replace(
    gap_mmd.VARIANTS["quick"],
    seeds=(3, 4),
    learning_rate=0.01,
    dataset="cluttered_mnist",
    progress=False,
    max_eval_examples=50,
  )
  assert cfg == expected


def test_a_saved_config_reads_back():
  cfg = dataclasses.replace(gap_mmd.VARIANTS["quick"], seeds=(3, 4), learning_rate=0.01)
  saved = {"experiment": "gap-mmd", "variant": "quick", **cli.config_lib.to_dict(cfg)}
  saved = json.loads(json.dumps({**saved, "xla_flags": "--x"}))  # as config.json holds it
  assert cli.config_lib.from_dict(gap_mmd.Config, saved) == cfg
  del saved["learning_rate"]  # a field added after the run was saved: its default
  assert cli.config_lib.from_dict(gap_mmd.Config, saved) == dataclasses.replace(
    cfg, learning_rate=gap_mmd.Config().learning_rate
  )


def test_typos_and_bad_values_are_rejected(capsys):
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--learning-rat", "0.1"])
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--dataset", "cifar"])
  assert cli.main(["gap-mmd", "--seeds", "1", "1"]) == 2
  assert "seeds must be distinct" in capsys.readouterr().err


def test_missing_data_is_a_message_not_a_traceback(tmp_path, capsys):
  assert (
    cli.main(
      [
        "gap-mmd",
        "--variant",
        "quick",
        "--data-dir",
        str(tmp_path / "none"),
        "--out-dir",
        str(tmp_path),
      ]
    )
    == 2
  )
  err = capsys.readouterr().err
  assert "train-images-idx3-ubyte.gz" in err and "no such directory" in err


def test_xla_choice_is_added_to_xla_flags(monkeypatch, capsys):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  monkeypatch.setattr(_xla_flags, "_backends_initialized", lambda: False)
  assert cli.main(["--xla", "default", "gap-mmd", "--seeds", "1", "1"]) == 2  # bad option first
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
  assert cli.main(["--xla", "default", "gap-mmd", "--data-dir", "/nonexistent"]) == 2
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
  assert cli.main(["--ynn-dots", "gap-mmd", "--data-dir", "/nonexistent"]) == 2
  assert os.environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {YNN_DOTS}"
  assert "XLA: ynn (chosen with --xla)" in capsys.readouterr().err
  assert with_xla_flags(YNN_DOTS, "", base=f"-a {YNN_DOTS}") == f"-a {YNN_DOTS}"


def test_auto_xla_is_the_measured_fastest_and_divides_the_batch(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setattr(_xla_flags, "_jaxlib_version", lambda: "0.10.2")
  for command, name in _xla_flags.FASTEST.items():
    chosen = _xla_flags.choose("auto", command, batch_size=128)
    assert chosen[:2] == (name, _xla_flags.SETTINGS[name])
  assert _xla_flags.choose("auto", "mine")[1] == _xla_flags.SETTINGS["default"]
  # `gapmmd vat` picks by step: the CNN without its VAT loss has a setting of its own.
  assert vat.xla_step(vat.Config()) == "vat"
  assert vat.xla_step(vat.Config(vat=False)) == "vat --no-vat" in _xla_flags.FASTEST
  assert vat.xla_step(vat.Config(vat=False, table=True)) == "vat"
  assert vat.xla_step(vat.Config(vat=False, model="mlp", dropout=False)) == "vat"
  # Host devices divide the batch; none forced under --distributed or when XLA_FLAGS has them.
  assert _xla_flags.choose("ynn-4dev", "vat", batch_size=6)[1] == _xla_flags.Setting(3, True)
  assert _xla_flags.choose("4dev", "vat", batch_size=128, distributed=True)[1].host_devices == 1
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert _xla_flags.choose("4dev", "vat", batch_size=128)[1].host_devices == 1
  monkeypatch.delenv("XLA_FLAGS")
  # The experimental YNNPACK flag only on the jaxlib series it was measured on; nothing on GPUs.
  monkeypatch.setattr(_xla_flags, "_jaxlib_version", lambda: "0.11.0")
  assert _xla_flags.choose("auto", "vat", batch_size=128)[1] == _xla_flags.Setting(1, False)
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert _xla_flags.choose("auto", "vat", batch_size=128)[1] == _xla_flags.SETTINGS["default"]
  with pytest.raises(ValueError, match="--xla must be one of"):
    _xla_flags.choose("fast", "vat")


def test_host_devices_outwait_a_lagging_device():
  """XLA ends the process when a collective's devices arrive further apart than
  its terminate timeout; the flags that come with host devices raise it."""
  script = pathlib.Path(__file__).parent / "train" / "_lagging_collective_run.py"
  flags = _xla_flags.setting_flags(_xla_flags.Setting(2, False))

  def run(flags):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
    return subprocess.run(
      [sys.executable, str(script), "4"], env=env, capture_output=True, text=True, timeout=300
    )

  # XLA warns after the first timeout and ends the process the second one later.
  short = [re.sub(r"_seconds=\d+$", "_seconds=1", f) for f in flags]
  assert short != flags
  cut_short = run(short)
  assert cut_short.returncode != 0
  assert "Termination timeout for `all reduce" in cut_short.stderr
  waited = run(flags)
  assert waited.returncode == 0, waited.stderr[-2000:]
  assert waited.stdout.strip() == "arrived"


def test_auto_xla_applies_in_a_fresh_process_and_is_recorded(mnist_dir, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", GAPMMD_XLA="auto")
  env.pop("XLA_FLAGS", None)
  subprocess.run(
    [
      sys.executable,
      "-m",
      "gapmmd_jax.cli",
      "vat",
      "--variant",
      "quick",
      "--epochs",
      "0.1",
      "--max-eval-examples",
      "200",
      "--data-dir",
      str(mnist_dir),
      "--out-dir",
      str(tmp_path),
      "--run-name",
      "r",
      "--no-progress",
    ],
    env=env,
    check=True,
    timeout=600,
    capture_output=True,
  )
  batch_size = vat.VARIANTS["quick"].batch_size
  _, setting, _ = _xla_flags.choose("auto", "vat", batch_size=batch_size)
  assert setting.ynn_dots  # something to check
  summary = json.loads((tmp_path / "r" / "summary.json").read_text())
  config = json.loads((tmp_path / "r" / "config.json").read_text())
  assert summary["xla_flags"] == config["xla_flags"] == " ".join(_xla_flags.setting_flags(setting))
  assert len(summary["devices"]) == setting.host_devices


def test_sigterm_stops_a_run_cleanly_with_its_checkpoint_and_summary(mnist_dir, tmp_path):
  """SIGTERM (what `timeout` and batch queues send) once training has logged: the run stops
  after the steps in flight with a checkpoint and a summary there, and the command exits
  with 128 + 15; `--resume` would continue from that step."""
  run_dir = tmp_path / "r"
  command = [sys.executable, "-m", "gapmmd_jax.cli", "vat", "--variant", "quick"]
  command += ["--epochs", "50", "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path)]
  command += ["--run-name", "r", "--no-progress"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
      time.sleep(0.2)  # the first metrics row: the step has compiled and runs
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert "SIGTERM: stopping after the steps in flight" in stderr
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["stopped_by"] == "SIGTERM" and not summary["complete"]
  assert 0 < summary["steps"] < summary["planned_steps"]
  assert (run_dir / "checkpoint.msgpack").is_file()
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in rows if r["split"] == "eval") == summary["steps"]


def test_help_lists_every_option_with_variant_values(capsys):
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--help"])
  text = capsys.readouterr().out
  for field in dataclasses.fields(gap_mmd.Config):
    assert "--" + field.name.replace("_", "-") in text
  assert "quick=2.0" in text.replace(" ", "")  # epochs of the quick variant


def test_command_list_gives_each_experiment_its_whole_first_sentence(capsys):
  with pytest.raises(SystemExit):
    parse(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "the dropout x VAT table, and semi-supervised MNIST with 100 labels." in text
  assert "Experiment 3: domain adaptation MNIST -> MNIST-M: MMD alignment" in text
  assert "probe how well other probes read the latents of a MINE" in text  # wrapped at "-"


def test_readme_quickstart_prints_what_the_readme_shows(capsys):
  quickstart = README.read_text().split("## Quickstart", 1)[1]
  code = re.search(r"```python\n(.*?)```", quickstart, re.S)
  shown = re.search(r"```text\n(.*?)```", quickstart, re.S)
  assert code and shown, "the README's quickstart needs its code and its output"
  assert len(code.group(1).strip().splitlines()) <= 20
  exec(compile(code.group(1), str(README), "exec"), {})
  assert capsys.readouterr().out == shown.group(1)


def test_diverging_run_stops_with_an_error_and_no_nan_checkpoint(mnist_dir, tmp_path, capsys):
  assert cli.main(["gap-mmd", "--learning-rate", "nan"]) == 2
  assert "learning_rate must be finite, got nan" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "gap-mmd",
        "--variant",
        "quick",
        "--learning-rate",
        "1e30",
        "--epochs",
        "0.5",
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "big",
        "--no-progress",
      ]
    )
    == 1
  )
  err = capsys.readouterr().err
  assert "training diverged at step 8: non-finite training metric:" in err and "loss" in err
  assert not (tmp_path / "big" / "checkpoint.msgpack").exists()
