"""Train-step throughput: our jitted steps against the same steps in PyTorch.

Models: the GAP-LeNet step (batch 128, Adam), the VAT CNN with dropout without
and with the VAT loss (batch 128, Adadelta), the semi-supervised VAT MLP
(``vat-mlp``: 100 labelled + 250 unlabelled images, VAT and entropy
minimisation, Adam; no PyTorch cells), the DANN step (32 source + 32
target images, SGD with momentum, gradient reversal), and the IIC and
MINE-clustering steps (VGG with BatchNorm, 256 image pairs, Adam; no PyTorch
cells), and IIC's paper recipe (``iic-paper``: 140 images, 5 transforms of
each, 700 pairs from 840 forwarded images). Every cell runs in its own
process with 2 threads: ours (the experiment's own ``train_step``, jitted with the state donated) on 1 device
and 1 seed with XLA's default flags (``jax``) and with what ``gapmmd --xla
auto`` chooses for the experiment (``jax-auto``: what a plain ``gapmmd``
command runs); PyTorch eager and ``torch.compile`` (the same model, batch and
optimizer); ours with the batch sharded over 2 and 4 forced host devices; with
4 and 8 seeds in one step (``--seed-axis auto``: unrolled on CPU, vmapped
elsewhere); 8 steps per jitted call (``jax-8steps``, the harness's
``--steps-per-call 8`` loop); the ``-ynn`` cells add the YNNPACK flag of
``gapmmd --xla ynn``; the ``-bf16`` cells run the VGG models' convolutions in
bfloat16 (``--compute-dtype bfloat16``). Each cell warms up, then times calls until 20 or
``--max-seconds``, and reports the median as images per second (per seed).

  gapmmd bench train                          # everything (about 8 min on 2 cores)
  gapmmd bench train --models gap-lenet --cells jax torch-eager
Writes JSON and markdown to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any, NamedTuple

import numpy as np

from gapmmd_jax import _xla_flags
from gapmmd_jax._xla_flags import with_xla_flags
from gapmmd_jax.benchmarks._cells import positive_float, run_cell, write_results

MODELS = (
  "gap-lenet",
  "vat",
  "vat+loss",
  "vat-mlp",
  "dann",
  "iic",
  "iic-paper",
  "mine-cluster",
)
# Images drawn per step (IIC's paper recipe: 140 images, each giving 5 pairs; the
# semi-supervised MLP: 100 labelled + 250 unlabelled).
IMAGES_PER_STEP = {
  "gap-lenet": 128,
  "vat": 128,
  "vat+loss": 128,
  "vat-mlp": 350,
  "dann": 64,
  "iic": 256,
  "iic-paper": 140,
  "mine-cluster": 256,
}
# Rows of the batch the step is given, where not all of its images (DANN: the 32 source
# images, the target ones come from the same rows; the MLP: the unlabelled images, the
# labelled ones are drawn inside the step).
BATCH_ROWS = {"dann": 32, "vat-mlp": 250}
# Each model's key in `_xla_flags.FASTEST`: its experiment, or the experiment's
# `xla_step` where one experiment trains several of these steps.
XLA_STEP = {
  "gap-lenet": "gap-mmd",
  "vat": "vat --no-vat",
  "vat+loss": "vat",
  "vat-mlp": "vat",
  "dann": "adapt",
  "iic": "iic",
  "iic-paper": "iic",
  "mine-cluster": "mine-cluster",
}
TORCH_MODELS = ("gap-lenet", "vat", "vat+loss", "dann")
VGG_MODELS = ("iic", "iic-paper", "mine-cluster")  # the ones with a `compute_dtype` option


class Cell(NamedTuple):
  implementation: str
  devices: int = 1
  seeds: int = 1
  ynn_dots: bool = False
  steps_per_call: int = 1
  auto: bool = False  # devices and flags from `gapmmd --xla auto` for the model's experiment
  compute_dtype: str = "float32"  # the VGG models' convolutions


CELLS = {
  "jax": Cell("jax"),
  "jax-auto": Cell("jax", auto=True),
  "jax-ynn": Cell("jax", ynn_dots=True),
  "jax-bf16": Cell("jax", compute_dtype="bfloat16"),
  "jax-ynn-bf16": Cell("jax", ynn_dots=True, compute_dtype="bfloat16"),
  "torch-eager": Cell("torch-eager"),
  "torch-compile": Cell("torch-compile"),
  "jax-2dev": Cell("jax", devices=2),
  "jax-ynn-2dev": Cell("jax", devices=2, ynn_dots=True),
  "jax-4dev": Cell("jax", devices=4),
  "jax-ynn-4dev": Cell("jax", devices=4, ynn_dots=True),
  "jax-8steps": Cell("jax", steps_per_call=8),
  "jax-4seeds": Cell("jax", seeds=4),
  "jax-8seeds": Cell("jax", seeds=8),
  "jax-ynn-8seeds": Cell("jax", seeds=8, ynn_dots=True),
}
MAX_REPEATS = 20


def _time_steps(step, max_seconds: float) -> tuple[float, float]:
  """``(median seconds, first call seconds)`` of ``step()`` (which must block)."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  step()  # a second warm-up: allocations and caches settle
  times: list[float] = []
  while not times or (len(times) < MAX_REPEATS and sum(times) < max_seconds):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), first


# ---------- ours ----------


def _jax_task(model: str, data_dir: str | None, compute_dtype: str = "float32"):
  from gapmmd_jax.experiments import adapt, gap_mmd, iic, mine_cluster, vat

  small: dict[str, Any] = dict(data_dir=data_dir, max_eval_examples=100)
  if model in VGG_MODELS:
    module = mine_cluster if model == "mine-cluster" else iic
    variant = "paper" if model == "iic-paper" else "default"
    if model == "mine-cluster":  # the probe's held-out rows, 5,000 by default, among the 2048
      small["probe_validation_size"] = 200
    return module.build_task(
      dataclasses.replace(
        module.VARIANTS[variant], max_train_examples=2048, compute_dtype=compute_dtype, **small
      )
    )
  if model == "gap-lenet":
    return gap_mmd.build_task(
      dataclasses.replace(gap_mmd.VARIANTS["default"], max_train_examples=1024, **small)
    )
  if model == "vat-mlp":  # the semi-supervised recipe's step (VAT + entropy minimisation)
    return vat.build_task(
      dataclasses.replace(
        vat.VARIANTS["semi-supervised-entmin"],
        max_train_examples=2048,
        validation_size=100,
        **small,
      )
    )
  if model in ("vat", "vat+loss"):
    return vat.build_task(
      dataclasses.replace(
        vat.VARIANTS["default"],
        dropout=True,
        vat=model == "vat+loss",
        max_train_examples=1024,
        **small,
      )
    )
  return adapt.build_task(
    dataclasses.replace(
      adapt.VARIANTS["default"],
      method="dann",
      max_train_examples=1024,
      validation_size=100,
      **small,
    )
  )


def jax_worker(
  model: str,
  seeds: int,
  steps_per_call: int,
  data_dir: str | None,
  max_seconds: float,
  compute_dtype: str = "float32",
) -> dict:
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from gapmmd_jax.train._harness import data_mesh, multi_step, over_seeds, stacked_seed_data

  task = _jax_task(model, data_dir, compute_dtype)
  rows = BATCH_ROWS.get(model, IMAGES_PER_STEP[model])
  mesh = data_mesh()
  repl, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))
  keys = jax.device_put(jax.vmap(jax.random.key)(jnp.arange(seeds)), repl)
  states = jax.jit(jax.vmap(task.init), out_shardings=repl)(keys)
  if task.seed_data is not None:  # per-seed host arrays on the seed axis, as the harness does
    stacked = stacked_seed_data(task, range(seeds))
    states = {**states, "seed_data": jax.device_put(stacked, repl)}
  seeded = over_seeds(task.train_step, "auto", (0, 0, 0))
  if steps_per_call == 1:
    batch = jax.device_put(
      {k: np.stack([v[:rows]] * seeds) for k, v in task.train_data.items()}, sharded
    )
    step = jax.jit(
      seeded, donate_argnums=0, in_shardings=(repl, sharded, repl), out_shardings=(repl, repl)
    )
    call = lambda states: step(states, batch, keys)
  else:  # steps_per_call different batches, gathered on device inside one call
    data = jax.device_put(task.train_data, repl)
    order = jax.device_put(np.tile(np.arange(steps_per_call * rows), (seeds, 1)), repl)
    steps = jax.jit(
      multi_step(seeded, rows, sharded),
      donate_argnums=0,
      out_shardings=(repl, repl),
      static_argnums=5,
    )
    call = lambda states: steps(states, data, order, 0, keys, steps_per_call)
  holder = [states]

  def run():
    holder[0], metrics = call(holder[0])
    jax.block_until_ready(metrics)

  seconds, first = _time_steps(run, max_seconds)
  return {"seconds": seconds / steps_per_call, "first_call_s": first, "devices": jax.device_count()}


# ---------- PyTorch: the same models, batches and optimizers ----------


def _torch_model(model: str):
  import torch
  from torch import nn

  if model == "gap-lenet":
    net = nn.Sequential(
      nn.Conv2d(1, 32, 5, padding=2),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 5, padding=2),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.AdaptiveAvgPool2d(1),
      nn.Flatten(),
      nn.Linear(64, 10, bias=False),
    )
    return net, torch.optim.Adam(net.parameters(), lr=3e-3)
  if model in ("vat", "vat+loss"):
    net = nn.Sequential(
      nn.Conv2d(1, 32, 3),
      nn.ReLU(),
      nn.Conv2d(32, 32, 3),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Dropout(0.25),
      nn.Flatten(),
      nn.Linear(4608, 128),
      nn.ReLU(),
      nn.Dropout(0.5),
      nn.Linear(128, 10),
    )
    return net, torch.optim.Adadelta(net.parameters(), lr=1.0, rho=0.95, eps=1e-7)

  class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
      ctx.lam = lam
      return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
      return -ctx.lam * grad, None

  class Dann(nn.Module):
    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(
        nn.Conv2d(3, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 48, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
      )
      self.label = nn.Sequential(
        nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
      )
      self.domain = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 2))

    def forward(self, x, lam: float):
      f = self.features(x)
      return self.label(f), self.domain(Reverse.apply(f, lam))

  dann = Dann()
  return dann, torch.optim.SGD(dann.parameters(), lr=0.01, momentum=0.9)


def _torch_vat_loss(net, x, logits, eps: float = 1.0, xi: float = 10.0):
  import torch
  import torch.nn.functional as F

  def unit(d):
    return d / (d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)

  p = F.softmax(logits.detach(), dim=1)
  r = (xi * unit(torch.randn_like(x))).requires_grad_()
  kl = F.kl_div(F.log_softmax(net(x + r), dim=1), p, reduction="batchmean")
  (grad,) = torch.autograd.grad(kl, r)
  r_adv = eps * unit(grad.detach())
  return F.kl_div(F.log_softmax(net(x + r_adv), dim=1), p, reduction="batchmean")


def torch_worker(model: str, compiled: bool, max_seconds: float) -> dict:
  import torch
  import torch.nn.functional as F

  torch.set_num_threads(2)
  torch.manual_seed(0)
  net, optimizer = _torch_model(model)
  channels = 3 if model == "dann" else 1
  x = torch.rand(IMAGES_PER_STEP[model], channels, 28, 28)
  y = torch.randint(0, 10, (IMAGES_PER_STEP[model],))
  domains = torch.cat([torch.zeros(32, dtype=torch.long), torch.ones(32, dtype=torch.long)])

  def loss_fn():
    if model == "dann":
      logits, domain_logits = net(x, 0.5)
      return F.cross_entropy(logits[:32], y[:32]) + F.cross_entropy(domain_logits, domains)
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    if model == "vat+loss":
      loss = loss + _torch_vat_loss(net, x, logits)
    return loss

  forward = torch.compile(loss_fn) if compiled else loss_fn

  def run():
    optimizer.zero_grad(set_to_none=True)
    forward().backward()
    optimizer.step()

  seconds, first = _time_steps(run, max_seconds)
  return {"seconds": seconds, "first_call_s": first, "torch": torch.__version__}


def worker(model: str, cell: str, data_dir: str | None, max_seconds: float) -> dict:
  spec = CELLS[cell]
  if spec.implementation == "jax":
    result = jax_worker(
      model, spec.seeds, spec.steps_per_call, data_dir, max_seconds, spec.compute_dtype
    )
  else:
    result = torch_worker(model, spec.implementation == "torch-compile", max_seconds)
  result["images_per_second_per_seed"] = IMAGES_PER_STEP[model] / result["seconds"]
  return result


def _markdown(rows: list[dict], cells: list[str]) -> str:
  compare = "jax-auto" in cells
  lines = [
    "images / s per seed (median step in ms; relative to torch-eager)"
    + ("; last column: jax-auto against the fastest one-seed jax cell" if compare else ""),
    "",
    "| model | " + " | ".join(cells) + " |" + (" auto / fastest |" if compare else ""),
    "| --- |" + " --- |" * (len(cells) + compare),
  ]
  for model in dict.fromkeys(r["model"] for r in rows):
    by_cell = {r["cell"]: r for r in rows if r["model"] == model}
    eager = by_cell.get("torch-eager", {}).get("images_per_second_per_seed")
    ok = {c: r["images_per_second_per_seed"] for c, r in by_cell.items() if r["status"] == "ok"}
    entries = []
    for cell in cells:
      r = by_cell.get(cell)
      if r is None:
        entries.append("")
      elif r["status"] != "ok":
        entries.append(r["status"])
      else:
        rate = r["images_per_second_per_seed"]
        ratio = f"; {rate / eager:.2f}x" if eager else ""
        entries.append(f"{rate:.0f} ({1e3 * r['seconds']:.0f} ms{ratio})")
    if compare:
      single = {
        c: rate
        for c, rate in ok.items()
        if CELLS[c].implementation == "jax" and CELLS[c].seeds == 1
      }
      if "jax-auto" in ok and single:
        fastest = max(single, key=single.__getitem__)
        entries.append(f"{ok['jax-auto'] / single[fastest]:.2f} ({fastest})")
      else:
        entries.append("")
    lines.append(f"| {model} | " + " | ".join(entries) + " |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="gapmmd bench train",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument(
    "--models", nargs="+", choices=MODELS, default=list(MODELS), help="train steps to time"
  )
  parser.add_argument(
    "--cells",
    nargs="+",
    choices=list(CELLS),
    default=list(CELLS),
    help="implementations / device counts / seed counts to time",
  )
  parser.add_argument(
    "--data-dir",
    default=None,
    help="MNIST IDX directory (else "
    "$GAPMMD_DATA_DIR); the DANN step also needs BSDS500 ($GAPMMD_BSDS_DIR)",
  )
  parser.add_argument(
    "--max-seconds",
    type=positive_float,
    default=10.0,
    help="stop timing a cell after this many seconds of steps",
  )
  parser.add_argument("--timeout", type=positive_float, default=600.0, help="seconds per cell")
  parser.add_argument("--out", default="benchmarks/results", help="output directory")
  parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CELL"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    model, cell = args.worker
    print(json.dumps(worker(model, cell, args.data_dir, args.max_seconds)))
    return 0

  rows = []
  for model in args.models:
    for cell in args.cells:
      spec = CELLS[cell]
      if spec.implementation != "jax" and model not in TORCH_MODELS:
        continue
      if spec.compute_dtype != "float32" and model not in VGG_MODELS:
        continue
      devices, ynn, seeds = spec.devices, spec.ynn_dots, spec.seeds
      if spec.auto:
        _, setting, _ = _xla_flags.choose(
          "auto", XLA_STEP[model], batch_size=IMAGES_PER_STEP[model]
        )
        devices, ynn = setting
      flags = with_xla_flags(*_xla_flags.setting_flags(_xla_flags.Setting(devices, ynn)))
      worker_args = ["--worker", model, cell, "--max-seconds", str(args.max_seconds)]
      if args.data_dir:
        worker_args += ["--data-dir", args.data_dir]
      result = run_cell(
        "gapmmd_jax.benchmarks.train_step", worker_args, args.timeout, xla_flags=flags
      )
      rows.append(
        {
          "model": model,
          "cell": cell,
          "devices": devices,
          "seeds": seeds,
          "xla_flags": flags,
          **result,
        }
      )
      shown = (
        f"{result['images_per_second_per_seed']:.0f} images/s per seed"
        if result["status"] == "ok"
        else result["status"]
      )
      print(f"{model:10s} {cell:14s} {shown}", flush=True)

  write_results(args.out, "train_step", rows, _markdown(rows, args.cells))
  return 0


if __name__ == "__main__":
  sys.exit(main())
