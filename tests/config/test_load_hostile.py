"""Tests of the loader against hostile YAML: alias bombs, self-referring aliases, deep nesting, surrogates.

Each must be one `file:line` error found while the YAML is composed (before anything walks it), while
ordinary anchors and aliases (a real-server list shared by two services) keep working.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridlb.config import load
from gridlb.config.load import MAX_ALIAS_NODES, MAX_YAML_DEPTH, MAX_YAML_NODES, ConfigErrors, load_site
from gridlb.errors import ConfigError


def alias_bomb() -> str:
    """The probe's bomb: nine lists of nine aliases to the one before (9**9 'lol's), under 500 bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def only_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_site([path])
    errors = info.value.errors if isinstance(info.value, ConfigErrors) else (info.value,)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_the_alias_bomb_is_one_error_at_the_alias_that_crosses_the_budget(tmp_path: Path) -> None:
    p = tmp_path / "bomb.yaml"
    p.write_text(alias_bomb())
    assert len(p.read_bytes()) < 500
    started = time.monotonic()
    err = only_error(p)
    assert time.monotonic() - started < 2
    # a0..a3 stand for 10, 91, 820 and 7381 nodes; a4's first *a3 takes the sum past the budget
    assert str(err) == (
        f"{p}:5: error: YAML: aliases stand for more than {MAX_ALIAS_NODES} nodes (at *a3); "
        "write the data out or use fewer aliases"
    )


def test_shared_lists_through_anchors_still_load(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    reals = "".join(f"        - &r{i} {{ip_address: 10.1.0.{i}, weight: 1}}\n" for i in range(1, 51))
    p.write_text(
        "keepalived::virtual_servers:\n"
        "    v4:\n"
        "        ip_address: 10.0.0.1\n"
        "        port: 2811\n"
        "        real_servers: &reals\n"
        f"{reals}"
        "    v4-xrootd:\n"
        "        ip_address: 10.0.0.1\n"
        "        port: 1094\n"
        "        real_servers: *reals\n"
        "    v4-webdav:\n"
        "        ip_address: 10.0.0.1\n"
        "        port: 443\n"
        "        real_servers: [*r1, *r2]\n"
    )
    site = load_site([p])
    assert len(site.virtual_servers["v4-xrootd"].real_servers) == 50
    assert [str(r.ip_address) for r in site.virtual_servers["v4-webdav"].real_servers] == [
        "10.1.0.1",
        "10.1.0.2",
    ]


def test_the_alias_budget_is_exact(tmp_path: Path) -> None:
    # an anchored list of 99 scalars stands for 100 nodes; other puppet classes' keys are ignored
    anchor = "other::data: &l [" + ", ".join(["x"] * 99) + "]\n"
    uses = MAX_ALIAS_NODES // 100
    ok = tmp_path / "ok.yaml"
    ok.write_text(anchor + "other::uses: [" + ", ".join(["*l"] * uses) + "]\n")
    load_site([ok])
    over = tmp_path / "over.yaml"
    over.write_text(anchor + "other::uses: [" + ", ".join(["*l"] * (uses + 1)) + "]\n")
    assert "aliases stand for more than" in str(only_error(over))


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "loop.yaml"
    p.write_text("gridlb:\n  director_name: d1\nother::x: &a\n  - 1\n  - *a\n")
    assert str(only_error(p)) == f"{p}:5: error: YAML: alias *a refers to the node that contains it"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("flow-lists", "x: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ("flow-maps", "x: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n"),
        ("block-maps", "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b: 1\n"),
    ],
)
def test_deep_nesting_is_one_error(tmp_path: Path, name: str, text: str) -> None:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    err = str(only_error(p))
    assert err.startswith(f"{p}:") and err.endswith(
        f"error: YAML: nested deeper than {MAX_YAML_DEPTH} levels"
    )


def test_nesting_up_to_the_limit_is_accepted(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    inner = MAX_YAML_DEPTH - 1  # the document's own mapping is the first level
    ok.write_text("other::x: " + "[" * inner + "]" * inner + "\n")
    load_site([ok])
    deep = tmp_path / "deep.yaml"
    deep.write_text("other::x: " + "[" * (inner + 1) + "]" * (inner + 1) + "\n")
    assert "nested deeper than" in str(only_error(deep))


def test_the_number_of_values_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_YAML_NODES == 50_000
    monkeypatch.setattr(load, "MAX_YAML_NODES", 100)  # the same rule, quicker to reach
    # the document mapping, its key, the list: three nodes besides the list's scalars
    ok = tmp_path / "ok.yaml"
    ok.write_text("other::x: [" + ", ".join(["1"] * 97) + "]\n")
    load_site([ok])
    wide = tmp_path / "wide.yaml"
    wide.write_text("other::x: [" + ", ".join(["1"] * 98) + "]\n")
    assert str(only_error(wide)) == f"{wide}:1: error: YAML: more than 100 values; is this a site file?"


def test_escaped_lone_surrogates_are_refused_at_their_line(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text('gridlb:\n  control_socket: /run/x.sock\n  director_name: "dir\\udce9ctor"\n')
    assert str(only_error(p)) == (
        f"{p}:3: error: gridlb.director_name: holds '\\udce9', which is not a character "
        "(only UTF-8 text can be written out)"
    )
    k = tmp_path / "k.yaml"
    k.write_text('keepalived::virtual_servers:\n  "v\\ud800": {ip_address: 10.0.0.1, port: 21}\n')
    assert f"{k}:2: error: keepalived::virtual_servers: holds '\\ud800'" in str(only_error(k))
