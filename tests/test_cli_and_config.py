"""Config variants and overrides, the CLI, and the README's code example."""

import dataclasses
import os
import pathlib
import re

import numpy as np
import pytest

from gapmmd_jax import cli
from gapmmd_jax._xla_flags import YNN_DOTS, with_xla_flags
from gapmmd_jax.experiments import gap_mmd

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def parse(argv):
  return cli._parser().parse_args(argv)


def test_variant_and_overrides():
  args = parse(["gap-mmd", "--variant", "quick", "--seeds", "3", "4", "--learning-rate", "0.01",
                "--dataset", "cluttered_mnist", "--no-progress", "--max-eval-examples", "50"])
  cfg = cli.config_lib.from_arguments(args, gap_mmd.VARIANTS)
  expected = dataclasses.replace(gap_mmd.VARIANTS["quick"], seeds=(3, 4), learning_rate=0.01,
                                 dataset="cluttered_mnist", progress=False, max_eval_examples=50)
  assert cfg == expected


def test_typos_and_bad_values_are_rejected(capsys):
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--learning-rat", "0.1"])
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--dataset", "cifar"])
  assert cli.main(["gap-mmd", "--seeds", "1", "1"]) == 2
  assert "seeds must be distinct" in capsys.readouterr().err


def test_missing_data_is_a_message_not_a_traceback(tmp_path, capsys):
  assert cli.main(["gap-mmd", "--variant", "quick", "--data-dir", str(tmp_path / "none"),
                   "--out-dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "train-images-idx3-ubyte.gz" in err and "no such directory" in err


def test_ynn_dots_is_an_opt_in_added_to_xla_flags(monkeypatch, capsys):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  assert cli.main(["gap-mmd", "--seeds", "1", "1"]) == 2  # fails after the flags are settled
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
  assert cli.main(["--ynn-dots", "gap-mmd", "--seeds", "1", "1"]) == 2
  assert os.environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {YNN_DOTS}"
  assert with_xla_flags(YNN_DOTS, "", base=f"-a {YNN_DOTS}") == f"-a {YNN_DOTS}"
  capsys.readouterr()


def test_help_lists_every_option_with_variant_values(capsys):
  with pytest.raises(SystemExit):
    parse(["gap-mmd", "--help"])
  text = capsys.readouterr().out
  for field in dataclasses.fields(gap_mmd.Config):
    assert "--" + field.name.replace("_", "-") in text
  assert "quick=2.0" in text.replace(" ", "")  # epochs of the quick variant


def test_readme_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert blocks, "README has no python example"
  namespace = {}
  exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
  assert namespace["loss"].shape == () and np.isfinite(float(namespace["loss"]))
