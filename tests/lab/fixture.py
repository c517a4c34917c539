"""The `lab` pytest fixture: a fresh namespace topology per test, always torn down (also on failure)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gridlb.lab.netns import Lab, LabSpec
from tests.support import need_root


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Client, dir1, dir2 and `realservers` (default 0; `@pytest.mark.parametrize` indirect not needed)."""
    need_root()
    count = getattr(request, "param", 0)
    with Lab(LabSpec(prefix=f"glbV-{os.getpid()}", realservers=count)) as built:
        yield built
