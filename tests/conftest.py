"""Shared fixtures: where the real data lives, and a per-test cache directory."""

import functools
import os
import pathlib

import pytest

# In-process `gapmmd` calls must not change XLA_FLAGS under the tests' JAX backend
# (which may not exist yet when the first such call runs): --xla defaults to
# `default` here; tests/test_cli_and_config.py checks `auto` explicitly.
os.environ.setdefault("GAPMMD_XLA", "default")

# The two test workers share the two cores: OpenMP loops with a thread per core in each
# busy-wait on one another (t-SNE of 200 points: 0.5 s alone, 4.5 s beside a busy process,
# 0.8 s there with one thread; 2026-11-29). t-SNE now limits its own pool
# (`plotting.tsne_2d`); this also caps OpenBLAS's threads per worker, and the suite
# without it has not been timed since.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Scripts that the tests run in subprocesses (they start JAX with their own device
# counts or join a jax.distributed job): never imported by --doctest-modules.
collect_ignore_glob = ["*/_*_run.py"]

REPO = pathlib.Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "data"
ANCHORS = REPO.parent / "shared" / "anchors"

# CI sets GAPMMD_REQUIRE_SHARED=1: a test that needs ../shared (the real data, the authors'
# codes in ../shared/anchors) then fails where a developer without it sees it skipped, so a
# green CI shows that every such test ran.
REQUIRE_SHARED_ENV = "GAPMMD_REQUIRE_SHARED"


def missing_shared(reason: str) -> None:
  """Skips the running test, or fails it when ``$GAPMMD_REQUIRE_SHARED`` is 1."""
  if os.environ.get(REQUIRE_SHARED_ENV) == "1":
    pytest.fail(f"{reason} ({REQUIRE_SHARED_ENV}=1: it must be there)", pytrace=False)
  pytest.skip(reason)


def needs_anchors(*names: str):
  """Decorator: the test imports the authors' codes ``names`` from ../shared/anchors."""

  def wrap(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
      absent = [name for name in names if not (ANCHORS / name).is_dir()]
      if absent:
        missing_shared(f"needs ../shared/anchors/{', '.join(absent)}")
      return test(*args, **kwargs)

    return run

  return wrap


def _data_dir(env: str, fallback: pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(os.environ.get(env) or fallback)
  if not path.is_dir():
    missing_shared(f"real data not found at {path}: set {env}")
  return path


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
  """The directory with the real MNIST IDX files ($GAPMMD_DATA_DIR or ../shared/data/mnist)."""
  return _data_dir("GAPMMD_DATA_DIR", _SHARED / "mnist")


@pytest.fixture(scope="session")
def bsds_dir() -> pathlib.Path:
  """The BSDS500 training photos ($GAPMMD_BSDS_DIR or ../shared/data/bsds500/train)."""
  return _data_dir("GAPMMD_BSDS_DIR", _SHARED / "bsds500" / "train")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  """Generated datasets go to a per-session temporary cache, never the user's."""
  monkeypatch.setenv("GAPMMD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
