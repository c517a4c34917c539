"""`gridlb ipvsadm`: the table file option, the environment default, and the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridlb.cli.ipvsadm import ENV_TABLE, main, split_table_option
from gridlb.cli.main import main as gridlb_main
from tests.ipvsadm.helpers import NO_DNS

DATA = Path(__file__).resolve().parents[1] / "data"
V6_S = "".join(
    line for line in (DATA / "seed-ipvsadm-S.txt").read_text().splitlines(keepends=True) if "[" in line
)


def test_restore_then_save_through_a_table_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = str(tmp_path / "ipvs.json")
    assert main(["--table", table, "-R"], resolver=NO_DNS, stdin=V6_S) == 0
    assert main(["-S", f"--table={table}"], resolver=NO_DNS) == 0
    assert capsys.readouterr().out == V6_S
    assert (
        main(["--table", table, "-a", "-t", "[2600:900:6:1101::da7a:1055]:2811", "-r", "[fd00::1]:2811"]) == 0
    )
    assert (
        main(["--table", table, "-a", "-t", "[2600:900:6:1101::da7a:1055]:2811", "-r", "[fd00::1]:2811"])
        == 255
    )
    assert capsys.readouterr().err == "Destination already exists\n"


def test_environment_names_the_default_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TABLE, str(tmp_path / "env.json"))
    assert gridlb_main(["ipvsadm", "-A", "-t", "10.0.0.1:2811"]) == 0
    assert gridlb_main(["ipvsadm", "-Ln"]) == 0
    assert capsys.readouterr().out.splitlines()[3] == "TCP  10.0.0.1:2811 wlc"
    assert (tmp_path / "env.json").exists()


def test_errors_and_broken_table_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    assert main(["--table", str(bad), "-L"]) == 2
    assert capsys.readouterr().err.startswith(f"gridlb ipvsadm: {bad}:1: error: not JSON")
    assert main(["--table", str(tmp_path / "x.json"), "-A", "-t", "10.0.0.1"]) == 2
    assert capsys.readouterr().err == "Zero port specified for non-persistent service\n"
    assert not (tmp_path / "x.json").exists()  # nothing changed, nothing written
    assert split_table_option(["-L", "--", "--table", "x"]) == (None, ["-L", "--", "--table", "x"])
    assert main(["--table", str(tmp_path / "no-such-dir" / "t.json"), "-A", "-t", "10.0.0.1:1"]) == 2
    assert "error: cannot write: No such file or directory" in capsys.readouterr().err


def test_console_script_runs_ipvsadm(tmp_path: Path) -> None:
    env = {**os.environ, ENV_TABLE: str(tmp_path / "t.json")}
    exe = Path(sys.executable).with_name("gridlb")
    done = subprocess.run(
        [str(exe), "ipvsadm", "-R"],
        input="-A -u 10.0.0.1:53 -s rr\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    listed = subprocess.run([str(exe), "ipvsadm", "-Sn"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.stdout == "-A -u 10.0.0.1:53 -s rr\n"
