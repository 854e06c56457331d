"""The ``gapmmd`` command: one subcommand per experiment, and ``gapmmd bench NAME``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gapmmd_jax import config as config_lib
from gapmmd_jax._xla_flags import YNN_DOTS, with_xla_flags

BENCHMARKS = {"mmd": "gapmmd_jax.benchmarks.mmd_throughput",
              "seed-axis": "gapmmd_jax.benchmarks.seed_axis",
              "train": "gapmmd_jax.benchmarks.train_step"}


def _parser() -> argparse.ArgumentParser:
  from gapmmd_jax.experiments import EXPERIMENTS

  parser = argparse.ArgumentParser(
      prog="gapmmd", description="gapmmd-jax experiments: MMD, mutual information, "
      "gradient reversal and VAT on MNIST-family data.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
  parser.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() first (multi-process runs; "
                      "the coordinator, process count and id come from the cluster "
                      "environment (e.g. SLURM) or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                      "JAX_PROCESS_ID; on CPU-only hosts also set "
                      "JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo)")
  parser.add_argument("--ynn-dots", action="store_true",
                      help=f"opt into XLA's experimental YNNPACK kernels for dots and "
                      f"convolution weight gradients on CPU (adds {YNN_DOTS} to XLA_FLAGS): 1.8-3.5x "
                      "faster VAT and DANN steps on a 2-core CPU, slower GAP-LeNet ones (README, "
                      "'Train-step throughput')")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, module in EXPERIMENTS.items():
    doc = (module.__doc__ or "").strip()
    experiment = sub.add_parser(name, help=doc.splitlines()[0] if doc else name,
                                description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    config_lib.add_arguments(experiment, module.Config, module.VARIANTS, module.DEFAULT_VARIANT)
    experiment.set_defaults(module=module)
  bench = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS),
                         description="Run a benchmark; `gapmmd bench NAME --help` for its options.")
  bench.add_argument("benchmark", choices=sorted(BENCHMARKS))
  bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark")
  return parser


def _initialize_distributed() -> None:
  """``jax.distributed.initialize``, with the process count and id from the environment if set."""
  import jax
  counts = {key: int(os.environ[env]) for key, env in (("num_processes", "JAX_NUM_PROCESSES"),
                                                         ("process_id", "JAX_PROCESS_ID"))
            if os.environ.get(env)}
  jax.distributed.initialize(**counts)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.ynn_dots:  # read when JAX creates its CPU client, which nothing above has done
    os.environ["XLA_FLAGS"] = with_xla_flags(YNN_DOTS)
  if args.distributed:
    _initialize_distributed()
  if args.command == "bench":
    return importlib.import_module(BENCHMARKS[args.benchmark]).main(args.options)
  module = args.module
  try:
    cfg = config_lib.from_arguments(args, module.VARIANTS)
    module.run(cfg, args.variant)
  except (OSError, TypeError, ValueError) as e:  # bad options, missing data, resume mismatch
    print(f"gapmmd {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
