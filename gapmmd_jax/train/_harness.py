"""The one training loop every experiment uses.

An experiment supplies a :class:`Task`: a pure per-replica
``train_step(state, batch, key) -> (state, metrics)``, an ``init(key)`` and an
``eval_step``. :func:`fit` stacks one replica per seed on a leading axis and
``vmap``s the step over it, shards each batch over a ``data`` mesh axis of all
devices (state replicated), jits the step once with the state donated (or
``steps_per_call`` steps, unrolled, per call), and runs the loop with progress,
evaluation, metrics, checkpoints and ``--resume``. A non-finite logged metric
or parameter stops the run with :class:`NonFiniteError` before it can reach a
checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gapmmd_jax import config as config_lib, plotting
from gapmmd_jax.data import _batching
from gapmmd_jax.train import _rundir, _stop
from gapmmd_jax.train._config import RESUMABLE_FIELDS, TrainConfig

PyTree = Any
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """What an experiment hands to :func:`fit`.

  Attributes:
    name: experiment name (run directory prefix, summary title).
    init: ``key -> state`` of one replica (a pytree of arrays).
    train_step: pure ``(state, batch, key) -> (state, metrics)`` for one
      replica; ``batch`` is a dict of ``[B, ...]`` arrays, ``metrics`` a dict of
      scalars that includes ``"loss"``.
    eval_step: pure ``(state, batch) -> metrics`` with per-example ``[B, ...]``
      values; their means over the evaluation set are logged, scalars as they
      are, others after ``finish_eval``.
    train_data: dict of host arrays with a leading example axis.
    eval_data: the same for evaluation.
    host_update: optional ``(states, step) -> states``, run outside ``jit``
      every ``host_update_every`` steps on the states of all seeds (NumPy,
      leading seed axis); for work that cannot be traced, such as DAN's
      kernel-weight quadratic program.
    host_update_every: steps between calls of ``host_update``.
    finish_eval: optional map from the evaluation means (NumPy, leading seed
      axis) to scalar metrics per seed, e.g. a clustering accuracy from the
      mean contingency table.
    prepare_eval: optional pure ``(state, train_data) -> state`` run on each
      replica before every evaluation, with the device-resident training
      data; its result is what ``eval_step`` sees (and is not kept), e.g. a
      state with BatchNorm statistics measured over the training set.
    host_eval: optional ``(states, step) -> (states, metrics)`` run on the host
      at every evaluation, before ``eval_step``, on the states of all seeds
      (NumPy, leading seed axis); for evaluations with a state of their own,
      such as a probe warm-started from one evaluation to the next. The states
      it returns are kept (and checkpointed); its ``metrics``, ``[S]`` arrays,
      are logged with the evaluation's. Not run when ``--resume`` finds the run
      already finished (that evaluation would train its state once more).
    seed_data: optional ``seed -> dict of host arrays`` that differ between
      seeds but stay fixed during training (e.g. a seed's labelled subset);
      ``init``'s state, which must then be a dict, gets them under
      ``"seed_data"``, and ``train_step`` must hand them on unchanged.
  """

  name: str
  init: Callable[[jax.Array], PyTree]
  train_step: Callable[[PyTree, dict, jax.Array], tuple[PyTree, Metrics]]
  eval_step: Callable[[PyTree, dict], Metrics]
  train_data: dict[str, np.ndarray]
  eval_data: dict[str, np.ndarray]
  host_update: Callable[[PyTree, int], PyTree] | None = None
  host_update_every: int = 1
  finish_eval: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
  prepare_eval: Callable[[PyTree, dict], PyTree] | None = None
  host_eval: Callable[[PyTree, int], tuple[PyTree, dict[str, np.ndarray]]] | None = None
  seed_data: Callable[[int], dict[str, np.ndarray]] | None = None


class NonFiniteError(FloatingPointError):
  """Training produced a NaN or infinite metric or parameter; the run stopped before saving it."""


def _check_finite(
  values: dict[str, np.ndarray],
  seeds: tuple[int, ...],
  step: int,
  what: str,
  last_checkpoint: int | None,
) -> None:
  """Raises :class:`NonFiniteError` naming the step, metrics and seeds of any non-finite value.

  Args:
    values: ``name -> [S, ...]`` host arrays (leading seed axis).
  """
  bad = {}
  for name, value in values.items():
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
      continue
    finite = np.isfinite(value.reshape(len(seeds), -1)).all(axis=1)
    if not finite.all():
      bad[name] = [seed for seed, ok in zip(seeds, finite) if not ok]
  if bad:
    by_seeds: dict[tuple[int, ...], list[str]] = {}
    for name, seeds_of in bad.items():
      by_seeds.setdefault(tuple(seeds_of), []).append(name)
    found = "; ".join(
      f"{', '.join(names)} (seed{'s' * (len(s) > 1)} {', '.join(map(str, s))})"
      for s, names in by_seeds.items()
    )
    kept = (
      "no checkpoint was written yet"
      if last_checkpoint is None
      else f"the checkpoint of step {last_checkpoint} (finite) is kept: --resume continues from it"
    )
    raise NonFiniteError(
      f"training diverged at step {step}: non-finite {what}: {found}; "
      f"stopped, {kept}. Lower the learning rate or check the inputs."
    )


def _parameters_by_name(states: PyTree) -> dict[str, np.ndarray]:
  """Host state leaves keyed by their tree path (leading seed axis kept)."""
  leaves = jax.tree_util.tree_flatten_with_path(states)[0]
  return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


@dataclasses.dataclass
class Result:
  """What :func:`fit` returns: final states and metrics of every seed."""

  state: PyTree  # host arrays, leading axis = seeds
  final_eval: dict[str, list[float]]
  summary: dict[str, Any]
  run_dir: _rundir.RunDir
  num_traces: int


def data_mesh() -> Mesh:
  """A 1-D mesh named ``data`` over every device of every process."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def _to_host(tree: PyTree) -> PyTree:
  """Copies replicated arrays to NumPy (works when they span several hosts)."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


def _seed_keys(seeds: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-seed (init, data, step) keys, each ``[S]``."""
  keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(jnp.asarray(seeds))
  return keys[:, 0], keys[:, 1], keys[:, 2]


def over_seeds(fn: Callable, seed_axis: str, in_axes: tuple[int | None, ...]) -> Callable:
  """``fn`` applied to every seed: batched by ``vmap``, or unrolled one seed after another.

  ``in_axes`` marks, per argument, 0 (leading seed axis) or None (shared).
  XLA's CPU backend runs batched (vmapped) convolutions far slower than the
  same convolutions one after another (GAP-LeNet step, 3 seeds, 2 cores:
  vmap 12.7x one seed, unrolled 2.5x, a ``lax.map`` loop 46x), so ``"auto"``
  unrolls on CPU and vmaps elsewhere.
  """
  if seed_axis == "auto":
    seed_axis = "unroll" if jax.default_backend() == "cpu" else "vmap"
  if seed_axis == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def unrolled(*args):
    num_seeds = next(a for a, axis in zip(args, in_axes) if axis == 0)
    num_seeds = jax.tree.leaves(num_seeds)[0].shape[0]
    outputs = [
      fn(
        *(
          jax.tree.map(lambda leaf, i=i: leaf[i], a) if axis == 0 else a
          for a, axis in zip(args, in_axes)
        )
      )
      for i in range(num_seeds)
    ]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)

  return unrolled


def _mean_std(values: list[float]) -> dict[str, Any]:
  arr = np.asarray(values, np.float64)
  return {"per_seed": arr.tolist(), "mean": float(arr.mean()), "std": float(arr.std())}


def _progress(total: int, initial: int, enabled: bool, name: str):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm

  return tqdm(
    total=total,
    initial=initial,
    desc=name,
    unit="step",
    dynamic_ncols=True,
    mininterval=1.0 if sys.stderr.isatty() else 30.0,
  )


class _Evaluator:
  """Evaluates every seed on the whole eval set in fixed-size, masked batches."""

  def __init__(self, task: Task, mesh: Mesh, batch_size: int, seed_axis: str):
    num = len(next(iter(task.eval_data.values())))
    devices = mesh.devices.size
    self.batch_size = math.ceil(min(batch_size, num) / devices) * devices
    self.num_batches = math.ceil(num / self.batch_size)
    padded = self.num_batches * self.batch_size
    host = {
      k: np.concatenate([v, np.zeros((padded - num, *v.shape[1:]), v.dtype)])
      for k, v in task.eval_data.items()
    }
    host["_mask"] = np.arange(padded) < num
    self.data = _batching.put_replicated(host, mesh)
    self.num = num
    batch_sharding = NamedSharding(mesh, P("data"))
    repl = NamedSharding(mesh, P())

    def sums(states, data, index):
      batch = jax.tree.map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, index * self.batch_size, self.batch_size), data
      )
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      mask = batch.pop("_mask")
      per_example = over_seeds(task.eval_step, seed_axis, in_axes=(0, None))(states, batch)

      def masked_sum(v):  # v: [S, B, ...] per-example values
        return jnp.sum(jnp.where(mask.reshape(mask.shape + (1,) * (v.ndim - 2)), v, 0.0), axis=1)

      return {k: masked_sum(v) for k, v in per_example.items()}

    self._sums = jax.jit(sums, out_shardings=repl)
    self._prepare = None
    if task.prepare_eval is not None:
      self._prepare = jax.jit(
        over_seeds(task.prepare_eval, seed_axis, in_axes=(0, None)), out_shardings=repl
      )

  def __call__(self, states, train_data) -> dict[str, np.ndarray]:
    if self._prepare is not None:
      states = self._prepare(states, train_data)
    totals = None
    for i in range(self.num_batches):
      part = self._sums(states, self.data, i)
      totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
    return {k: v / self.num for k, v in _to_host(totals).items()}


def seeds_tag(seeds: tuple[int, ...]) -> str:
  """``s0-1-2`` for seeds (0, 1, 2): the seeds part of default run-directory names."""
  return "s" + "-".join(str(s) for s in seeds)


def stacked_seed_data(task: Task, seeds) -> PyTree:
  """``task.seed_data(seed)`` of every seed, stacked on a leading seed axis (host arrays)."""
  assert task.seed_data is not None
  per_seed = [task.seed_data(seed) for seed in seeds]
  return jax.tree.map(lambda *leaves: np.stack(leaves), *per_seed)


def multi_step(seeded_step: Callable, batch_size: int, batch_sharding: NamedSharding) -> Callable:
  """``(states, data, permutations, first_index, step_keys, count) -> (states, metrics)``: ``count``
  (static) steps of ``seeded_step`` one after another in one program, on batches
  ``first_index``, ``first_index + 1``, ... of the epoch gathered on device; the metrics of
  the last step.

  The steps are unrolled, not looped: XLA's CPU backend ran the GAP-LeNet step
  17x slower inside a ``lax.scan`` / ``while_loop`` body than outside one.
  """

  def run(states, data, permutations, first_index, step_keys, count):
    metrics = None
    for i in range(count):
      batch = _batching.take_batch(data, permutations, first_index + i, batch_size)
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      states, metrics = seeded_step(states, batch, step_keys)
    return states, metrics

  return run


def _steps_to_boundary(step: int, *periods: int) -> int:
  """Steps from ``step`` to the next multiple of any of ``periods`` (>= 1)."""
  return min(period - step % period for period in periods)


def num_steps(cfg: TrainConfig, num_train: int) -> tuple[int, int]:
  """``(steps_per_epoch, total_steps)`` of a run: full batches only, ``epochs`` rounded."""
  steps_per_epoch = num_train // cfg.batch_size
  return steps_per_epoch, max(1, round(cfg.epochs * steps_per_epoch))


def _signal_name(signum: int | None) -> str | None:
  return None if signum is None else signal.Signals(signum).name


def _resume_changes(run: _rundir.RunDir, cfg: TrainConfig, resolved: dict) -> dict[str, dict]:
  """The fields of ``resolved`` (this invocation's config) that differ from the run's saved
  one, as ``{field: {"saved": ..., "now": ...}}``, but for the invocation's own switches
  (``resume``, ``stop_after``, ``progress``). Raises ValueError when one of them is not
  resumable (``RESUMABLE_FIELDS`` and ``cfg.RESUMABLE``)."""
  saved = run.read_json(_rundir.CONFIG_FILE)
  defaults = config_lib.to_dict(type(cfg)())  # a field added since the run compares as default
  differs = {
    k: (saved.get(k, defaults.get(k)), v)
    for k, v in resolved.items()
    if saved.get(k, defaults.get(k)) != v
  }
  resumable = (*RESUMABLE_FIELDS, *type(cfg).RESUMABLE)
  if refused := {k: d for k, d in differs.items() if k not in resumable}:
    raise ValueError(
      f"--resume: the config differs from the saved run in {run.path}: "
      + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in refused.items())
    )
  return {
    k: {"saved": a, "now": b}
    for k, (a, b) in differs.items()
    if k not in ("resume", "stop_after", "progress")
  }


def fit(task: Task, cfg: TrainConfig, *, variant: str = "custom") -> Result:
  """Trains every seed of ``task`` under ``cfg`` and writes the run directory.

  A stop request (:func:`~gapmmd_jax.train.request_stop`; the ``gapmmd``
  command makes one of SIGINT or SIGTERM) ends the run after the steps in flight
  (the running call and at most one queued behind it), with an evaluation, a
  checkpoint and the summary (``stopped_by``) there.

  Returns:
    :class:`Result` with the final (host) states, eval metrics per seed and
    the summary that was written.
  """
  if _stop.stop_signal() is not None:
    raise _stop.StopRequested(
      f"{task.name}: not started, a stop was requested ({_signal_name(_stop.stop_signal())})."
    )
  mesh = data_mesh()
  devices = mesh.devices.size
  if cfg.batch_size % devices:
    raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {devices} devices.")
  num_train = len(next(iter(task.train_data.values())))
  if num_train < cfg.batch_size:
    raise ValueError(f"batch_size={cfg.batch_size} exceeds the {num_train} training examples.")
  steps_per_epoch, total_steps = num_steps(cfg, num_train)
  run = _rundir.RunDir(
    _rundir.resolve_run_dir(
      cfg.out_dir, cfg.run_name, f"{task.name}-{variant}-{seeds_tag(cfg.seeds)}", cfg.resume
    )
  )
  # A named run with nothing saved yet starts under --resume too, so that one
  # command both starts a long run and continues it.
  resuming = cfg.resume and run.file(_rundir.CHECKPOINT_FILE).exists()
  if cfg.resume and not resuming:
    print(f"--resume: no checkpoint in {run.path} yet: starting a new run there", file=sys.stderr)
  resolved = {
    "experiment": task.name,
    "variant": variant,
    **config_lib.to_dict(cfg),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  # Checked before anything compiles: a refused config fails at once.
  changed_on_resume = _resume_changes(run, cfg, resolved) if resuming else None

  repl = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(None, "data"))
  # Made by a jitted call so that every process gets the same global (replicated) keys.
  init_keys, data_keys, step_keys = jax.jit(lambda: _seed_keys(cfg.seeds), out_shardings=repl)()
  traces = [0]

  def replica_step(train_state, batch, step_key):
    key = jax.random.fold_in(step_key, train_state["step"])
    inner, metrics = task.train_step(train_state["state"], batch, key)
    return {"step": train_state["step"] + 1, "state": inner}, metrics

  seeded_step = over_seeds(replica_step, cfg.seed_axis, (0, 0, 0))

  def counted_step(*args):
    traces[0] += 1  # runs once per trace, not per call
    return seeded_step(*args)

  if cfg.steps_per_call == 1:
    step_fn = jax.jit(
      counted_step,
      in_shardings=(repl, batch_sharding, repl),
      out_shardings=(repl, repl),
      donate_argnums=0,
    )
  else:  # one compilation per distinct number of steps per call
    steps = multi_step(seeded_step, cfg.batch_size, batch_sharding)

    def counted_steps(*args):
      traces[0] += 1
      return steps(*args)

    steps_fn = jax.jit(
      counted_steps, out_shardings=(repl, repl), donate_argnums=0, static_argnums=5
    )
  init_fn = jax.jit(
    jax.vmap(lambda k: {"step": jnp.zeros((), jnp.int32), "state": task.init(k)}),
    out_shardings=repl,
  )
  take_fn = jax.jit(_batching.take_batch, static_argnums=3, out_shardings=batch_sharding)
  perm_fn = jax.jit(
    functools.partial(_batching.epoch_permutations, shuffle=cfg.shuffle),
    static_argnums=2,
    out_shardings=repl,
  )
  evaluate = _Evaluator(task, mesh, cfg.eval_batch_size, cfg.seed_axis)
  train_data = _batching.put_replicated(task.train_data, mesh)

  states = init_fn(init_keys)
  if task.seed_data is not None:  # host arrays per seed, stacked on the seed axis
    stacked = stacked_seed_data(task, cfg.seeds)
    states = {
      **states,
      "state": {**states["state"], "seed_data": _batching.put_replicated(stacked, mesh)},
    }
  start = 0
  if resuming:
    host_states = run.load_checkpoint(_to_host(states))
    states = _batching.put_replicated(host_states, mesh)
    start = int(host_states["step"][0])
    run.truncate_metrics(start)
  else:
    if run.file(_rundir.CHECKPOINT_FILE).exists():
      raise FileExistsError(
        f"{run.path} already holds a run: pass --resume to continue it "
        "or choose another --run-name."
      )
    run.write_json(_rundir.CONFIG_FILE, resolved)

  def log_eval(step: int, *, host_eval: bool = True) -> dict[str, np.ndarray]:
    nonlocal states
    kept: dict[str, np.ndarray] = {}
    if host_eval and task.host_eval is not None:
      host_states = _to_host(states)
      host_states["state"], kept = task.host_eval(host_states["state"], step)
      states = _batching.put_replicated(host_states, mesh)
    metrics = evaluate(states["state"], train_data)
    if task.finish_eval is not None:
      metrics = task.finish_eval(metrics)
    metrics = {**metrics, **kept}
    run.append_metrics(
      [
        {
          "step": step,
          "seed": seed,
          "split": "eval",
          **{k: float(v[i]) for k, v in metrics.items()},
        }
        for i, seed in enumerate(cfg.seeds)
      ]
    )
    return metrics

  end = total_steps if cfg.stop_after is None else min(total_steps, start + cfg.stop_after)
  bar = _progress(total_steps, start, cfg.progress, task.name)
  wall_start = time.perf_counter()
  permutations, epoch = None, -1
  eval_metrics = None
  last_checkpoint = start if resuming else None
  # Calls of several steps end where the host has work: at epoch, log, evaluation,
  # checkpoint and host-update steps, and at the end.
  periods = (
    steps_per_epoch,
    cfg.log_every,
    cfg.eval_every,
    cfg.checkpoint_every,
    *((task.host_update_every,) if task.host_update is not None else ()),
  )
  step, first_call_steps = start, 0
  # Dispatch is asynchronous: the host keeps one call queued behind the running one and no
  # more, so the device never waits for Python, while a stop request, the progress bar and
  # the wall time follow the device within one call instead of running ahead of it.
  previous_metrics = None  # of the call dispatched before the latest
  try:
    while step < end:
      if step // steps_per_epoch != epoch:
        epoch = step // steps_per_epoch
        permutations = perm_fn(data_keys, epoch, num_train)
      if cfg.steps_per_call == 1:
        count = 1
        batch = take_fn(train_data, permutations, step % steps_per_epoch, cfg.batch_size)
        states, metrics = step_fn(states, batch, step_keys)
      else:
        count = min(cfg.steps_per_call, end - step, _steps_to_boundary(step, *periods))
        states, metrics = steps_fn(
          states, train_data, permutations, step % steps_per_epoch, step_keys, count
        )
      if step == start:  # the first call compiles: keep it out of the throughput
        jax.block_until_ready(states)
        first_step_seconds, first_call_steps = time.perf_counter() - wall_start, count
      if previous_metrics is not None:
        jax.block_until_ready(previous_metrics)
      previous_metrics = metrics
      step += count
      done = step
      if task.host_update is not None and done % task.host_update_every == 0:
        host_states = _to_host(states)
        host_states["state"] = task.host_update(host_states["state"], done)
        states = _batching.put_replicated(host_states, mesh)
      if _stop.stop_signal() is not None and done < end:  # stop here, cleanly
        end = done
      if done % cfg.log_every == 0 or done == end:
        host = _to_host(metrics)
        run.append_metrics(
          [
            {
              "step": done,
              "seed": seed,
              "split": "train",
              **{k: float(v[i]) for k, v in host.items()},
            }
            for i, seed in enumerate(cfg.seeds)
          ]
        )
        _check_finite(host, cfg.seeds, done, "training metric", last_checkpoint)
        if bar is not None:
          bar.set_postfix(loss=f"{float(np.mean(host['loss'])):.4f}", refresh=False)
      if done % cfg.eval_every == 0 or done == end:
        eval_metrics = log_eval(done)
        _check_finite(eval_metrics, cfg.seeds, done, "evaluation metric", last_checkpoint)
      if done % cfg.checkpoint_every == 0 or done == end:
        host_states = _to_host(states)
        _check_finite(
          _parameters_by_name(host_states["state"]),
          cfg.seeds,
          done,
          "parameter or optimizer state",
          last_checkpoint,
        )
        run.save_checkpoint(host_states)
        last_checkpoint = done
      if bar is not None:
        bar.update(count)
  finally:
    if bar is not None:
      bar.close()
  train_seconds = time.perf_counter() - wall_start
  steady_steps = end - start - first_call_steps
  if eval_metrics is None:  # resumed a run that had already finished
    eval_metrics = log_eval(end, host_eval=False)

  final_eval = {k: [float(x) for x in v] for k, v in eval_metrics.items()}
  summary = {
    "experiment": task.name,
    "variant": variant,
    "seeds": list(cfg.seeds),
    "steps": end,
    "planned_steps": total_steps,
    "complete": end == total_steps,
    "steps_per_epoch": steps_per_epoch,
    "resumed_from_step": start if resuming else None,
    "changed_on_resume": changed_on_resume,
    "train_seconds": train_seconds,
    "first_step_seconds": first_step_seconds if end > start else None,
    "steps_per_second": (
      steady_steps / (train_seconds - first_step_seconds) if steady_steps > 0 else None
    ),
    "devices": [str(d) for d in jax.devices()],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "steps_per_call": cfg.steps_per_call,
    "stopped_by": _signal_name(_stop.stop_signal()) if end < total_steps else None,
    "final_eval": {k: _mean_std(v) for k, v in final_eval.items()},
  }
  run.write_json(_rundir.SUMMARY_FILE, summary)
  if jax.process_index() == 0:
    plotting.learning_curves(run.read_metrics(), run.file(_rundir.CURVES_FILE))
  run.write_readme(f"{task.name} ({variant}), seeds {list(cfg.seeds)}")
  return Result(
    state=_to_host(states),
    final_eval=final_eval,
    summary=summary,
    run_dir=run,
    num_traces=traces[0],
  )
