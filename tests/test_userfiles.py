"""Tests of the shared user-file reader and writer: size limit, UTF-8 lines, JSON depth, atomic writes."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from gridlb.errors import ConfigError
from gridlb.userfiles import (
    MAX_INPUT_BYTES,
    NoSuchFile,
    check_json_depth,
    decode_utf8,
    json_depth,
    not_utf8,
    read_bytes,
    read_stream,
    read_text,
    write_atomic,
)


def test_reads_a_file_up_to_the_limit_and_refuses_one_byte_more(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1000)
    assert read_bytes(f, limit=1000) == b"x" * 1000
    with pytest.raises(ConfigError) as exc:
        read_bytes(f, limit=999)
    assert str(exc.value) == f"{f}:1: error: input is larger than the 999 bytes limit (is it the right file?)"


def test_an_endless_input_is_refused_with_the_limit_named() -> None:
    with pytest.raises(ConfigError) as exc:
        read_bytes("/dev/zero")
    assert str(exc.value).startswith("/dev/zero:1: error: input is larger than the 8 MiB limit")
    assert MAX_INPUT_BYTES == 8 << 20


def test_a_stream_is_read_with_the_same_limit() -> None:
    assert read_stream(io.BytesIO(b"abc"), "<stdin>", limit=3) == b"abc"
    with pytest.raises(ConfigError, match=r"^<stdin>:1: error: input is larger than the 2 bytes limit"):
        read_stream(io.BytesIO(b"abc"), "<stdin>", limit=2)


def test_missing_directory_and_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(NoSuchFile, match=r":1: error: no such file$"):
        read_bytes(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r":1: error: is a directory, not a file$"):
        read_bytes(tmp_path)


def test_the_first_byte_that_is_not_utf8_is_named_at_its_line(tmp_path: Path) -> None:
    f = tmp_path / "site.yaml"
    f.write_bytes(b"a: 1\nb: 2\nrouter_id: dir\xe9ctor\n")
    with pytest.raises(ConfigError) as exc:
        read_text(f)
    assert str(exc.value).startswith(f"{f}:3: error: not UTF-8 text (byte 0xe9: ")
    assert decode_utf8("é\n".encode(), "x") == "é\n"


def test_not_utf8_finds_lone_surrogates_only() -> None:
    assert not_utf8("plain") is None
    assert not_utf8("café ✓ \U0001f600") is None
    assert not_utf8("dir\udce9ctor") == "\udce9"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[[[[[", "b": "\\"[[[["}', 1),
        ("[" * 2000 + "]" * 2000, 2000),
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_check_json_depth_refuses_deeper_than_the_limit() -> None:
    check_json_depth('{"a": {"b": [1, 2, 3]}}', 3)
    with pytest.raises(ValueError, match="nested deeper than 3 levels"):
        check_json_depth('{"a": {"b": [[1]]}}', 3)


def test_write_atomic_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    f = tmp_path / "keepalived.conf"
    f.write_text("old\n")
    f.chmod(0o600)
    write_atomic(f, "new\n")
    assert f.read_text() == "new\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    g = tmp_path / "new.conf"
    write_atomic(g, "x\n")
    assert stat.S_IMODE(g.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keepalived.conf", "new.conf"]


def test_write_atomic_that_cannot_encode_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    f = tmp_path / "director1.conf"
    f.write_text("the running config\n")
    with pytest.raises(ConfigError) as exc:
        write_atomic(f, "router_id dir\udce9ctor\n", what="--output-dir")
    assert str(exc.value).startswith("error: --output-dir: cannot write ")
    assert "which is not UTF-8" in str(exc.value)
    assert f.read_text() == "the running config\n"
    assert os.listdir(tmp_path) == ["director1.conf"]


def test_write_atomic_that_cannot_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "d.conf"
    target.mkdir()
    (target / "inside").write_text("kept\n")
    with pytest.raises(ConfigError, match=r"cannot write .*d\.conf: Is a directory"):
        write_atomic(target, "text\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.conf"]
    assert (target / "inside").read_text() == "kept\n"


def test_site_files_have_the_smaller_limit(tmp_path: Path) -> None:
    from gridlb.config.keepalived_conf import parse_file
    from gridlb.config.load import load_file
    from gridlb.userfiles import MAX_SITE_BYTES

    big = tmp_path / "big"
    big.write_bytes(b"# padding\n" * (MAX_SITE_BYTES // 10 + 1))
    for read in (load_file, parse_file):
        with pytest.raises(ConfigError, match="larger than the 1 MiB limit"):
            read(str(big))
