"""Tests of the keepalived.conf tokenizer, parser (with include) and emitter."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gridlb.config.keepalived_conf import INCLUDE_KEYWORDS, Node, emit, parse_file, parse_text, quote
from gridlb.config.load import ConfigErrors
from gridlb.errors import ConfigError

Shape: TypeAlias = tuple[str, tuple[str, ...], "list[Shape] | None"]


def _strip(nodes: tuple[Node, ...]) -> list[Shape]:
    """A location-free, comparable shape of a tree."""
    return [(n.keyword, n.args, None if n.children is None else _strip(n.children)) for n in nodes]


def test_blocks_comments_and_lines() -> None:
    text = (
        "! Configuration File for keepalived\n"
        "global_defs {   # trailing comment\n"
        "   router_id d1\n"
        "}\n"
        "\n"
        "vrrp_instance VI_1 {\n"
        "    state MASTER ! old style comment\n"
        "    unicast_peer { 10.0.0.2 10.0.0.3 }\n"
        "    virtual_ipaddress\n"
        "    {\n"
        "        10.0.0.100/24 dev eth0\n"
        "    }\n"
        "}\n"
    )
    nodes = parse_text(text, "k.conf")
    assert [n.keyword for n in nodes] == ["global_defs", "vrrp_instance"]
    gd, vi = nodes
    assert gd.line == 2 and gd.file == "k.conf"
    assert gd.first("router_id") == Node("router_id", ("d1",))
    assert gd.children is not None and gd.children[0].line == 3
    assert vi.args == ("VI_1",)
    assert vi.first("state") == Node("state", ("MASTER",))
    peer = vi.first("unicast_peer")
    assert peer is not None and peer.line == 8
    # one-line block: the words inside are a single statement, as keepalived reads them
    assert peer.children == (Node("10.0.0.2", ("10.0.0.3",)),)
    vip = vi.first("virtual_ipaddress")
    assert vip is not None and vip.line == 9
    assert vip.children == (Node("10.0.0.100/24", ("dev", "eth0")),)
    assert vip.children[0].line == 11


def test_quotes_and_escapes() -> None:
    nodes = parse_text(
        'notify_master "/usr/bin/n.sh master #1"\n'
        "script '/bin/echo a b'\n"
        'x "a\\"b" c\\#d \'it\\x41\'\n'
        'y ab"c d"e\n'
        'z "{" "}" ""\n'
    )
    assert nodes[0].args == ("/usr/bin/n.sh master #1",)
    assert nodes[1].args == ("/bin/echo a b",)
    assert nodes[2].args == ('a"b', "c#d", "itA")
    assert nodes[3].args == ("abc de",)
    assert nodes[4].args == ("{", "}", "")
    assert nodes[4].children is None


def test_comment_chars_inside_single_quotes_start_a_comment_as_in_keepalived() -> None:
    # keepalived's decomment() only honours double quotes; the emitter therefore never uses single ones.
    assert parse_text('a "b # c"\n')[0].args == ("b # c",)
    with pytest.raises(ConfigError, match="missing terminating '"):
        parse_text("a 'b # c'\n")


def test_empty_block_and_nested() -> None:
    nodes = parse_text("a {\n}\nb { c { d e } }\n")
    assert _strip(nodes) == [("a", (), []), ("b", (), [("c", (), [("d", ("e",), None)])])]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a {\n b\n}\n}\n", 4, "extra '}'"),
        ("a {\n b {\n c\n}\n", 1, "never closed"),
        ("{\n", 1, "without a keyword"),
        ('a "b\n', 1, "unterminated double quote"),
        ("~SEQ(i, 1, 3)\n", 1, "not supported"),
        ("router_id $_RANDOM\n", 1, "different file on every read"),
        ("include x.conf\n", 1, "only allowed when reading a file"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "bad.conf")
    assert message in str(info.value)
    assert str(info.value).startswith(f"bad.conf:{line}: error")


def test_conditionals_and_parameters_as_keepalived_reads_them() -> None:
    text = (
        "$PRIO=150\n"
        "@other $PRIO=10\n"
        "$ADDR=10.2.${SUB}\n"
        "$SUB=0\n"
        "$INST= \\\n"
        "vrrp_instance VI_${N} { \\\n"
        "  interface eth0 \\\n"
        "  @^other priority $PRIO \\\n"
        "}\n"
        "global_defs {\n"
        "  router_id ${_INSTANCE}-x\n"
        "  @other router_id no\n"
        "  @me smtp_server 10.0.0.1\n"
        "}\n"
        "$N=1\n"
        "$INST\n"
        "virtual_server ${ADDR}.1 80 {\n"
        ' lb_algo "$UNDEF x"\n'
        "}\n"
    )
    nodes = parse_text(text, "p.conf", config_id="me")
    assert _strip(nodes) == [
        ("global_defs", (), [("router_id", ("me-x",), None), ("smtp_server", ("10.0.0.1",), None)]),
        ("vrrp_instance", ("VI_1",), [("interface", ("eth0",), None), ("priority", ("150",), None)]),
        ("virtual_server", ("10.2.0.1", "80"), [("lb_algo", ("$UNDEF x",), None)]),
    ]
    assert nodes[1].line == 16  # an expanded line is where the parameter was used
    # another config id takes the other lines
    other = parse_text(text, "p.conf", config_id="other")
    assert _strip(other)[0][2] == [("router_id", ("other-x",), None), ("router_id", ("no",), None)]
    # the emitter keeps a literal `$NAME` from being substituted when read back
    assert parse_text(emit(nodes), config_id="me") == nodes


def test_every_problem_is_reported_in_one_run() -> None:
    text = 'a {\n b "x\n}\n}\n~SEQ(i,1,2)\nc {\n'
    with pytest.raises(ConfigErrors) as info:
        parse_text(text, "many.conf")
    assert [str(e).split(": error")[0] for e in info.value.errors] == [
        "many.conf:2",
        "many.conf:4",
        "many.conf:5",
        "many.conf:6",
    ]


def test_include_glob_relative_and_nested(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("real_server 10.0.0.2 80 {\n    weight 2\n}\n")
    (tmp_path / "conf.d" / "a.conf").write_text("# first\nreal_server 10.0.0.1 80 {\n}\n")
    (tmp_path / "conf.d" / "skip.txt").write_text("junk {\n")
    (tmp_path / "conf.d" / "inner.inc").write_text("include ../vip.inc\n")
    (tmp_path / "vip.inc").write_text("delay_loop 7\n")
    main = tmp_path / "keepalived.conf"
    main.write_text(
        "virtual_server 10.0.0.100 80 {\n"
        "    lvs_sched wlc\n"
        "    include conf.d/*.conf\n"
        "    includea conf.d/{inner}.inc\n"
        "    include {nothing,none}/*.conf\n"
        "}\n"
    )
    (vs,) = parse_file(str(main))
    assert [c.keyword for c in vs.children or ()] == ["lvs_sched", "real_server", "real_server", "delay_loop"]
    rs1, rs2 = vs.find("real_server")
    assert rs1.args == ("10.0.0.1", "80") and rs1.file.endswith("conf.d/a.conf") and rs1.line == 2
    assert rs2.first("weight") == Node("weight", ("2",))
    loop = vs.first("delay_loop")
    assert loop is not None and loop.file.endswith("vip.inc") and loop.line == 1


def test_include_errors(tmp_path: Path) -> None:
    (tmp_path / "self.conf").write_text("a 1\ninclude self.conf\n")
    with pytest.raises(ConfigError, match="include loop") as info:
        parse_file(str(tmp_path / "self.conf"))
    assert ":2: error: include:" in str(info.value)
    (tmp_path / "missing.conf").write_text("include nope.conf\n")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_file(str(tmp_path / "missing.conf"))
    with pytest.raises(ConfigError, match="cannot read"):
        parse_file(str(tmp_path / "absent.conf"))
    # an unterminated block in an included file is reported where it opens
    (tmp_path / "inc.conf").write_text("x {\n")
    (tmp_path / "top.conf").write_text("include inc.conf\n")
    with pytest.raises(ConfigError) as info2:
        parse_file(str(tmp_path / "top.conf"))
    assert "inc.conf:1: error: x:" in str(info2.value)


def test_emit_layout() -> None:
    nodes = parse_text(
        'vrrp_instance VI_1 {\nstate MASTER\nnotify "/bin/n a"\nunicast_peer {\n10.0.0.2\n}\n}\n'
    )
    assert emit(nodes) == (
        "vrrp_instance VI_1 {\n"
        "    state MASTER\n"
        '    notify "/bin/n a"\n'
        "    unicast_peer {\n"
        "        10.0.0.2\n"
        "    }\n"
        "}\n"
    )


@pytest.mark.parametrize(
    ("word", "spelled"),
    [
        ("wlc", "wlc"),
        ("a b", '"a b"'),
        ("", '""'),
        ("#", '"#"'),
        ("!x", '"!x"'),
        ('q"', '"q\\""'),
        ("{", '"{"'),
        ("$X=1", '"$""X=1"'),
        ("a$", '"a$"'),
        ("@h", '"@h"'),
    ],
)
def test_quote(word: str, spelled: str) -> None:
    assert quote(word) == spelled
    assert parse_text(f"k {quote(word)}\n")[0].args == (word,)


_words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\t{}#!\"'\\ "),
    max_size=12,
)


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> tuple[Node, ...]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        keyword = draw(_words.filter(lambda w: w not in INCLUDE_KEYWORDS and w not in ("{", "}")))
        args = tuple(draw(st.lists(_words, max_size=3)))
        children = draw(_trees(depth + 1)) if depth < 2 and draw(st.booleans()) else None
        out.append(Node(keyword, args, children))
    return tuple(out)


@settings(max_examples=200, deadline=None)
@given(_trees())
def test_emit_then_parse_is_identity(tree: tuple[Node, ...]) -> None:
    assume(not any(_has_unsupported(n) for n in tree))
    text = emit(tree)
    assert _strip(parse_text(text)) == _strip(tree)


def _has_unsupported(node: Node) -> bool:
    """Trees whose first word would look like a parameter definition or conditional line."""
    if any(tag in word for word in node.words() for tag in ("$_", "${_")):
        return True
    return any(_has_unsupported(c) for c in node.children or ())
