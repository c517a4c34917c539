"""gridlb ipvsadm against text captured from the real ipvsadm 1.31 on a real IPVS kernel.

The fixtures in golden/out/ were produced by golden/capture.sh under Debian 12's kernel in qemu
(6.1.0-56-amd64, ipvsadm 1:1.31-1+b1), with the project's runner:

    GRIDLB_VM_OUT=tests/ipvsadm/golden/out tests/vm/run.sh tests/ipvsadm/golden/capture.sh

The same rules restored into gridlb must print the same bytes and exit with the same status.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlb.table import IpvsTable
from tests.ipvsadm.helpers import run

GOLDEN = Path(__file__).resolve().parent / "golden"
OUT = GOLDEN / "out"
SEED_S = (GOLDEN.parent.parent / "data" / "seed-ipvsadm-S.txt").read_text()

LISTINGS = {
    "Ln": "-Ln",
    "L_names": "-L",
    "S": "-S",
    "Sn": "-S -n",
    "stats": "-L -n --stats",
    "stats_exact": "-L -n --stats --exact",
    "rate": "-L -n --rate",
    "thresholds": "-L -n --thresholds",
    "persistent_conn": "-L -n --persistent-conn",
    "tun_info": "-L -n --tun-info",
    "timeout": "-L --timeout",
    "service": "-L -n -t 10.0.0.1:2811",
    "nosort_service": "-L -n --nosort -t 10.0.0.1:2811",
    "conn": "-L -n -c",
    "daemon": "-L --daemon",
}


def golden_table() -> IpvsTable:
    """The table capture.sh built: rules.txt, the seed's IPv6 lines, then --set 3600 60 0."""
    rules = (GOLDEN / "rules.txt").read_text()
    first = run(["-R"], stdin=rules)
    assert (first.status, first.err) == (0, "")
    v6 = "".join(line for line in SEED_S.splitlines(keepends=True) if "[" in line)
    second = run(["-R"], first.table, stdin=v6)
    assert second.status == 0
    assert second.err == "Service already exists\nDestination already exists\nDestination already exists\n"
    return run("--set 3600 60 0", second.table).table


def expect(name: str) -> tuple[int, str, str]:
    return (
        int((OUT / f"{name}.rc").read_text()),
        (OUT / f"{name}.out").read_text(),
        (OUT / f"{name}.err").read_text(),
    )


@pytest.fixture(scope="module")
def table() -> IpvsTable:
    return golden_table()


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_listing_matches_real_ipvsadm(table: IpvsTable, name: str) -> None:
    r = run(LISTINGS[name], table)
    assert (r.status, r.out, r.err) == expect(name)


@pytest.mark.parametrize("n", range(1, 15))
def test_error_matches_real_ipvsadm(table: IpvsTable, n: int) -> None:
    line = (OUT / f"error{n}.cmd").read_text().split()
    r = run(line, table)
    assert (r.status, r.out, r.err) == expect(f"error{n}")
    assert r.table == table


def test_comment_line_restore_matches_real_ipvsadm(table: IpvsTable) -> None:
    r = run(["-R"], table, stdin="# comment\n-A -t 10.0.0.5:80\n")
    assert (r.status, r.out, r.err) == expect("comment_restore")
    assert run("-Ln", r.table).out == (OUT / "final_Ln.out").read_text()


def test_captured_with_ipvsadm_1_31() -> None:
    assert (OUT / "version").read_text() == "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
    assert run("--version").out == (OUT / "version").read_text()
