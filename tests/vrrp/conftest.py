"""Shared fixtures of the VRRP tests."""

from tests.lab.fixture import lab

__all__ = ["lab"]
