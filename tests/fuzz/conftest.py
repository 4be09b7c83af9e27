"""The ``fuzz`` marker: bounded coverage-guided runs of the fuzz targets (fuzz/)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: bounded atheris runs of every fuzz target (fuzz/run.py)"
    )
