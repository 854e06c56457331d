"""Experiment 4c: MINE clustering of MNIST, evaluated by a linear probe.

An encoder (the VGG backbone of IIC and a dense latent layer) is trained
without labels to maximise the MINE lower bound on the mutual information
between the latents of an image's centre crop and of a random transform of
it (rotation or crop-and-resize, on device), with a statistics network of
1024 hidden units on the latent pair; Adam. The latents are then judged by a
linear probe (dense 256 -> dense 10, no non-linearity, Adam) trained on the
training-set latents and evaluated on the test set; for comparison with the
Keras reference, whose probe was trained and evaluated on the test set, that
number is reported too, labelled as such. The probe leaves out 5,000 training
images (``--probe-validation-size``): its accuracy on them picks, among the
evaluations that trained it, the one whose test accuracy is reported as
``probe_accuracy_selected``, so the epoch is chosen without the test set.

The ``keras`` variant follows the Keras book's run (``mine-13.8.1.py``,
``vgg.py``, ``data_generator.py``): batches of 1024 pairs for 200 epochs (~12M
pairs), x and x' encoded in separate calls (``--batchnorm separate``: separate
BatchNorm statistics), the book's transforms exactly (``--transforms
keras-book``), its initialisation and BatchNorm constants (``--init keras
--bn-momentum 0.99 --bn-epsilon 1e-3``), and its probe protocol beside ours
(``--keras-probe``: at every epoch's end one warm-started probe trains 20 more
epochs on the test-set latents and is tested on them; the best over epochs is
its number); ours is trained at every 10th evaluation too (``--probe-every 10``),
for its curve over training. ::

  gapmmd mine-cluster                    # 1 seed, 10 epochs, latent dimension 10
  gapmmd mine-cluster --variant quick    # smoke run
  gapmmd mine-cluster --variant keras    # the Keras recipe, 200 epochs (a GPU job)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax import config as config_lib, plotting
from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import (
  augmented_pairs,
  centre_crops,
  eval_curve,
  gradient_step,
  image_split,
  validation_indices,
)
from gapmmd_jax.losses import mine_lower_bound
from gapmmd_jax.models import MineEncoder
from gapmmd_jax.train import Result, RunDir, Task, TrainConfig, fit

NAME = "mine-cluster"
INPUT_SIZE = 24
NUM_CLASSES = 10
# The Keras reimplementation's result (pairs seen: 200 epochs of 58 batches of 1024; its probe
# protocol, % at latent dimension 10).
KERAS_RESULT = (200 * 58 * 1024, 93.86)
# That number beside a probe's curve (accuracy_vs_pairs.png, ``gapmmd curves``): a line from
# one Keras epoch to the book's 200.
_KERAS_LINE = (
  [58 * 1024, KERAS_RESULT[0]],
  [KERAS_RESULT[1]] * 2,
  "Keras reimplementation after ~12M pairs (its protocol)",
)
REFERENCE_CURVES = {"probe_accuracy": _KERAS_LINE, "keras_probe_accuracy": _KERAS_LINE}
# The Keras book's probe protocol: per evaluation its probe fits 10 epochs, then 10 more,
# in batches of 128, with Keras's Adam defaults.
KERAS_PROBE_EPOCHS = 20
KERAS_PROBE_BATCH = 128
_KERAS_PROBE_TX = optax.adam(1e-3, eps=1e-7)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """MINE-clustering options; ``batch_size`` counts image pairs."""

  RESUMABLE = ("probe_every",)  # the honest probe leaves the training state alone

  latent_dim: int = option(10, "dimension of the latent code")
  statistic_hidden: int = option(1024, "hidden units of the statistics network")
  learning_rate: float = option(1e-3, "Adam learning rate of the encoder and statistics network")
  probe_epochs: int = option(30, "epochs of the linear probe")
  probe_learning_rate: float = option(1e-3, "Adam learning rate of the linear probe")
  probe_validation_size: int = option(
    5000,
    "training images the linear probe leaves out; its accuracy on them picks the "
    "evaluation reported as probe_accuracy_selected (an epoch chosen without the test set)",
  )
  probe_validation_seed: int = option(0, "seed of the choice of the probe's validation images")
  compute_dtype: Literal["float32", "bfloat16"] = option(
    "float32",
    "dtype of the backbone's convolutions (inputs and weights; parameters, BatchNorm and "
    "the loss stay float32)",
  )
  batchnorm: Literal["joint", "separate"] = option(
    "joint", "x and x' through one encoder call (shared batch statistics) or two (Keras)"
  )
  transforms: Literal["keras", "keras-book"] = option(
    "keras",
    "x' of each image: keras (a rotation of the centre crop, or a crop at a random "
    "position) or keras-book (the Keras book's generator exactly: the whole image rotated "
    "by an integer angle, or a crop centred half the time); resized to 24",
  )
  init: Literal["flax", "keras"] = option(
    "flax",
    "weight initialisation: flax's defaults (LeCun normal) or the Keras book's (truncated "
    "He normal convolutions, Glorot uniform dense layers); zero biases",
  )
  bn_momentum: float = option(
    0.9, "BatchNorm's running-average momentum (flax and PyTorch: 0.9; Keras: 0.99)"
  )
  bn_epsilon: float = option(1e-5, "BatchNorm's epsilon (flax and PyTorch: 1e-5; Keras: 1e-3)")
  keras_probe: bool = option(
    False,
    "also the Keras book's probe protocol at every scheduled evaluation (--eval-every; not "
    "at a stop between two): one probe, warm-started from the last one, trained 20 more "
    "epochs (batch 128) on the test-set latents and tested on them; the best over those "
    "evaluations is reported, labelled as such",
  )
  probe_every: int = option(
    0,
    "also the linear probe (training-set latents -> test set) at every N-th evaluation, for "
    "its curve over training (one pass of the encoder over the training images each time); "
    "0: at the end only",
  )

  def __post_init__(self):
    super().__post_init__()
    for name in ("latent_dim", "statistic_hidden", "probe_epochs"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.probe_every < 0 or self.probe_validation_size < 0:
      raise ValueError(
        "probe_every and probe_validation_size must be >= 0, got "
        f"{self.probe_every}, {self.probe_validation_size}."
      )
    if self.learning_rate <= 0 or self.probe_learning_rate <= 0:
      raise ValueError("learning rates must be > 0.")


VARIANTS = {
  "quick": Config(
    epochs=1.0,
    batch_size=64,
    max_train_examples=1024,
    max_eval_examples=500,
    eval_every=8,
    log_every=4,
    checkpoint_every=8,
    statistic_hidden=64,
    probe_epochs=3,
    probe_validation_size=200,
  ),
  "default": Config(epochs=10.0, batch_size=256, eval_every=200, log_every=20),
  # One Keras epoch is 58 steps of 1024 pairs; the book evaluates at every epoch's end.
  "keras": Config(
    epochs=200.0,
    batch_size=1024,
    batchnorm="separate",
    transforms="keras-book",
    init="keras",
    bn_momentum=0.99,
    bn_epsilon=1e-3,
    keras_probe=True,
    probe_every=10,  # the honest probe's curve every 10 epochs: it costs ~40 s each here
    eval_every=58,
    log_every=29,
    checkpoint_every=232,
  ),
}
DEFAULT_VARIANT = "default"


def _make_net(cfg: Config, key) -> MineEncoder:
  return MineEncoder(
    latent_dim=cfg.latent_dim,
    hidden=cfg.statistic_hidden,
    input_size=INPUT_SIZE,
    init=cfg.init,
    momentum=cfg.bn_momentum,
    epsilon=cfg.bn_epsilon,
    compute_dtype=jnp.dtype(cfg.compute_dtype),
    rngs=nnx.Rngs(key),
  )


@functools.cache  # one compiled encoder per config: the evaluations' probes and the final ones
def latent_encoder(cfg: Config) -> Callable[[Any, Any, np.ndarray], np.ndarray]:
  """``(params, batch_stats, uint8 images [N, 28, 28, 1]) -> latents [N, latent_dim]`` of one
  replica: centre crops, BatchNorm's running statistics, 1000 images per call."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))

  @jax.jit
  def encode(params, stats, images):
    return nnx.merge(graphdef, params, stats).encode(centre_crops(images, INPUT_SIZE), train=False)

  def latents(params, stats, images):
    chunks = np.array_split(images, max(1, len(images) // 1000))
    return np.concatenate([np.asarray(encode(params, stats, chunk)) for chunk in chunks])

  return latents


def saved_encoders(run: RunDir) -> tuple[Config, int, list[tuple[Any, Any]]]:
  """``(config, step, [(params, batch_stats)] per seed)`` of the checkpoint of a
  MINE-clustering run directory, for :func:`latent_encoder`."""
  if not run.file("config.json").is_file():
    raise FileNotFoundError(f"{run.path} is not a run directory: it has no config.json.")
  saved = run.read_json("config.json")
  if saved.get("experiment") != NAME:
    raise ValueError(
      f"{run.path} is a run of {saved.get('experiment')!r}, not of {NAME!r}: only "
      "MINE-clustering runs have latents to probe."
    )
  if not run.file("checkpoint.msgpack").is_file():
    raise FileNotFoundError(f"{run.path} has no checkpoint yet.")
  cfg = config_lib.from_dict(Config, saved)
  net = nnx.eval_shape(lambda: _make_net(cfg, 0))
  params, stats = nnx.state(net, nnx.Param), nnx.state(net, nnx.BatchStat)
  per_seed = lambda tree: jax.tree.map(
    lambda a: np.zeros((len(cfg.seeds), *a.shape), a.dtype), tree
  )
  checkpoint = run.load_checkpoint(  # the encoder's part of the training state; the rest unread
    {
      "step": np.zeros(len(cfg.seeds), np.int32),
      "state": {"params": per_seed(params), "batch_stats": per_seed(stats)},
    }
  )
  encoders = [
    tuple(
      jax.tree.map(lambda a, i=i: a[i], checkpoint["state"][k]) for k in ("params", "batch_stats")
    )
    for i in range(len(cfg.seeds))
  ]
  return cfg, int(checkpoint["step"][0]), encoders


def build_task(cfg: Config) -> Task:
  """The MINE-clustering task of ``cfg``."""
  labelled_train, eval_data = image_split(cfg, "train"), image_split(cfg, "test")
  train_data = {"image": labelled_train["image"]}  # unsupervised
  probe_rows(cfg, len(labelled_train["label"]))  # a bad --probe-validation-size fails here
  tx = optax.adam(cfg.learning_rate)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))

  def statistics(model, images, key, *, train):
    transform_key, shuffle_key = jax.random.split(key)
    x, x_bar = augmented_pairs(transform_key, images, INPUT_SIZE, cfg.transforms)
    if cfg.batchnorm == "joint":
      z = model.encode(jnp.concatenate([x, x_bar]), train=train)
      z, z_bar = z[: len(x)], z[len(x) :]
    else:
      z, z_bar = model.encode(x, train=train), model.encode(x_bar, train=train)
    return model.statistic(z, z_bar), model.statistic(z, jax.random.permutation(shuffle_key, z_bar))

  def init(key):
    _, params, stats = nnx.split(_make_net(cfg, key), nnx.Param, nnx.BatchStat)
    state = {"params": params, "batch_stats": stats, "opt_state": tx.init(params)}
    if cfg.keras_probe:
      state["keras_probe"] = keras_probe_init(jax.random.fold_in(key, 1), cfg.latent_dim)
    return state

  def loss_fn(params, stats, images, key):
    model = nnx.merge(graphdef, params, stats, copy=True)  # fresh Variables in this trace
    bound = mine_lower_bound(*statistics(model, images, key, train=True))
    return -bound, (bound, nnx.state(model, nnx.BatchStat))

  def train_step(state, batch, key):
    state, loss, (bound, stats), _ = gradient_step(
      tx, loss_fn, state, state["batch_stats"], batch["image"], key
    )
    return {**state, "batch_stats": stats}, {"loss": loss, "mi_bound": bound}

  def eval_step(state, batch):
    model = nnx.merge(graphdef, state["params"], state["batch_stats"])
    key = jax.random.key(0)  # the same transforms at every evaluation
    t_joint, t_marginal = statistics(model, batch["image"], key, train=False)
    return {"t_joint": t_joint, "exp_t_marginal": jnp.exp(t_marginal)}

  def finish_eval(means):
    return {"mi_bound": means["t_joint"] - np.log(means["exp_t_marginal"])}

  encode = latent_encoder(cfg)

  def probes(states: Any, step: int) -> tuple[Any, dict[str, np.ndarray]]:
    """The probes of an evaluation, per seed (host states, leading seed axis): the Keras
    book's warm-started one at scheduled evaluations (kept in the state) and / or a fresh
    linear probe at every ``probe_every``-th."""
    metrics: dict[str, list] = {}
    kept = []
    for i, seed in enumerate(cfg.seeds):
      replica = jax.tree.map(lambda a, i=i: a[i], states)
      params, stats = replica["params"], replica["batch_stats"]
      test_z = encode(params, stats, eval_data["image"])
      if cfg.keras_probe and step % cfg.eval_every == 0:  # not at a stop: epoch ends in keras
        key = jax.random.fold_in(jax.random.key(seed), step)
        kept.append(keras_probe_round(replica["keras_probe"], test_z, eval_data["label"], key))
        metrics.setdefault("keras_probe_accuracy", []).append(kept[-1]["last"])
        metrics.setdefault("keras_probe_best", []).append(kept[-1]["best"])
      if cfg.probe_every and (step // cfg.eval_every) % cfg.probe_every == 0:
        accuracy = honest_probe(
          cfg,
          jax.random.key(seed),  # the key of the final probe
          encode(params, stats, labelled_train["image"]),
          labelled_train["label"],
          test_z,
          eval_data["label"],
        )
        metrics.setdefault("probe_accuracy", []).append(accuracy["test"])
        if "validation" in accuracy:
          metrics.setdefault("probe_validation_accuracy", []).append(accuracy["validation"])
    if kept:
      states = {**states, "keras_probe": jax.tree.map(lambda *a: np.stack(a), *kept)}
    return states, {name: np.asarray(values) for name, values in metrics.items()}

  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
    finish_eval=finish_eval,
    host_eval=probes if cfg.keras_probe or cfg.probe_every else None,
  )


def _probe_params(key: jax.Array, latent_dim: int) -> dict[str, jax.Array]:
  """The probe dense(256) -> dense(10) as Keras initialises it: Glorot uniform, zero biases."""
  k1, k2 = jax.random.split(key)
  glorot = jax.nn.initializers.glorot_uniform()
  return {
    "w1": glorot(k1, (latent_dim, 256)),
    "b1": jnp.zeros(256),
    "w2": glorot(k2, (256, NUM_CLASSES)),
    "b2": jnp.zeros(NUM_CLASSES),
  }


def _probe_logits(params: dict[str, jax.Array], z: jax.Array) -> jax.Array:
  """``[N, latent_dim] -> [N, 10]``: two dense layers, no non-linearity between them."""
  return (z @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def keras_probe_init(key: jax.Array, latent_dim: int) -> dict[str, Any]:
  """The Keras protocol's probe before its first evaluation: parameters, Adam state, and its
  last and best accuracies (0)."""
  params = _probe_params(key, latent_dim)
  return {
    "params": params,
    "opt_state": _KERAS_PROBE_TX.init(params),
    "last": jnp.zeros(()),
    "best": jnp.zeros(()),
  }


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size"))
def keras_probe_round(
  probe: dict[str, Any],
  latents: jax.Array,
  labels: jax.Array,
  key: jax.Array,
  *,
  epochs: int = KERAS_PROBE_EPOCHS,
  batch_size: int = KERAS_PROBE_BATCH,
) -> dict[str, Any]:
  """One evaluation of the Keras book's probe protocol (``mine-13.8.1.py``, ``MINE.eval``).

  The probe of the last evaluation trains ``epochs`` more epochs on ``latents [N, L]`` and
  ``labels [N]`` (shuffled each epoch, batches of ``batch_size`` with the last one partial,
  as Keras's ``fit``; mean cross-entropy, Adam 1e-3) and is tested on the same latents.

  Returns:
    the probe with its parameters, Adam state, ``last`` accuracy and ``best`` over rounds.
  """
  n = len(latents)
  steps = -(-n // batch_size)
  weights = (jnp.arange(steps * batch_size) < n).reshape(steps, batch_size).astype(jnp.float32)

  def epoch(carry, epoch_key):
    order = jnp.pad(jax.random.permutation(epoch_key, n), (0, steps * batch_size - n))

    def step(carry, batch):
      params, opt_state = carry
      rows, weight = batch

      def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(
          _probe_logits(p, latents[rows]), labels[rows]
        )
        return jnp.sum(weight * ce) / jnp.sum(weight)

      updates, opt_state = _KERAS_PROBE_TX.update(jax.grad(loss)(params), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    return jax.lax.scan(step, carry, (order.reshape(steps, batch_size), weights))[0], None

  (params, opt_state), _ = jax.lax.scan(
    epoch, (probe["params"], probe["opt_state"]), jax.random.split(key, epochs)
  )
  accuracy = jnp.mean(jnp.argmax(_probe_logits(params, latents), -1) == labels)
  return {
    "params": params,
    "opt_state": opt_state,
    "last": accuracy,
    "best": jnp.maximum(probe["best"], accuracy),
  }


def probe_rows(cfg: Config, num_train: int) -> tuple[np.ndarray, np.ndarray]:
  """``(fit, validation)``: sorted indices of the training images whose latents the linear
  probe is trained on, and of the ``cfg.probe_validation_size`` it leaves out."""
  held_out = validation_indices(num_train, cfg.probe_validation_size, cfg.probe_validation_seed)
  if len(held_out) == num_train:
    raise ValueError(
      f"probe_validation_size={cfg.probe_validation_size} leaves none of the {num_train} "
      "training images to train the linear probe on."
    )
  return np.setdiff1d(np.arange(num_train), held_out), held_out


def honest_probe(
  cfg: Config,
  key: jax.Array,
  train_z: np.ndarray,
  train_y: np.ndarray,
  test_z: np.ndarray,
  test_y: np.ndarray,
) -> dict[str, float]:
  """The linear probe trained on the training latents ``[N, L]`` less its validation rows:
  ``{"test": accuracy, "validation": accuracy on the rows left out}`` (no ``validation`` when
  ``cfg.probe_validation_size`` is 0)."""
  fit_rows, held_out = probe_rows(cfg, len(train_y))
  sets = {"test": (test_z, test_y)}
  if len(held_out):
    sets["validation"] = (train_z[held_out], train_y[held_out])
  return linear_probe(
    key,
    train_z[fit_rows],
    train_y[fit_rows],
    sets,
    epochs=cfg.probe_epochs,
    learning_rate=cfg.probe_learning_rate,
  )


def standardised(fit_z, *others):
  """``[fit_z, *others]`` (latents ``[N, L]``) scaled by ``fit_z``'s per-dimension mean and
  std: what every probe of the latents sees."""
  mean, std = fit_z.mean(0), fit_z.std(0) + 1e-6
  return [(z - mean) / std for z in (fit_z, *others)]


def linear_probe(
  key: jax.Array,
  train_z: np.ndarray | jax.Array,
  train_y: np.ndarray | jax.Array,
  eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
  *,
  epochs: int,
  learning_rate: float,
  batch_size: int = 256,
) -> dict[str, float]:
  """Dense(256) -> dense(10), no non-linearity, trained with Adam on ``train_z [N, L]``:
  its accuracy on each of ``eval_sets`` (name -> ``(latents [M, L], labels [M])``)."""
  init_key, order_key = jax.random.split(key)
  params = _probe_params(init_key, train_z.shape[1])
  names = list(eval_sets)
  train_z, *eval_z = standardised(train_z, *(eval_sets[name][0] for name in names))
  tx = optax.adam(learning_rate)
  steps = max(1, len(train_z) // batch_size)

  def epoch(carry, epoch_key):
    def step(carry, rows):
      p, opt = carry
      loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        _probe_logits(p, train_z[rows]), train_y[rows]
      ).mean()
      updates, opt = tx.update(jax.grad(loss)(p), opt, p)
      return (optax.apply_updates(p, updates), opt), None

    order = jax.random.permutation(epoch_key, len(train_z))[: steps * batch_size]
    return jax.lax.scan(step, carry, order.reshape(steps, batch_size))[0], None

  train_z, train_y = jnp.asarray(train_z), jnp.asarray(train_y)
  (params, _), _ = jax.jit(lambda c, k: jax.lax.scan(epoch, c, k))(
    (params, tx.init(params)), jax.random.split(order_key, epochs)
  )
  return {
    name: float(
      jnp.mean(jnp.argmax(_probe_logits(params, jnp.asarray(z)), -1) == eval_sets[name][1])
    )
    for name, z in zip(names, eval_z)
  }


def validation_choice(
  rows: list[dict], seed: int, final: tuple[int, float, float]
) -> tuple[int, float]:
  """``(step, test accuracy)`` of the linear probe at the evaluation of ``seed`` whose
  validation accuracy is highest (the earliest of ties), among the probes in ``rows`` (a run's
  ``metrics.jsonl``) and the ``final`` one, ``(step, validation, test)``."""
  candidates = {
    r["step"]: (r["probe_validation_accuracy"], r["probe_accuracy"])
    for r in rows
    if r["split"] == "eval" and r["seed"] == seed and "probe_validation_accuracy" in r
  }
  candidates.setdefault(final[0], final[1:])
  step = max(candidates, key=lambda s: (candidates[s][0], -s))
  return step, candidates[step][1]


def plot_accuracy_vs_pairs(result: Result, cfg: Config) -> bool:
  """``accuracy_vs_pairs.png``: the probes along the run (``--probe-every``,
  ``--keras-probe``; mean +- std over seeds) against the image pairs seen, beside the Keras
  reimplementation's final number. False when no evaluation trained a probe."""
  rows = result.run_dir.read_metrics()
  series = {}
  for key, name in (
    ("probe_accuracy", "ours: probe trained on the training set"),
    ("keras_probe_accuracy", "the Keras protocol: probe trained on the test set"),
  ):
    steps, mean, std = eval_curve(rows, key)
    if steps:
      series[name] = ([s * cfg.batch_size for s in steps], mean, std)
  if not series:
    return False
  return plotting.curves(
    series,
    result.run_dir.path / "accuracy_vs_pairs.png",
    xlabel="image pairs seen",
    ylabel="test accuracy (%)",
    title=f"MINE clustering on MNIST, latent dimension {cfg.latent_dim} (seeds {list(cfg.seeds)})",
    log_x=True,
    reference=_KERAS_LINE,
  )


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains the encoder, probes its latents per seed and writes the summary."""
  task = build_task(cfg)
  result = fit(task, cfg, variant=variant)
  encode = latent_encoder(cfg)
  train_split, test_split = image_split(cfg, "train"), task.eval_data
  final = result.state["state"]

  rows = result.run_dir.read_metrics()
  probes = []
  for i, seed in enumerate(cfg.seeds):
    params, stats = (jax.tree.map(lambda a, i=i: a[i], final[k]) for k in ("params", "batch_stats"))
    test_latents = encode(params, stats, test_split["image"])
    key = jax.random.key(seed)
    if "probe_accuracy" in result.final_eval:  # the last evaluation's, with the same key
      honest = {"test": float(result.final_eval["probe_accuracy"][i])}
      if "probe_validation_accuracy" in result.final_eval:
        honest["validation"] = float(result.final_eval["probe_validation_accuracy"][i])
    else:
      train_latents = encode(params, stats, train_split["image"])
      honest = honest_probe(
        cfg, key, train_latents, train_split["label"], test_latents, test_split["label"]
      )
    on_test = linear_probe(
      key,
      test_latents,
      test_split["label"],
      {"test": (test_latents, test_split["label"])},
      epochs=cfg.probe_epochs,
      learning_rate=cfg.probe_learning_rate,
    )
    probe: dict[str, Any] = {
      "seed": seed,
      "probe_accuracy": honest["test"],
      "probe_trained_on_test_accuracy": on_test["test"],
    }
    if "validation" in honest:
      probe["probe_validation_accuracy"] = honest["validation"]
      step, probe["probe_accuracy_selected"] = validation_choice(
        rows, seed, (result.summary["steps"], honest["validation"], honest["test"])
      )
      probe["probe_selected_step"] = step
    if cfg.keras_probe:  # the best over the run's evaluations
      probe["keras_protocol_accuracy"] = float(final["keras_probe"]["best"][i])
    probes.append(probe)
  for name in [k for k in probes[0] if k != "seed"]:
    values = np.asarray([p[name] for p in probes])
    result.summary[name] = {
      "per_seed": values.tolist(),
      "mean": float(values.mean()),
      "std": float(values.std()),
    }
  result.run_dir.write_json("summary.json", result.summary)
  plot_accuracy_vs_pairs(result, cfg)
  print(f"\n{NAME} ({variant}), latent dimension {cfg.latent_dim}")
  for p in probes:
    line = f"seed {p['seed']}: linear probe (train -> test) {100 * p['probe_accuracy']:.2f}%"
    if "probe_accuracy_selected" in p:
      line += (
        f" (at the evaluation its validation images chose, step {p['probe_selected_step']}: "
        f"{100 * p['probe_accuracy_selected']:.2f}%)"
      )
    line += (
      f", probe trained and tested on the test set {100 * p['probe_trained_on_test_accuracy']:.2f}%"
    )
    if "keras_protocol_accuracy" in p:
      line += (
        f", the Keras book's protocol (warm-started probe on the test set, best over "
        f"evaluations) {100 * p['keras_protocol_accuracy']:.2f}%"
      )
    print(line)
  print(f"run directory: {result.run_dir.path}")
  return result
