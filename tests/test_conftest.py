"""The switch that turns the skips for a missing ../shared into failures (CI sets it)."""

import pytest

from tests import conftest


def test_missing_shared_skips_for_a_developer_and_fails_in_ci(monkeypatch):
  monkeypatch.delenv(conftest.REQUIRE_SHARED_ENV, raising=False)
  with pytest.raises(pytest.skip.Exception, match="no data"):
    conftest.missing_shared("no data")
  monkeypatch.setenv(conftest.REQUIRE_SHARED_ENV, "1")
  with pytest.raises(pytest.fail.Exception, match=r"no data .*GAPMMD_REQUIRE_SHARED=1"):
    conftest.missing_shared("no data")


def test_needs_anchors_runs_the_test_only_when_they_are_there(monkeypatch, tmp_path):
  monkeypatch.setattr(conftest, "ANCHORS", tmp_path)
  ran = []
  test = conftest.needs_anchors("mmdagg")(lambda: ran.append(True))
  monkeypatch.delenv(conftest.REQUIRE_SHARED_ENV, raising=False)
  with pytest.raises(pytest.skip.Exception, match="anchors/mmdagg"):
    test()
  monkeypatch.setenv(conftest.REQUIRE_SHARED_ENV, "1")
  with pytest.raises(pytest.fail.Exception):
    test()
  (tmp_path / "mmdagg").mkdir()
  test()
  assert ran == [True]
