"""`gridlb drain --wait` shows the active connections left falling to zero (a bar on a terminal)."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from gridlb.cli.ctl import DrainView
from tests.cli.test_ctl import SVC, B, Env, env  # noqa: F401 - the running director fixture


def test_terminal_bar_counts_down() -> None:
    out = io.StringIO()
    view = DrainView("10.0.0.12:2811", tty=True, console=Console(file=out, force_terminal=True, width=120))
    for left in (3, 2, 1, 0):
        view.update(left)
        assert view.progress is not None
        view.progress.refresh()
    view.close()
    text = out.getvalue()
    assert "draining 10.0.0.12:2811" in text
    positions = [text.index(f"{n} active connection(s) left") for n in (3, 2, 1, 0)]
    assert positions == sorted(positions)


async def test_plain_lines_fall_to_zero(env: Env, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    env.dp.set_active(SVC, B, 3)
    task = asyncio.ensure_future(env.run(capsys, "drain", "127.44.0.3", "--wait"))
    for left in (2, 1, 0):
        await asyncio.sleep(0.5)
        env.dp.set_active(SVC, B, left)
    code, out, _ = await asyncio.wait_for(task, 10)
    assert code == 0
    assert out.splitlines() == [
        "drained 127.44.0.3:2811: no new connections",
        "waiting: 3 active connections",
        "waiting: 2 active connections",
        "waiting: 1 active connection",
        "127.44.0.3:2811: no active connection",
    ]
