"""Fixtures shared by every test directory (plugins named here)."""

pytest_plugins = ["background_loop"]
