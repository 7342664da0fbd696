"""tests/extras.py: a missing extra skips, saying which to install, except under EDGESEQ_REQUIRE_ORACLES=1."""

import pytest

from extras import REQUIRE, need


def test_missing_extra_skips_naming_it(monkeypatch):
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install the \[importers\] extra"):
        need("edgeseq_no_such_module", "importers", "an oracle")


def test_missing_extra_fails_when_oracles_are_required(monkeypatch):
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match=r"\[importers\] extra.*EDGESEQ_REQUIRE_ORACLES=1"):
        need("edgeseq_no_such_module", "importers", "an oracle")


def test_present_module_is_returned():
    import json

    assert need("json", "none") is json
