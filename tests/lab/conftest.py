"""Shared fixtures of the lab tests."""

from tests.lab.fixture import lab

__all__ = ["lab"]
