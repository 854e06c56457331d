"""A PyTorch reference of the official semi-supervised VAT recipe (takerum/vat, ICLR 2016).

Written from the official Theano code's arithmetic, not from this library, so that a
run of ``gapmmd vat --variant semi-supervised`` can be set beside an independent one
on the same labels, pool and validation images (taken from ``gapmmd_jax.experiments.vat``):

- 784-1200-1200-10, each dense layer (with bias) followed by BatchNorm on the batch's
  own statistics (biased variance, eps 1e-6 inside the root) and ReLU (softmax last);
  kernels N(0, 1 / fan_in);
- every update: cross-entropy on the 100 labelled images, plus the VAT loss on 250
  unlabelled ones (cycled through the pool, reshuffled every 500 updates), each pass
  normalised with its own batch; Adam 0.002 times 0.9 every 500 updates;
- the power iteration, ``--direction``:
  ``fd32``: the official ``VAT_finite_diff`` cost, float32 throughout: the gradient of
  ``-sum(p * log q(x + xi d))`` at ``xi = 1e-6`` divided by ``xi`` (so the softmax
  difference ``q - p`` is left to float32 rounding, as in Theano);
  ``fd64``: the same finite difference in float64 (close to the exact direction);
  ``hvp``: the official ``VAT`` cost, an exact Hessian-vector product by double backward;
- evaluation: BatchNorm population statistics measured over the pool in batches of
  250 (the official final pass), then the test and validation accuracy.

Not a test (it trains for minutes to hours); run from the repository root::

  python tests/references/_vat_semisup_torch_run.py --updates 4000 --direction fd32 \
    --out runs/vat-ref/torch-fd32-s0.jsonl

With ``--checkpoint PATH`` it saves its state at every evaluation and, if PATH exists,
continues from it (appending to the log).

Needs torch (``pip install -e ".[bench]"``) and the MNIST files ($GAPMMD_DATA_DIR).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import time

import numpy as np
import torch

from gapmmd_jax.experiments import vat as vat_experiment

WIDTHS = (784, 1200, 1200, 10)
BN_EPS = 1e-6


def init_params(generator: np.random.Generator) -> list[dict[str, torch.Tensor]]:
  layers = []
  for fan_in, fan_out in itertools.pairwise(WIDTHS):
    w = generator.normal(0.0, np.sqrt(1.0 / fan_in), (fan_in, fan_out)).astype(np.float32)
    layers.append(
      {
        "w": torch.tensor(w, requires_grad=True),
        "b": torch.zeros(fan_out, requires_grad=True),
        "gamma": torch.ones(fan_out, requires_grad=True),
        "beta": torch.zeros(fan_out, requires_grad=True),
      }
    )
  return layers


def forward(layers, x: torch.Tensor, stats=None) -> torch.Tensor:
  """``[B, 784]`` -> ``[B, 10]`` logits; batch statistics unless ``stats`` is given."""
  h = x
  for i, layer in enumerate(layers):
    h = h @ layer["w"].to(x.dtype) + layer["b"].to(x.dtype)
    if stats is None:
      mean = h.mean(0)
      var = ((h - mean) ** 2).mean(0)
    else:
      mean, var = stats[i]
    h = layer["gamma"].to(x.dtype) * (h - mean) / torch.sqrt(BN_EPS + var) + layer["beta"].to(
      x.dtype
    )
    if i < len(layers) - 1:
      h = torch.relu(h)
  return h


def batch_stats(layers, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
  stats, h = [], x
  for i, layer in enumerate(layers):
    h = h @ layer["w"] + layer["b"]
    mean, var = h.mean(0), ((h - h.mean(0)) ** 2).mean(0)
    stats.append((mean, var))
    h = layer["gamma"] * (h - mean) / torch.sqrt(BN_EPS + var) + layer["beta"]
    if i < len(layers) - 1:
      h = torch.relu(h)
  return stats


def unit_rows(v: torch.Tensor) -> torch.Tensor:
  """The official ``get_normalized_vector``: max-scaling, then L2 with 1e-6 inside the root."""
  v = v / (1e-20 + v.abs().amax(1, keepdim=True))
  return v / torch.sqrt(1e-6 + (v**2).sum(1, keepdim=True))


def cross_entropy_to(p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
  """``mean_b -sum_j p_bj log softmax(logits)_bj``: the official ``get_kl`` without its
  entropy term (the same gradient in ``logits`` as the KL)."""
  return -(p * torch.log_softmax(logits, 1)).sum(1).mean()


def vat_direction(layers, x, p, d, direction: str, xi: float) -> torch.Tensor:
  if direction == "hvp":
    r = torch.zeros_like(x, requires_grad=True)
    (g,) = torch.autograd.grad(cross_entropy_to(p, forward(layers, x + r)), r, create_graph=True)
    (hd,) = torch.autograd.grad((g * unit_rows(d)).sum(), r)
    return hd
  dtype = torch.float64 if direction == "fd64" else torch.float32
  r = (xi * unit_rows(d.to(dtype))).requires_grad_(True)
  loss = cross_entropy_to(p.to(dtype), forward(layers, x.to(dtype) + r))
  (g,) = torch.autograd.grad(loss, r)
  return (g / xi).to(torch.float32)


def population_stats(layers, pool: torch.Tensor, batch: int = 250):
  per_batch = [
    batch_stats(layers, pool[i : i + batch]) for i in range(0, len(pool) - batch + 1, batch)
  ]
  correction = batch / (batch - 1)
  return [
    (
      torch.stack([b[i][0] for b in per_batch]).mean(0),
      correction * torch.stack([b[i][1] for b in per_batch]).mean(0),
    )
    for i in range(len(layers))
  ]


def accuracy(layers, stats, images: torch.Tensor, labels: torch.Tensor) -> float:
  correct = 0
  for i in range(0, len(images), 1000):
    correct += (
      forward(layers, images[i : i + 1000], stats).argmax(1) == labels[i : i + 1000]
    ).sum()
  return float(correct) / len(images)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--updates", type=int, default=4000)
  parser.add_argument("--seed", type=int, default=0, help="seed s: label subset (0, s) as ours")
  parser.add_argument("--direction", choices=("fd32", "fd64", "hvp"), default="fd32")
  parser.add_argument("--eps", type=float, default=0.3)
  parser.add_argument("--xi", type=float, default=1e-6)
  parser.add_argument("--eval-every", type=int, default=500)
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--out", type=pathlib.Path, required=True, help="JSON lines log")
  parser.add_argument("--checkpoint", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  torch.set_num_threads(2)
  torch.manual_seed(args.seed)

  cfg = dataclasses.replace(vat_experiment.VARIANTS["semi-supervised"], data_dir=args.data_dir)
  pool, eval_data = vat_experiment._splits(cfg)
  index = vat_experiment.labelled_subset(pool["label"], 10, (cfg.label_seed, args.seed))
  as_float = lambda a: torch.tensor(a.reshape(len(a), -1).astype(np.float32) / 255.0)
  pool_x, labelled_x = as_float(pool["image"]), as_float(pool["image"][index])
  labelled_y = torch.tensor(pool["label"][index], dtype=torch.long)
  is_test = eval_data["test_weight"] > 0
  test_x, test_y = as_float(eval_data["image"][is_test]), torch.tensor(eval_data["label"][is_test])
  val_x, val_y = as_float(eval_data["image"][~is_test]), torch.tensor(eval_data["label"][~is_test])

  rng = np.random.default_rng(args.seed)
  layers = init_params(rng)
  params = [t for layer in layers for t in layer.values()]
  optimizer = torch.optim.Adam(params, lr=0.002, betas=(0.9, 0.999), eps=1e-8)
  schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=500, gamma=0.9)
  order, cursor, batches = rng.permutation(len(pool_x)), 0, len(pool_x) // 250
  first, elapsed = 1, 0.0
  if args.checkpoint and args.checkpoint.exists():
    saved = torch.load(args.checkpoint, weights_only=False)
    with torch.no_grad():
      for t, value in zip(params, saved["params"]):
        t.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
    order, cursor = saved["order"], saved["cursor"]
    first, elapsed = saved["update"] + 1, saved["seconds"]
  args.out.parent.mkdir(parents=True, exist_ok=True)
  log = args.out.open("a" if first > 1 else "w")
  start = time.perf_counter() - elapsed
  for update in range(first, args.updates + 1):
    if (update - 1) % 500 == 0:
      order = rng.permutation(len(pool_x))
    x = pool_x[order[cursor * 250 : (cursor + 1) * 250]]
    cursor = (cursor + 1) % batches
    ce = torch.nn.functional.cross_entropy(forward(layers, labelled_x), labelled_y)
    with torch.no_grad():
      p = torch.softmax(forward(layers, x), 1)
    d = vat_direction(layers, x, p, torch.randn_like(x), args.direction, args.xi)
    r = args.eps * unit_rows(d.detach())
    vat = cross_entropy_to(p, forward(layers, x + r))
    optimizer.zero_grad()
    (ce + vat).backward()
    optimizer.step()
    schedule.step()
    if update % args.eval_every == 0 or update == args.updates:
      with torch.no_grad():
        stats = population_stats(layers, pool_x)
        entropy = -(p * torch.log(p + 1e-30)).sum(1).mean()
        per_batch = [
          accuracy(layers, None, test_x[i : i + 250], test_y[i : i + 250])
          for i in range(0, len(test_x), 250)
        ]
        row = {
          "update": update,
          "test_accuracy": accuracy(layers, stats, test_x, test_y),
          "test_accuracy_batch_statistics": float(np.mean(per_batch)),
          "validation_accuracy": accuracy(layers, stats, val_x, val_y),
          "cross_entropy": float(ce),
          "vat_kl": float(vat) - float(entropy),
          "unlabelled_top_probability": float(p.max(1).values.mean()),
          "seconds": time.perf_counter() - start,
        }
      print(json.dumps(row), flush=True)
      log.write(json.dumps(row) + "\n")
      log.flush()
      if args.checkpoint:
        state = {
          "params": [t.detach().clone() for t in params],
          "optimizer": optimizer.state_dict(),
          "schedule": schedule.state_dict(),
          "rng": rng.bit_generator.state,
          "torch_rng": torch.get_rng_state(),
          "order": order,
          "cursor": cursor,
          "update": update,
          "seconds": row["seconds"],
        }
        torch.save(state, args.checkpoint.with_suffix(".tmp"))
        args.checkpoint.with_suffix(".tmp").replace(args.checkpoint)


if __name__ == "__main__":
  main()
