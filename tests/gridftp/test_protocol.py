"""The pure control-channel grammar: command parsing, replies, host-ports, REST/CKSM/ERET/ESTO arguments,
virtual paths under the root, listings and URLs."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.gridftp import protocol as p


def test_parse_command_basic_forms() -> None:
    assert p.parse_command(b"RETR /a b\r\n") == p.Command("RETR", "/a b")
    assert p.parse_command(b"noop") == p.Command("NOOP", "")
    assert p.parse_command(b"site clientinfo appname=x;") == p.Command("SITE CLIENTINFO", "appname=x;")
    assert p.parse_command(b"SITE HELP") == p.Command("SITE HELP", "")
    assert p.parse_command("STOR caf\u00e9".encode()) == p.Command("STOR", "caf\u00e9")
    raw = p.parse_command(b"STOR \xff\xfe")  # undecodable bytes survive as surrogates (round trip)
    assert raw.arg.encode("utf-8", "surrogateescape") == b"\xff\xfe"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"", 500),
        (b"RETR a\x00b", 501),
        (b"RETR a\rb", 501),
        (b"R" * 5000, 500),
        (b"X1 a", 500),
        (b"TOOLONGVERB a", 500),
        (b"SITE", 501),
        (b"SITE !!", 501),
    ],
)
def test_parse_command_refusals(line: bytes, code: int) -> None:
    with pytest.raises(p.CommandError) as ei:
        p.parse_command(line)
    assert ei.value.code == code


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.integers(4090, 4100).map(lambda n: b"NOOP " + b"\xff" * n)))
def test_parse_command_never_raises_anything_else(line: bytes) -> None:
    try:
        cmd = p.parse_command(line)
    except p.CommandError as exc:
        assert 500 <= exc.code <= 501
        return
    assert cmd.verb == cmd.verb.upper() and 3 <= len(cmd.verb.split(" ")[0]) <= 4
    assert "\x00" not in cmd.arg and "\r" not in cmd.arg and "\n" not in cmd.arg


def test_reply_format_and_parse_round_trip() -> None:
    assert p.format_reply(200, "ok") == b"200 ok\r\n"
    multi = p.format_reply(211, "Extensions supported", " PARALLEL", " SIZE", "End.")
    assert multi == b"211-Extensions supported\r\n PARALLEL\r\n SIZE\r\n211 End.\r\n"
    parser = p.ReplyParser()
    out = [parser.feed_line(line + b"\n") for line in multi.split(b"\r\n")[:-1]]
    assert out[:-1] == [None, None, None]
    assert out[-1] == p.Reply(211, ("Extensions supported", " PARALLEL", " SIZE", "End."))
    assert p.format_reply(550, "bad\r\nINJECT") == b"550 bad??INJECT\r\n"
    with pytest.raises(ValueError):
        p.ReplyParser().feed_line(b"hello")


@settings(max_examples=100, deadline=None)
@given(st.integers(100, 599), st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_reply_round_trip_property(code: int, lines: list[str]) -> None:
    lines = [p.sanitize(t) for t in lines]
    # inner lines starting with "ddd " would end the reply early; that is what the prefix is for
    raw = p.format_reply(code, *lines)
    parser = p.ReplyParser()
    result = None
    for line in raw.split(b"\r\n")[:-1]:
        assert result is None
        result = parser.feed_line(line)
    assert result is not None and result.code == code


def test_reply_parser_feed_multiline_and_split_bytes() -> None:
    parser = p.ReplyParser()
    data = b"220-Welcome\r\n to the\r\n220-not the end\r\n220 ready.\r\n331 Password required.\r\n"
    replies = []
    for i in range(len(data)):  # one byte at a time
        replies += parser.feed(data[i : i + 1])
    assert [x.code for x in replies] == [220, 331]
    assert replies[0].lines == ("Welcome", " to the", "not the end", "ready.")
    assert str(replies[0]) == "220 Welcome"  # the first line names a multi-line reply (Globus' errors)
    assert str(replies[1]) == "331 Password required."
    assert str(p.Reply(550, ("x\x1b[2J" * 100,))).endswith("...") and "\x1b" not in str(p.Reply(5, ("\x1b",)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "not an FTP reply"),
        (b"22 short\r\n", "not an FTP reply"),
        (b"2200 no separator\r\n", "not an FTP reply"),
        ("\u00b2\u00b2\u00b2 superscript digits\r\n".encode(), "not an FTP reply"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\r\n", "not an FTP reply"),
        (b"x" * 5000, "longer than 4096"),
        (b"220 " + b"x" * 5000 + b"\r\n", "longer than 4096"),
        (b"220-start\r\n" + b" more\r\n" * 600, "more than 512 lines"),
    ],
)
def test_reply_parser_rejects_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p.ReplyParser().feed(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Entering Passive Mode (127,0,0,1,188,177)", ("127.0.0.1", 188 * 256 + 177)),
        ("Entering Passive Mode 10,201,0,1,4,1", ("10.201.0.1", 1025)),  # no parentheses (RFC 1123)
        ("=10,201,0,1,0,21", ("10.201.0.1", 21)),
    ],
)
def test_parse_pasv_reply(text: str, expected: tuple[str, int]) -> None:
    hp = p.parse_pasv_reply(p.Reply(227, (text,)))
    assert (hp.host, hp.port) == expected


@pytest.mark.parametrize("text", ["Entering Passive Mode", "(300,0,0,1,1,1)", "(1,2,3,4,5)"])
def test_parse_pasv_reply_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        p.parse_pasv_reply(p.Reply(227, (text,)))


def test_parse_epsv_reply() -> None:
    plain = p.Reply(229, ("Entering Extended Passive Mode (|||58637|)",))
    assert p.parse_epsv_reply(plain) == p.HostPort("", 58637)  # no address: the caller knows the peer
    assert p.parse_epsv_reply(plain, "127.0.0.9") == p.HostPort("127.0.0.9", 58637)
    named = p.Reply(229, ("Entering Extended Passive Mode (|2|fd00:99::11|42885|)",))
    assert p.parse_epsv_reply(named, "127.0.0.9") == p.HostPort("fd00:99::11", 42885)
    for bad in ("Entering Extended Passive Mode", "(|||0|)", "(|||99999|)", "(|1|nohost|5|)"):
        with pytest.raises(ValueError):
            p.parse_epsv_reply(p.Reply(229, (bad,)))


def test_checksums_match_what_globus_prints() -> None:
    data = b"hello\n"
    assert p.checksum("ADLER32", data) == f"{zlib.adler32(data):08x}" == "084b021f"
    assert p.checksum("md5", b"") == "d41d8cd98f00b204e9800998ecf8427e"
    assert p.checksum("CRC32", data) == f"{zlib.crc32(data):08x}"
    assert p.checksum("SHA512", data) == hashlib.sha512(data).hexdigest()
    ck = p.Checksum("ADLER32")
    for i in range(len(data)):  # incremental = whole
        ck.update(data[i : i + 1])
    assert ck.hexdigest() == "084b021f"
    with pytest.raises(ValueError, match="unsupported checksum algorithm"):
        p.checksum("CRC", b"")


def test_host_ports() -> None:
    hp = p.HostPort("127.0.0.2", 50123)
    assert p.format_hostport(hp) == "127,0,0,2,195,203"
    assert p.parse_hostport("(127,0,0,2,195,203)") == hp
    for bad in ("1,2,3,4,5", "1,2,3,4,256,1", "a,b,c,d,e,f", "127,0,0,1,0,0"):
        with pytest.raises(ValueError):
            p.parse_hostport(bad)
    assert p.parse_pasv_reply(p.Reply(227, ("Entering Passive Mode (127,0,0,1,188,177)",))).port == 48305
    spas = p.Reply(229, ("Entering Striped Passive Mode.", " 127,0,0,1,163,111", " 127,0,0,2,1,1", "End"))
    assert [h.host for h in p.parse_spas_reply(spas)] == ["127.0.0.1", "127.0.0.2"]
    assert p.parse_eprt("|1|127.0.0.1|2811|") == p.HostPort("127.0.0.1", 2811)
    assert p.parse_eprt("|2|::1|2811|") == p.HostPort("::1", 2811)
    assert p.format_eprt(p.HostPort("::1", 5)) == "|2|::1|5|"
    for bad in ("|1|::1|5|", "|3|1.2.3.4|5|", "|1|1.2.3.4|0|", "x", "|1|1.2.3.4|5"):
        with pytest.raises(ValueError):
            p.parse_eprt(bad)
    epsv = p.Reply(229, ("Entering Extended Passive Mode (|||58637|)",))
    assert p.parse_epsv_reply(epsv, "127.0.0.9") == p.HostPort("127.0.0.9", 58637)


@pytest.mark.parametrize(
    ("host", "port", "peer", "allowed", "refused"),
    [
        ("127.0.0.1", 40000, "127.0.0.1", (), ""),
        ("127.0.0.1", 40000, "::ffff:127.0.0.1", (), ""),  # a dual-stack listener's view of an IPv4 peer
        ("::1", 40000, "::1", (), ""),
        ("127.0.0.1", 1023, "127.0.0.1", (), "privileged"),
        ("127.0.0.1", 21, "127.0.0.1", ("0.0.0.0/0",), "privileged"),
        ("127.0.0.2", 40000, "127.0.0.1", (), "not the client's address 127.0.0.1"),
        ("10.0.0.5", 40000, "127.0.0.1", ("10.0.0.0/24",), ""),
        ("10.0.1.5", 40000, "127.0.0.1", ("10.0.0.0/24",), "not the client's address"),
        ("10.0.0.5", 40000, "127.0.0.1", ("::/0",), "not the client's address"),
        ("2001:db8::5", 40000, "2001:db8::6", ("::/0",), ""),
    ],
)
def test_data_target_refusal_is_the_bounce_rule(
    host: str, port: int, peer: str, allowed: tuple[str, ...], refused: str
) -> None:
    nets = tuple(ipaddress.ip_network(n) for n in allowed)
    why = p.data_target_refusal(p.HostPort(host, port), peer, nets)
    assert (refused in why and why) if refused else why == ""


def test_mfmt_and_chmod_arguments() -> None:
    assert p.parse_mfmt("20200102030405 /a b") == (1577934245.0, "/a b")
    assert p.parse_mfmt("20200102030405.25 x") == (1577934245.25, "x")
    assert p.parse_chmod("644 /a b") == (0o644, "/a b")
    assert p.parse_chmod("0755 d") == (0o755, "d")
    for bad in ("2020 x", "20200102030405", "20201302030405 x", "x20200102030405 y", ""):
        with pytest.raises(ValueError):
            p.parse_mfmt(bad)
    for bad in ("8 x", "644", "4755 x", "1777 x", "07777 x", "-1 x", "rw x"):
        with pytest.raises(ValueError):
            p.parse_chmod(bad)


def test_gridftp_arguments() -> None:
    assert p.parse_opts_retr("RETR Parallelism=4,4,4;StripeLayout=Blocked;") == {
        "parallelism": "4,4,4",
        "stripelayout": "Blocked",
    }
    assert p.parse_parallelism("4,4,4") == 4
    assert p.parse_parallelism("1000,1,1", limit=64) == 64
    assert p.parse_parallelism("0") == 1
    assert p.parse_rest("1000") == 1000
    assert p.parse_rest("0-29,30-89") == ((0, 29), (30, 89))
    for bad in ("", "5-1", "a-b", "-1"):
        with pytest.raises(ValueError):
            p.parse_rest(bad)
    assert p.missing_ranges(100, ((0, 10), (20, 30))) == [(10, 20), (30, 100)]
    assert p.missing_ranges(100, ((0, 100),)) == []
    assert p.missing_ranges(0, ()) == []
    assert p.parse_cksm("adler32 0 -1 /a b") == p.CksmRequest("ADLER32", 0, -1, "/a b")
    with pytest.raises(ValueError):
        p.parse_cksm("SHA999 0 -1 /a")
    assert p.parse_eret("P 10 20 /x y") == (10, 20, "/x y")
    assert p.parse_esto("A 10 /x") == (10, "/x")
    with pytest.raises(ValueError):
        p.parse_eret("Q 1 2 /x")


def test_virtual_paths() -> None:
    assert p.virtual_join("/", "a/b/../c") == "/a/c"
    assert p.virtual_join("/x/y", "..") == "/x"
    assert p.virtual_join("/x", "/etc/passwd") == "/etc/passwd"  # under the root, not the host's /etc
    assert p.virtual_join("/", "./") == "/"
    for bad in ("..", "../x", "/..", "a/../../b", "a\x00b"):
        with pytest.raises(p.PathEscape):
            p.virtual_join("/", bad)


def test_real_path_resolves_symlinks_inside_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = tmp_path / "out"
    root.mkdir()
    out.mkdir()
    (root / "in").symlink_to("f")
    (root / "away").symlink_to(out)
    (root / "dangling").symlink_to(out / "nothing")
    assert p.real_path(str(root), "/in") == os.path.join(os.path.realpath(root), "f")
    assert p.real_path(str(root), "/new/file") == os.path.join(os.path.realpath(root), "new", "file")
    for v in ("/away", "/away/x", "/dangling"):
        with pytest.raises(p.PathEscape):
            p.real_path(str(root), v)
    assert p.to_virtual(str(root), os.path.join(os.path.realpath(root), "a")) == "/a"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "a", "b", "", "/"]), max_size=8).map("/".join))
def test_virtual_join_never_climbs(arg: str) -> None:
    try:
        v = p.virtual_join("/a", arg)
    except p.PathEscape:
        return
    assert v.startswith("/") and ".." not in v.split("/")


def test_listing_lines(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"12345")
    st_ = f.stat()
    facts = p.mlst_facts(st_, "x")
    assert facts.startswith("Type=file;Size=5;Modify=") and facts.endswith("; x")
    assert p.list_line(st_, "x", now_year=1999).startswith("-")
    assert len(p.mdtm(0)) == 14 and p.mdtm(0) == "19700101000000"


def test_urls() -> None:
    u = p.parse_url("ftp://127.0.0.2:2811/data/f.bin")
    assert (u.scheme, u.host, u.port, u.path, u.user) == (
        p.Scheme.FTP,
        "127.0.0.2",
        2811,
        "/data/f.bin",
        "anonymous",
    )
    assert p.parse_url("ftp://[::1]:5/x").host == "::1"
    assert p.parse_url("ftp://u:pw@h/x").password == "pw"
    assert p.parse_url("ftp://h").port == 2811
    assert p.parse_url("file:///tmp/x").path == "/tmp/x"
    for bad, why in (
        ("gsiftp://h/x", "GSI"),
        ("http://h/x", "unsupported"),
        ("ftp://h:x/y", "port"),
        ("file://rel", "absolute"),
        ("nourl", "not a URL"),
        ("ftp://:5/x", "no host"),
    ):
        with pytest.raises(ValueError, match=why):
            p.parse_url(bad)
