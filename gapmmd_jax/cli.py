"""The ``gapmmd`` command: one subcommand per experiment, ``gapmmd bench NAME``, and the
commands on run directories ``gapmmd curves RUN_DIR ...`` and ``gapmmd probe RUN_DIR``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from gapmmd_jax import _xla_flags, config as config_lib

BENCHMARKS = {
  "mmd": "gapmmd_jax.benchmarks.mmd_throughput",
  "seed-axis": "gapmmd_jax.benchmarks.seed_axis",
  "test": "gapmmd_jax.benchmarks.two_sample_test",
  "train": "gapmmd_jax.benchmarks.train_step",
}
# Commands on run directories: each module has ``add_arguments(parser)`` and ``run(args)``.
TOOLS = {"curves": "gapmmd_jax.curves", "probe": "gapmmd_jax.probe"}


def _plain_text(docstring: str) -> str:
  """A module docstring for ``--help``: RST's literal-block markers ``::`` become ``:`` or go."""
  return docstring.replace(" ::\n", "\n").replace("::\n", ":\n")


def _summary(doc: str) -> str:
  """The first paragraph of a ``--help`` text on one line: a command's line in ``gapmmd -h``."""
  return " ".join(doc.split("\n\n")[0].split())


def _parser() -> argparse.ArgumentParser:
  from gapmmd_jax.experiments import EXPERIMENTS

  parser = argparse.ArgumentParser(
    prog="gapmmd",
    description="gapmmd-jax experiments: MMD, mutual information, "
    "gradient reversal and VAT on MNIST-family data.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize() first (multi-process runs; "
    "the coordinator, process count and id come from the cluster "
    "environment (e.g. SLURM) or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
    "JAX_PROCESS_ID; on CPU-only hosts also set "
    "JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo)",
  )
  parser.add_argument(
    "--xla",
    choices=_xla_flags.CHOICES,
    default=os.environ.get("GAPMMD_XLA", "auto"),
    help="XLA settings of an experiment, added to XLA_FLAGS before JAX starts: "
    "default = no flags; ynn = XLA's YNNPACK dots "
    f"({_xla_flags.YNN_DOTS}); 2dev / 4dev = the batch split over 2 / 4 host "
    f"devices ({_xla_flags.HOST_DEVICES}=N, with XLA's collective timeouts "
    "raised); ynn-2dev / ynn-4dev = both; auto = per experiment, the fastest "
    "that `gapmmd bench train` measured on a CPU ("
    + ", ".join(f"{command}: {name}" for command, name in _xla_flags.FASTEST.items())
    + "; others default), nothing on a GPU; host devices are cut to divide the "
    "batch size. Recorded in the run's config.json and summary.json. Changes "
    "float rounding, not results. $GAPMMD_XLA sets the default",
  )
  parser.add_argument(
    "--ynn-dots", action="store_true", help="the same as --xla ynn (kept for older commands)"
  )
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, module in EXPERIMENTS.items():
    doc = _plain_text((module.__doc__ or "").strip())
    experiment = sub.add_parser(
      name,
      help=_summary(doc) or name,
      description=doc,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False,
    )
    config_lib.add_arguments(experiment, module.Config, module.VARIANTS, module.DEFAULT_VARIANT)
    experiment.set_defaults(module=module)
  bench = sub.add_parser(
    "bench",
    help="benchmarks: " + ", ".join(BENCHMARKS),
    description="Run a benchmark; `gapmmd bench NAME --help` for its options.",
  )
  bench.add_argument("benchmark", choices=sorted(BENCHMARKS))
  bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark")
  for name, module_name in TOOLS.items():
    tool = importlib.import_module(module_name)
    doc = _plain_text((tool.__doc__ or "").strip())
    tool.add_arguments(
      sub.add_parser(
        name,
        help=_summary(doc).removeprefix(f"``gapmmd {name}``: ").rstrip("."),
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
      )
    )
  return parser


def _initialize_distributed() -> None:
  """``jax.distributed.initialize``, with the process count and id from the environment if set."""
  import jax

  counts: dict[str, Any] = {
    key: int(os.environ[env])
    for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
    if os.environ.get(env)
  }
  jax.distributed.initialize(**counts)


# Modules of the ``experiments`` extra: the core install (jax, numpy, scipy) lacks them.
EXPERIMENT_MODULES = ("flax", "optax", "tensorflow_datasets", "PIL", "tqdm")


def main(argv: list[str] | None = None) -> int:
  try:
    parser = _parser()
  except ModuleNotFoundError as e:
    if e.name not in EXPERIMENT_MODULES:
      raise
    print(
      f"gapmmd: the experiments need the 'experiments' extra (no module {e.name!r}): "
      "pip install 'gapmmd-jax[experiments]'",
      file=sys.stderr,
    )
    return 2
  args = parser.parse_args(argv)
  if args.command == "bench":  # each benchmark cell sets its own flags
    if args.distributed:
      _initialize_distributed()
    return importlib.import_module(BENCHMARKS[args.benchmark]).main(args.options)
  if args.command in TOOLS:
    return importlib.import_module(TOOLS[args.command]).run(args)
  from gapmmd_jax.train import NonFiniteError, StopRequested, stop_on_signals, stop_signal

  module = args.module
  try:
    cfg = config_lib.from_arguments(args, module.VARIANTS)
    # XLA reads its flags when JAX creates its backends, which nothing above has done.
    step = module.xla_step(cfg) if hasattr(module, "xla_step") else args.command
    print(
      _xla_flags.configure(
        "ynn" if args.ynn_dots else args.xla,
        step,
        batch_size=getattr(cfg, "batch_size", None),
        distributed=args.distributed,
      ),
      file=sys.stderr,
      flush=True,
    )
    if args.distributed:
      _initialize_distributed()
    # One process: SIGINT / SIGTERM stop the run cleanly (a checkpoint and the summary at
    # the step reached) and the command exits with 128 + the signal's number.
    with stop_on_signals(enabled=not args.distributed):
      try:
        module.run(cfg, args.variant)
      except StopRequested as e:
        print(f"gapmmd {args.command}: {e}", file=sys.stderr)
      stopped_by = stop_signal()
    if stopped_by is not None:
      print(f"gapmmd {args.command}: stopped early by a signal", file=sys.stderr)
      return 128 + stopped_by
  except NonFiniteError as e:
    print(f"gapmmd {args.command}: error: {e}", file=sys.stderr)
    return 1
  except (OSError, TypeError, ValueError) as e:  # bad options, missing data, resume mismatch
    print(f"gapmmd {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
