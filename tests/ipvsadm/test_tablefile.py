"""The JSON table file: lossless round trips and clear errors for a broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from gridlb.errors import ConfigError
from gridlb.ipvsadm import tablefile
from gridlb.table import IpvsTable
from tests.ipvsadm.strategies import tables


@settings(max_examples=100, deadline=None)
@given(tables(counters=True))
def test_json_round_trip_is_lossless(table: IpvsTable) -> None:
    assert tablefile.from_json(json.loads(json.dumps(tablefile.to_json(table)))) == table


def test_save_then_load_and_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    assert tablefile.load(path) == IpvsTable()
    tablefile.save(path, IpvsTable())
    assert tablefile.load(path) == IpvsTable()
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", ":1: error: not JSON"),
        ('{"format": "other"}', "error: not an IPVS table: format"),
        ('{"format": "gridlb-ipvs-table/1", "timeouts": {"tcp": 1, "bogus": 2}}', "unknown key 'bogus'"),
    ],
)
def test_broken_file_is_one_config_error_naming_it(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        tablefile.load(path)
    assert str(exc.value).startswith(str(path)) and needle in str(exc.value)


def test_non_utf8_file_and_unwritable_place_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        tablefile.load(path)
    missing = tmp_path / "no-such-dir" / "t.json"
    with pytest.raises(ConfigError, match="cannot write: No such file or directory") as exc:
        tablefile.save(missing, IpvsTable())
    assert str(exc.value).startswith(str(missing))
