"""Plot helpers whose numbers matter: the t-SNE embedding behind the experiments' tsne.png."""

import numpy as np
import pytest

from gapmmd_jax import plotting

manifold = pytest.importorskip("sklearn.manifold")
threadpoolctl = pytest.importorskip("threadpoolctl")


def test_tsne_2d_is_seeded_and_runs_on_one_openmp_thread(monkeypatch):
  points = np.random.default_rng(0).normal(size=(60, 8))
  threads_seen = []
  fit_transform = manifold.TSNE.fit_transform

  def recording_fit_transform(self, x, *args, **kwargs):
    pools = threadpoolctl.threadpool_info()
    threads_seen.extend(p["num_threads"] for p in pools if p["user_api"] == "openmp")
    return fit_transform(self, x, *args, **kwargs)

  monkeypatch.setattr(manifold.TSNE, "fit_transform", recording_fit_transform)
  # Two threads outside (the tests' conftest sets one); tsne_2d must still use one.
  with threadpoolctl.threadpool_limits(2, user_api="openmp"):
    embedded = plotting.tsne_2d(points, seed=3)
  assert embedded.shape == (60, 2) and np.isfinite(embedded).all()
  assert threads_seen and set(threads_seen) == {1}
  np.testing.assert_array_equal(embedded, plotting.tsne_2d(points, seed=3))
