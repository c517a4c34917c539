"""Tests of `gridlb render keepalived` and `gridlb import` (src/gridlb/cli/render.py, import_conf.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlb.cli.main import main
from gridlb.config.import_keepalived import import_file
from gridlb.config.load import load_site
from gridlb.render.keepalived import render_site
from tests.render.test_keepalived import CORPUS, SEED, sections


def test_render_prints_every_director_with_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "keepalived", str(SEED)]) == 0
    out = capsys.readouterr().out
    configs = render_site(load_site([SEED]))
    assert out == (
        "# ===== director seed-hiera =====\n"
        + configs["seed-hiera"]
        + "\n# ===== director seed-hiera-peer =====\n"
        + configs["seed-hiera-peer"]
    )


def test_render_one_director_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "peer.conf"
    assert main(["render", "keepalived", str(SEED), "--director", "seed-hiera-peer", "-o", str(out)]) == 0
    assert out.read_text() == render_site(load_site([SEED]))["seed-hiera-peer"]
    assert capsys.readouterr().out == ""


def test_render_output_dir(tmp_path: Path) -> None:
    assert main(["render", "keepalived", str(SEED), "--output-dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seed-hiera-peer.conf", "seed-hiera.conf"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "x.conf"], "pick one with --director or use --output-dir"),
        (["--director", "nosuch"], "no director named 'nosuch' (directors: seed-hiera, seed-hiera-peer)"),
    ],
)
def test_render_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "keepalived", str(SEED), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_render_reports_a_bad_site_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("priority: '100'", "priority: '300'"))
    assert main(["render", "keepalived", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:9: error:" in err and "priority" in err and "Traceback" not in err


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_import_writes_a_site_file_that_loads_back(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    site_yaml = tmp_path / "site.yaml"
    site_yaml.write_text(captured.out)
    assert sections(load_site([site_yaml])) == sections(import_file(str(path)).site())


def test_import_style_and_output_option(tmp_path: Path) -> None:
    out = tmp_path / "site.yaml"
    assert main(["import", str(CORPUS[0]), "-o", str(out)]) == 0
    text = out.read_text()
    assert "keepalived::vrrp_instances:\n    VI_1:\n        interface: em1\n" in text
    assert "keepalived::virtual_servers:\n    tcp-129.93.239.157-2811:\n" in text
    assert text.index("keepalived::vrrp_instances") < text.index("keepalived::virtual_servers")


def test_import_errors_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("vrrp_instance VI_1 {\n    interface em1\n    virtual_router_id 300\n}\n")
    assert main(["import", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gridlb: {conf}:3: error: virtual_router_id:") and err.count("\n") == 1
    conf.write_text(
        "global_defs {\n    lvs_id x\n}\nvrrp_instance VI_1 {\n interface em1\n virtual_router_id 3\n}\n"
    )
    assert main(["import", str(conf)]) == 0
    assert (
        capsys.readouterr().err
        == f"gridlb: {conf}:2: warning: lvs_id: global setting not kept in the site "
        + ("(gridlb renders its own global_defs)\n")
    )
    assert main(["import", str(tmp_path / "missing.conf")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_import_reports_every_problem_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "many.conf"
    conf.write_text(
        "vrrp_instance VI {\n interface em1\n priorty 100\n virtual_router_id 300\n}\n"
        "virtual_server 10.0.0.1 80 {\n lvs_sched fastest\n}\n"
        "bogus {\n}\n"
    )
    assert main(["import", str(conf)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": error: ")[0] for line in err] == [f"gridlb: {conf}:{n}" for n in (3, 4, 7, 9)]
    assert "Traceback" not in "\n".join(err)


def test_import_config_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "cid.conf"
    conf.write_text("global_defs {\n @lvs1 router_id red-lvs1\n @lvs2 router_id red-lvs2\n}\n")
    assert main(["import", "-i", "lvs2", str(conf)]) == 0
    assert "director_name: red-lvs2" in capsys.readouterr().out
