"""Experiment 3: domain adaptation MNIST -> MNIST-M: MMD alignment (DSN, DDC, DAN) and DANN.

The network of the DANN paper (conv 32 - conv 48 features, label head
100-100-10, domain head 100-2 behind a gradient reversal layer), trained on
labelled MNIST (source) and unlabelled MNIST-M (target), every batch half
source, half target; SGD with momentum 0.9, learning rate
``0.01 / (1 + 10 p)^0.75`` and adaptation weight ``2 / (1 + exp(-10 p)) - 1``
(p = training progress in [0, 1]), per-channel pixel-mean normalisation.
Methods, all in the same code path::

  source-only  cross-entropy on the source only
  ddc          + single-kernel MMD^2 (mean bandwidth) on the last hidden layer, weight 0.25
               (Tzeng et al. 2014)
  dan          + MK-MMD^2 on both hidden layers and the logits, weight 1, with kernel
               weights re-learned every --dan-update-every steps (Long et al. 2015)
  mmd          + MMD^2 with the fixed 19-Gaussian bank of Domain Separation Networks
               (``DSN_DISTANCE_SCALES``) on the first hidden layer, biased and clamped at 0,
               a constant weight switched on after a source-only warm-up
               (Bousmalis et al. 2016)
  dann         + domain classification through the gradient reversal layer (Ganin et al.)

--mmd-layers picks other layers for ddc, dan and mmd (``features``: the 768 conv
features the DANN domain head sees; ``hidden1``, ``hidden2``, ``logits``);
--adaptation-weight, --adaptation-schedule and --adaptation-start default per
method. Every run also reports the target accuracy on --validation-size labelled
MNIST-M *training* images (never the test set): the number to choose settings by. ::

  gapmmd adapt --method dann                # one method, 1 seed, 10 epochs
  gapmmd adapt --variant quick --compare    # smoke run of every method
  gapmmd adapt --variant full --compare     # the comparison table, seeds 0 1 2, 10 epochs
  gapmmd adapt --variant long --compare     # the same, 30 epochs (56,250 steps)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax import data, plotting
from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import gradient_step, to_unit_float, validation_indices
from gapmmd_jax.losses import DSN_DISTANCE_SCALES, mk_mmd2, mk_mmd_kernel_weights, mmd2
from gapmmd_jax.losses._kernels import mean_squared_distance
from gapmmd_jax.models import DomainAdaptationNet
from gapmmd_jax.train import Result, Task, TrainConfig, fit, num_steps, seeds_tag

NAME = "adapt"
METHODS = ("source-only", "ddc", "dan", "mmd", "dann")
LAYERS = ("features", "hidden1", "hidden2", "logits")
# Per-method defaults: the papers' layers, weights and schedules (DDC: the layer
# before the classifier, 0.25; DAN: the last three layers, 1; DSN's MMD: the
# first hidden layer, a constant weight after a warm-up). The mmd weight, 3, was
# chosen on the validation images among 0.1, 0.3 (DSN's range), 1, 3, 10 and 30
# (seed 0, 4 epochs; 10 and 30 collapse the classifier); its warm-up stands in for
# DSN's 10k source-only steps and is not tuned (README, "Experiment 3").
DEFAULT_LAYERS = {"ddc": ("hidden2",), "dan": ("hidden1", "hidden2", "logits"), "mmd": ("hidden1",)}
DEFAULT_WEIGHTS = {"source-only": 0.0, "ddc": 0.25, "dan": 1.0, "mmd": 3.0, "dann": 1.0}
DEFAULT_SCHEDULES = {"mmd": "constant"}  # else "ramp"
DEFAULT_STARTS = {"mmd": 0.2}  # else 0.0
TSNE_LAYER = "hidden1"  # the label head's first layer: DSN's MMD layer, fed by DANN's features
DAN_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)  # bandwidths, times the mean squared distance
DAN_PROBE = 256  # source and target examples for each kernel-weight estimate
FILES = {
  "samples.png": "MNIST (source) and MNIST-M (target) training images",
  "table.md": "target and source test accuracy per method (mean +- std and per seed)",
  "table.json": "the same as JSON, with each method's run directory",
  "tsne.png": "t-SNE of the first seed's hidden1 activations of MNIST and MNIST-M test images, "
  "by domain and by class (needs scikit-learn)",
}


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """Domain adaptation options; ``batch_size`` counts source images (as many target ones)."""

  method: Literal["source-only", "ddc", "dan", "mmd", "dann"] = option("dann", "adaptation method")
  compare: bool = option(False, "run every method and write the comparison table")
  learning_rate: float = option(0.01, "initial learning rate mu_0 of 0.01 / (1 + 10 p)^0.75")
  momentum: float = option(0.9, "SGD momentum")
  adaptation_weight: float | None = option(
    None, f"weight of the domain loss (dann) or MMD term (ddc, dan, mmd); unset: {DEFAULT_WEIGHTS}"
  )
  adaptation_schedule: Literal["ramp", "constant"] | None = option(
    None,
    "the weight's schedule: ramp (times lambda_p = 2 / (1 + exp(-10 p)) - 1, which "
    "also scales dann's reversed gradient) or constant; unset: constant for "
    f"{sorted(DEFAULT_SCHEDULES)}, else ramp",
  )
  adaptation_start: float | None = option(
    None,
    "fraction of training that is source-only before the adaptation term switches on; "
    f"unset: {DEFAULT_STARTS}, else 0",
  )
  dan_update_every: int = option(500, "steps between DAN kernel-weight re-estimates")
  mmd_layers: tuple[str, ...] = option(
    (),
    "layers whose source and target activations the "
    f"MMD term of ddc / dan / mmd compares, of {LAYERS}; unset: "
    f"{DEFAULT_LAYERS}",
  )
  mnist_m_seed: int = option(0, "seed of the MNIST-M generator")
  pairing_seed: int = option(0, "seed of the random source/target pairing")
  validation_size: int = option(
    1000,
    "labelled MNIST-M training images held out to choose "
    "settings by (their labels are never trained on); at most the "
    "number of test images evaluated",
  )
  validation_seed: int = option(0, "seed of the choice of validation images")
  tsne_points: int = option(1000, "test images per domain in tsne.png (0: no plot)")
  bsds_dir: str | None = option(None, "BSDS500 training photos (else $GAPMMD_BSDS_DIR)")

  def __post_init__(self):
    super().__post_init__()
    if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or (self.adaptation_weight or 0) < 0:
      raise ValueError(
        "need learning_rate > 0, 0 <= momentum < 1, adaptation_weight >= 0; got "
        f"{self.learning_rate}, {self.momentum}, {self.adaptation_weight}."
      )
    if not 0 <= self.start < 1:
      raise ValueError(f"adaptation_start must be in [0, 1), got {self.adaptation_start}.")
    if self.validation_size < 0 or self.tsne_points < 0:
      raise ValueError(
        "validation_size and tsne_points must be >= 0, got "
        f"{self.validation_size}, {self.tsne_points}."
      )
    if self.dan_update_every < 1:
      raise ValueError(f"dan_update_every must be >= 1, got {self.dan_update_every}.")
    unknown = set(self.mmd_layers) - set(LAYERS)
    if unknown or len(set(self.mmd_layers)) != len(self.mmd_layers):
      raise ValueError(f"mmd_layers must be distinct names of {LAYERS}, got {self.mmd_layers}.")

  @property
  def adapted_layers(self) -> tuple[str, ...]:
    """The layers of the MMD term (ddc, dan), in network order."""
    chosen = self.mmd_layers or DEFAULT_LAYERS.get(self.method, ())
    return tuple(name for name in LAYERS if name in chosen)

  @property
  def weight(self) -> float:
    """``adaptation_weight``, or the method's default."""
    return (
      DEFAULT_WEIGHTS[self.method] if self.adaptation_weight is None else self.adaptation_weight
    )

  @property
  def schedule(self) -> str:
    """``adaptation_schedule``, or the method's default."""
    return self.adaptation_schedule or DEFAULT_SCHEDULES.get(self.method, "ramp")

  @property
  def start(self) -> float:
    """``adaptation_start``, or the method's default."""
    return (
      DEFAULT_STARTS.get(self.method, 0.0)
      if self.adaptation_start is None
      else self.adaptation_start
    )


VARIANTS = {
  "quick": Config(
    epochs=1.0,
    batch_size=32,
    max_train_examples=2048,
    max_eval_examples=1000,
    eval_every=32,
    log_every=8,
    checkpoint_every=32,
    dan_update_every=16,
    validation_size=200,
    tsne_points=100,
  ),
  "default": Config(epochs=10.0, batch_size=32),
  "full": Config(
    epochs=10.0,
    batch_size=32,
    seeds=(0, 1, 2),
    eval_every=2000,
    log_every=100,
    checkpoint_every=2000,
  ),
  "long": Config(
    epochs=30.0,
    batch_size=32,
    seeds=(0, 1, 2),
    eval_every=2000,
    log_every=100,
    checkpoint_every=2000,
  ),
}
DEFAULT_VARIANT = "default"


def schedules(progress: jax.Array, learning_rate: float = 0.01) -> tuple[jax.Array, jax.Array]:
  """``(mu_p, lambda_p)`` of the DANN paper at training progress ``p`` in [0, 1]."""
  progress = jnp.asarray(progress, jnp.float32)
  return (
    learning_rate / (1.0 + 10.0 * progress) ** 0.75,
    2.0 / (1.0 + jnp.exp(-10.0 * progress)) - 1.0,
  )


def adaptation_coefficient(progress: jax.Array, schedule: str, start: float) -> jax.Array:
  """The adaptation term's multiplier at progress ``p``: 0 before ``start``, then
  ``lambda_p`` (``schedule="ramp"``, DANN's) or 1 (``"constant"``, DSN's)."""
  progress = jnp.asarray(progress, jnp.float32)
  value = schedules(progress)[1] if schedule == "ramp" else jnp.ones_like(progress)
  return jnp.where(progress >= start, value, 0.0)


def _as_rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


def load_data(cfg: Config) -> tuple[dict, dict, np.ndarray]:
  """``(train, eval, channel_mean)``: paired source/target training rows, both test sets and
  the validation images.

  The validation images are labelled MNIST-M *training* images. They stay in
  the unlabelled target stream (as in DSN's protocol, only their labels are
  held out); they enter ``eval`` as ``validation`` rows padded to the test
  sets' length, with ``validation_weight`` = (rows / validation images) on
  real rows and 0 on padding, so the mean of ``correct * weight`` over the
  rows is the accuracy on the validation images.
  """
  splits = {}
  for split, limit in (("train", cfg.max_train_examples), ("test", cfg.max_eval_examples)):
    source, labels = data.load_mnist(split, data_dir=cfg.data_dir)
    target, target_labels = data.load_mnist_m(
      split, seed=cfg.mnist_m_seed, data_dir=cfg.data_dir, bsds_dir=cfg.bsds_dir
    )
    splits[split] = (_as_rgb(source[:limit]), labels[:limit], target[:limit], target_labels[:limit])
  source, labels, target, target_labels = splits["train"]
  held_out = validation_indices(len(target), cfg.validation_size, cfg.validation_seed)
  # Each source image meets a fixed random target image, never its own MNIST-M version.
  paired = target[np.random.default_rng(cfg.pairing_seed).permutation(len(target))]
  channel_mean = np.concatenate([source, paired]).reshape(-1, 3).mean(0) / 255.0
  train = {"source": source, "label": labels, "target": paired}
  test_source, test_labels, test_target, test_target_labels = splits["test"]
  rows = len(test_target)
  if cfg.validation_size > rows:
    raise ValueError(
      f"validation_size={cfg.validation_size} exceeds the {rows} test images "
      "it is evaluated beside (raise --max-eval-examples or lower it)."
    )
  pad = rows - cfg.validation_size
  evaluation = {
    "source": test_source,
    "source_label": test_labels,
    "target": test_target,
    "target_label": test_target_labels,
    "validation": np.concatenate(
      [target[held_out], np.zeros((pad, *target.shape[1:]), target.dtype)]
    ),
    "validation_label": np.concatenate(
      [target_labels[held_out], np.zeros(pad, target_labels.dtype)]
    ),
    "validation_weight": np.concatenate(
      [np.full(cfg.validation_size, rows / max(cfg.validation_size, 1)), np.zeros(pad)]
    ).astype(np.float32),
  }
  return train, evaluation, channel_mean.astype(np.float32)


def _activations(
  model: DomainAdaptationNet, images: jax.Array, names: tuple[str, ...]
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """``(features [B, 768], (activations of each of names))`` of normalised images."""
  features = model.features(images)
  logits, (hidden1, hidden2) = model.classify(features)
  layers = {"features": features, "hidden1": hidden1, "hidden2": hidden2, "logits": logits}
  return features, tuple(layers[name] for name in names)


def _dan_weights_update(graphdef, normalise, train_data: dict, names: tuple[str, ...]):
  """A harness ``host_update`` that re-learns DAN's kernel weights per seed and layer.

  The weights come from ``mk_mmd_kernel_weights`` on the features of the
  first ``DAN_PROBE`` source and target training images, with bandwidths
  ``DAN_MULTIPLIERS`` times the pooled mean squared distance of each layer.
  """
  n = min(DAN_PROBE, len(train_data["source"]))
  probe = jnp.concatenate([train_data["source"][:n], train_data["target"][:n]])

  @jax.jit
  def probe_layers(params):
    return _activations(nnx.merge(graphdef, params), normalise(probe), names)[1]

  def update(states, step):
    del step
    weights = np.array(states["kernel_weights"])
    for s in range(weights.shape[0]):
      params = jax.tree.map(lambda a, s=s: a[s], states["params"])
      for index, layer in enumerate(probe_layers(params)):
        scale = max(float(mean_squared_distance(layer)), 1e-6)
        weights[s, index] = np.asarray(
          mk_mmd_kernel_weights(
            layer[:n], layer[n:], distance_scales=scale * np.asarray(DAN_MULTIPLIERS)
          )
        )
    return {**states, "kernel_weights": weights}

  return update


def build_task(cfg: Config, prepared: tuple[dict, dict, np.ndarray] | None = None) -> Task:
  """The adaptation task of ``cfg.method`` (``prepared``: the result of :func:`load_data`)."""
  train_data, eval_data, channel_mean = prepared or load_data(cfg)
  _, total_steps = num_steps(cfg, len(train_data["label"]))
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: DomainAdaptationNet(rngs=nnx.Rngs(0))))
  tx = optax.sgd(
    lambda count: schedules(count / total_steps, cfg.learning_rate)[0], momentum=cfg.momentum
  )
  adapted = cfg.adapted_layers

  def normalise(images):
    return to_unit_float(images) - channel_mean

  def init(key):
    params = nnx.state(DomainAdaptationNet(rngs=nnx.Rngs(key)))
    state = {"params": params, "opt_state": tx.init(params)}
    if cfg.method == "dan":
      state["kernel_weights"] = jnp.full(
        (len(adapted), len(DAN_MULTIPLIERS)), 1.0 / len(DAN_MULTIPLIERS)
      )
    return state

  def loss_fn(params, kernel_weights, batch, lam):
    model = nnx.merge(graphdef, params)
    n = batch["label"].shape[0]
    images = normalise(jnp.concatenate([batch["source"], batch["target"]]))
    features, (*layers, logits) = _activations(model, images, (*adapted, "logits"))
    label_loss = optax.softmax_cross_entropy_with_integer_labels(logits[:n], batch["label"]).mean()
    metrics = {
      "label_loss": label_loss,
      "source_accuracy": jnp.mean(jnp.argmax(logits[:n], -1) == batch["label"]),
    }
    loss = label_loss
    if cfg.method == "dann":
      domain_logits = model.domain(features, lam)
      domains = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)])
      domain_loss = optax.softmax_cross_entropy_with_integer_labels(domain_logits, domains).mean()
      metrics.update(
        domain_loss=domain_loss, domain_accuracy=jnp.mean(jnp.argmax(domain_logits, -1) == domains)
      )
      loss = loss + cfg.weight * domain_loss  # the GRL applies lambda and the sign
    elif cfg.method == "ddc":
      mmd = sum(mmd2(layer[:n], layer[n:], kernel_num=1) for layer in layers)
      metrics["mmd"] = mmd
      loss = loss + cfg.weight * lam * mmd
    elif cfg.method == "mmd":  # DSN's loss: biased, clamped at 0, on each adapted layer
      mmd = sum(
        jnp.maximum(mk_mmd2(layer[:n], layer[n:], distance_scales=DSN_DISTANCE_SCALES), 0.0)
        for layer in layers
      )
      metrics["mmd"] = mmd
      loss = loss + cfg.weight * lam * mmd
    elif cfg.method == "dan":
      mmd = 0.0
      for layer, weights in zip(layers, kernel_weights):
        scale = jax.lax.stop_gradient(mean_squared_distance(layer))
        scales = jnp.maximum(scale, 1e-6) * jnp.asarray(DAN_MULTIPLIERS)
        mmd = mmd + mk_mmd2(
          layer[:n], layer[n:], distance_scales=scales, weights=weights, estimator="unbiased"
        )
      metrics["mmd"] = mmd
      loss = loss + cfg.weight * lam * mmd
    return loss, metrics

  def train_step(state, batch, key):
    del key  # deterministic model and schedules
    # The step count of the learning-rate schedule drives lambda too.
    progress = optax.tree_utils.tree_get(state["opt_state"], "count") / total_steps
    learning_rate = schedules(progress, cfg.learning_rate)[0]
    lam = adaptation_coefficient(progress, cfg.schedule, cfg.start)
    state, loss, metrics, _ = gradient_step(
      tx, loss_fn, state, state.get("kernel_weights"), batch, lam
    )
    return state, {"loss": loss, "learning_rate": learning_rate, "lambda": lam, **metrics}

  def eval_step(state, batch):
    model = nnx.merge(graphdef, state["params"])
    logits, _ = model.classify(model.features(normalise(batch["validation"])))
    out = {
      "validation_accuracy": batch["validation_weight"]
      * (jnp.argmax(logits, -1) == batch["validation_label"])
    }
    for domain in ("source", "target"):
      features = model.features(normalise(batch[domain]))
      logits, _ = model.classify(features)
      labels = batch[f"{domain}_label"]
      out[f"{domain}_accuracy"] = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
      if domain == "target":
        out["target_loss"] = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      if cfg.method == "dann":
        predicted = jnp.argmax(model.domain(features, 0.0), -1)
        out[f"domain_accuracy_{domain}"] = (predicted == (domain == "target")).astype(jnp.float32)
    return out

  host_update = (
    _dan_weights_update(graphdef, normalise, train_data, adapted) if cfg.method == "dan" else None
  )
  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
    host_update=host_update,
    host_update_every=cfg.dan_update_every,
  )


def _tsne_plot(
  result: Result, prepared: tuple[dict, dict, np.ndarray], cfg: Config, path: pathlib.Path
) -> bool:
  """t-SNE of the first seed's ``TSNE_LAYER`` on ``cfg.tsne_points`` test images per domain.

  Returns whether the plot was written (False without scikit-learn or matplotlib).
  """
  _, eval_data, channel_mean = prepared
  count = min(cfg.tsne_points, len(eval_data["source"]))
  params = jax.tree.map(lambda a: a[0], result.state["state"]["params"])
  model = nnx.merge(
    nnx.graphdef(nnx.eval_shape(lambda: DomainAdaptationNet(rngs=nnx.Rngs(0)))), params
  )
  images = np.concatenate([eval_data["source"][:count], eval_data["target"][:count]])
  layer = jax.jit(
    lambda x: _activations(model, to_unit_float(x) - channel_mean, (TSNE_LAYER,))[1][0]
  )(images)
  points = plotting.tsne_2d(np.asarray(layer, np.float64), seed=cfg.seeds[0])
  if points is None:
    return False
  domains = np.repeat([0, 1], count)
  labels = np.concatenate([eval_data["source_label"][:count], eval_data["target_label"][:count]])
  return plotting.scatter_by_domain_and_class(
    points,
    domains,
    labels,
    path,
    domain_names=("MNIST", "MNIST-M"),
    title=f"{cfg.method}: t-SNE of {TSNE_LAYER} activations, {count} test images per domain, "
    f"seed {cfg.seeds[0]}",
  )


def _sample_grid(train: dict, path: pathlib.Path, count: int = 8) -> None:
  images = np.concatenate([train["source"][:count], train["target"][:count]])
  titles = [f"MNIST {label}" for label in train["label"][:count]] + ["MNIST-M"] * count
  plotting.image_grid(images, None, titles, path, columns=count)


def _accuracy_cells(summary: dict, key: str) -> str:
  values = summary["final_eval"][key]
  per_seed = " / ".join(f"{100 * v:.2f}" for v in values["per_seed"])
  return f"{100 * values['mean']:.2f} +- {100 * values['std']:.2f}% | {per_seed}"


def _table(results: dict[str, Result], title: str) -> str:
  lines = [
    title,
    "",
    "| method | target accuracy (MNIST-M test) | per seed | validation accuracy "
    "(held-out MNIST-M training images) | per seed | source accuracy (MNIST test) "
    "| per seed |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for method, result in results.items():
    lines.append(
      f"| {method} | {_accuracy_cells(result.summary, 'target_accuracy')} | "
      f"{_accuracy_cells(result.summary, 'validation_accuracy')} | "
      f"{_accuracy_cells(result.summary, 'source_accuracy')} |"
    )
  return "\n".join(lines)


def run(cfg: Config, variant: str = "custom") -> Result | dict[str, Result]:
  """Trains ``cfg.method`` (or, with ``compare``, every method) and reports accuracies."""
  prepared = load_data(cfg)
  methods = METHODS if cfg.compare else (cfg.method,)
  root = pathlib.Path(cfg.out_dir)
  if cfg.compare:
    root = root / (cfg.run_name or f"{NAME}-compare-{variant}-{seeds_tag(cfg.seeds)}")
  results = {}
  for method in methods:
    sub = dataclasses.replace(
      cfg,
      method=method,  # type: ignore[arg-type]  # one of METHODS
      compare=False,
      out_dir=str(root),
      run_name=method if cfg.compare else cfg.run_name,
    )
    result = fit(build_task(sub, prepared), sub, variant=variant)
    result.run_dir.descriptions.update({k: v for k, v in FILES.items() if k == "samples.png"})
    _sample_grid(prepared[0], result.run_dir.file("samples.png"))
    if (
      cfg.tsne_points
      and jax.process_index() == 0
      and _tsne_plot(result, prepared, sub, result.run_dir.file("tsne.png"))
    ):
      result.run_dir.descriptions["tsne.png"] = FILES["tsne.png"]
    result.run_dir.write_readme(f"{NAME} {method} ({variant}), seeds {list(cfg.seeds)}")
    results[method] = result
    print(
      f"{method}: target accuracy {_accuracy_cells(result.summary, 'target_accuracy')}", flush=True
    )
  title = (
    f"MNIST -> MNIST-M ({variant}): {cfg.epochs:g} epochs of {cfg.batch_size} source + "
    f"{cfg.batch_size} target images, seeds {list(cfg.seeds)}"
  )
  table = _table(results, title)
  if cfg.compare and jax.process_index() == 0:
    (root / "table.md").write_text(table + "\n")
    keys = ("target_accuracy", "validation_accuracy", "source_accuracy")
    rows = {
      m: {**{k: r.summary["final_eval"][k] for k in keys}, "run_dir": str(r.run_dir.path)}
      for m, r in results.items()
    }
    (root / "table.json").write_text(json.dumps({"title": title, "methods": rows}, indent=2))
    (root / "README.txt").write_text(
      f"{title}\n\nOne run directory per method ({', '.join(methods)}).\n"
      + "".join(f"{k}: {v}\n" for k, v in FILES.items() if k.startswith("table"))
    )
  print(
    "\n" + table + f"\n\nwritten to {root if cfg.compare else results[cfg.method].run_dir.path}"
  )
  return results if cfg.compare else results[cfg.method]
