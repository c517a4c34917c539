"""Shared fixtures of the VRRP tests: the lab with a client and two empty director namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridlb.lab.netns import Lab
from tests import support


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab per test (no real servers, nothing started), always torn down (also on failure)."""
    with support.lab("v", realservers=0, start="none", net_a=77) as built:
        yield built
