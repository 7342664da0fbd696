"""Tests whose reference is an upstream library (transformers, mambapy, continual-inference) or that need another
optional extra: ``need(module, extra)`` imports it, or, when it is missing, skips saying which extra to install;
with ``EDGESEQ_REQUIRE_ORACLES=1`` (set by ``.ci/run``) a missing extra is a failure instead, so a run cannot end
green without the project's strongest checks. (tests/ is on ``sys.path``: pytest puts the rootdir conftest's
folder there.)"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE = "EDGESEQ_REQUIRE_ORACLES"


def required() -> bool:
    return os.environ.get(REQUIRE) == "1"


def need(module: str, extra: str, why: str = ""):
    """The imported ``module``; else a skip (a failure under EDGESEQ_REQUIRE_ORACLES=1) naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (f"{module} is not importable ({exc}): install the [{extra}] extra "
               f"(pip install -e '.[{extra}]'){': ' + why if why else ''}")
        if required():
            pytest.fail(f"{msg}; {REQUIRE}=1 makes a missing extra a failure", pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def need_tool(command: str, apt_package: str, why: str = ""):
    """The path of the system tool ``command``; else a skip (a failure under EDGESEQ_REQUIRE_ORACLES=1, as .ci/run
    installs it with apt-get) naming the Debian package."""
    import shutil

    path = shutil.which(command)
    if path:
        return path
    msg = f"{command} is not installed: apt-get install {apt_package}{': ' + why if why else ''}"
    if required():
        pytest.fail(f"{msg}; {REQUIRE}=1 makes a missing tool a failure", pytrace=False)
    pytest.skip(msg)
