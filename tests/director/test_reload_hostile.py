"""A running director fed hostile site files on reload: each is refused and the director keeps serving.

The probe's reload inputs (the alias bomb, 10,000-deep YAML, a site file that is really /dev/zero)
used to take the director down; here each `gridlb reload` must answer "reload refused" with one
`file:line` error, the director must keep its generation and serve downloads before and after, and
its log must hold no traceback. A good file afterwards reloads as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.config.test_load_hostile import alias_bomb
from tests.director.loopback import Loopback, download

_nets = itertools.count(150 + os.getpid() % 50)


@pytest.fixture
def lb() -> Iterator[Loopback]:
    harness = Loopback(next(_nets))
    try:
        yield harness
    finally:
        harness.close()


async def downloads_ok(lb: Loopback, n: int, tag: str) -> None:
    expected = (lb.root / "small.bin").read_bytes()
    out = lb.dir / "out"
    out.mkdir(exist_ok=True)
    results = await asyncio.gather(
        *(download(lb.vip, "small.bin", expected, out, f"{tag}-{i}") for i in range(n))
    )
    assert [r.error for r in results if not r.ok] == []


def put(path: Path, text: str | None) -> None:
    """Replace the site file by `text`, or by a symlink to /dev/zero when `text` is None."""
    tmp = path.with_suffix(".new")
    if text is None:
        tmp.symlink_to("/dev/zero")
    else:
        tmp.write_text(text)
    tmp.replace(path)


async def test_hostile_reloads_are_refused_and_the_director_keeps_serving(lb: Loopback) -> None:
    for i in (2, 3):
        lb.start_server(i)
    site = lb.write_site([(2, 1), (3, 1)])
    good = site.read_text()
    lb.start_director()
    await downloads_ok(lb, 10, "before")

    hostile = [
        (alias_bomb(), f"{site}:5: error: YAML: aliases stand for more than"),
        ("x: " + "[" * 10_000 + "]" * 10_000 + "\n", f"{site}:1: error: YAML: nested deeper than 32 levels"),
        (None, f"{site}:1: error: input is larger than the 1 MiB limit"),
    ]
    for text, error in hostile:
        put(site, text)
        reply = await asyncio.to_thread(lb.ctl, "reload", timeout_s=30)
        assert reply.returncode == 1, reply
        refusal, *errors = reply.stderr.splitlines()
        assert refusal == "gridlb reload: reload refused, still running the previous config:"
        assert len(errors) == 1 and errors[0].startswith(error), reply.stderr
        assert lb.director is not None and lb.director.poll() is None
        status = await asyncio.to_thread(lb.status)
        assert status["generation"] == 1
        await downloads_ok(lb, 10, f"after-{len(error)}")

    put(site, good.replace("weight: 1", "weight: 2", 1))
    reply = await asyncio.to_thread(lb.ctl, "reload")
    assert reply.returncode == 0, reply.stderr
    assert (await asyncio.to_thread(lb.status))["generation"] == 2
    await downloads_ok(lb, 10, "good")
    log = lb.log()
    assert "Traceback" not in log and "RecursionError" not in log and "MemoryError" not in log
