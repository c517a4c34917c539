"""keepalived.conf as a keyword tree with file and line numbers: tokenizer, parser (with include), emitter.

The grammar follows keepalived's own reader (lib/parser.c in keepalived 2.2): a statement is one line of
words; `#` and `!` start a comment anywhere outside double quotes (`\\#` and `\\!` are literal); words are
separated by white space and may be quoted with `"` or `'` (quotes are removed, backslash escapes are
honoured inside them); `{` and `}` outside quotes are words of their own wherever they stand, so
`unicast_peer { 10.0.0.2 }` on one line is the same as three lines. A statement followed by `{` (on its
line or the next one) opens a block that ends at the matching `}`. `include PATTERN` (exactly two words,
also inside blocks) splices in every file the glob pattern matches, relative to the including file's
directory, in sorted order; csh-style `{a,b}` braces are expanded as keepalived's GLOB_BRACE does.

Read as keepalived reads them, before the words are split:

* `@ID line` is kept only when ID is the config id (`@^ID` only when it is not); the config id is
  keepalived's default, the node name up to its first dot, unless the caller gives one (`-i`);
* `$NAME=VALUE` defines a parameter (a value ending in `\\` continues on the next lines: a multiline
  definition); later `$NAME` (followed by white space, `,`, `)` or the line's end) and `${NAME}` are
  replaced by the value, again and again while replacements happen; a multiline value standing alone
  on its line becomes those lines; an undefined name stays as written; `$_PWD` (the file's
  directory) and `$_INSTANCE` (the config id) are predefined;
* `include` lines are recognised after substitution.

Not supported (reported, never silently misread): `~SEQ` loops and `$_RANDOM`.

Problems do not stop the reading: each is collected with its file and line, and all are reported.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from gridlb.errors import ConfigError, Location
from gridlb.userfiles import MAX_SITE_BYTES, not_utf8, read_bytes

#: Include keywords keepalived knows (the variants only add checks that we always make).
INCLUDE_KEYWORDS = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})

_WHITE = " \t\f\v\r"
_BOB = "{"
_EOB = "}"
_MAX_INCLUDE_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Node:
    """One statement: its keyword, the words after it, its block (None when it has none), and where it is."""

    keyword: str
    args: tuple[str, ...] = ()
    children: tuple[Node, ...] | None = None
    file: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)

    @property
    def location(self) -> Location:
        """Where this statement was read."""
        return Location(self.file, self.line)

    @property
    def is_block(self) -> bool:
        """True when the statement carries a `{ ... }` block (possibly empty)."""
        return self.children is not None

    def find(self, keyword: str) -> list[Node]:
        """The direct children with this keyword, in file order."""
        return [c for c in self.children or () if c.keyword == keyword]

    def first(self, keyword: str) -> Node | None:
        """The first direct child with this keyword, or None."""
        for c in self.children or ():
            if c.keyword == keyword:
                return c
        return None

    def words(self) -> tuple[str, ...]:
        """The keyword followed by its arguments."""
        return (self.keyword, *self.args)


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    quoted: bool
    file: str
    line: int


_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _decomment(text: str, loc: Location) -> str:
    """Drop a trailing comment (`#` or `!` outside double quotes); `\\#` and `\\!` become literal."""
    out: list[str] = []
    quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if not quote and nxt in "#!":
                out.append("\\" + nxt)  # kept escaped so the word splitter sees a literal character
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif not quote and ch in "#!":
            break
        out.append(ch)
        i += 1
    if quote:
        raise ConfigError("unterminated double quote", location=loc, key=text.strip().split(" ", 1)[0])
    return "".join(out).strip(_WHITE)


def _unescape(text: str, i: int) -> tuple[str, int]:
    """Decode the backslash escape at text[i] (the backslash itself); return (char, next index)."""
    nxt = text[i + 1]
    if nxt == "x" and i + 2 < len(text) and text[i + 2] in "0123456789abcdefABCDEF":
        j = i + 2
        while j < len(text) and text[j] in "0123456789abcdefABCDEF":
            j += 1
        return chr(int(text[i + 2 : j], 16) & 0xFF), j
    if nxt in "01234567":
        j = i + 1
        while j < len(text) and j < i + 4 and text[j] in "01234567":
            j += 1
        return chr(int(text[i + 1 : j], 8) & 0xFF), j
    if nxt == "c" and i + 2 < len(text):
        return chr(ord(text[i + 2]) & 0x1F), i + 3
    return _ESCAPES.get(nxt, nxt), i + 2


def _split_words(text: str, file: str, line: int) -> list[_Token]:
    """Split one decommented line into words and brace tokens."""
    loc = Location(file, line)
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i] in " \t\f\v\r\n":
            i += 1
            continue
        if text[i] in _BOB + _EOB:
            tokens.append(_Token(text[i], False, file, line))
            i += 1
            continue
        buf: list[str] = []
        quoted = False
        quote = ""
        while i < n:
            ch = text[i]
            if quote:
                if ch == "\\" and i + 1 < n:
                    decoded, i = _unescape(text, i)
                    buf.append(decoded)
                    continue
                if ch == quote:
                    quote = ""
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                continue
            if ch in " \t\f\v\r\n" or ch in _BOB + _EOB:
                break
            if ch in "\"'":
                quote = ch
                quoted = True
                i += 1
                continue
            if ch == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 2
                continue
            buf.append(ch)
            i += 1
        if quote:
            raise ConfigError(f"missing terminating {quote}", location=loc, key=text.split(" ", 1)[0])
        tokens.append(_Token("".join(buf), quoted, file, line))
    return tokens


def _expand_braces(pattern: str) -> list[str]:
    """Expand csh-style `{a,b}` alternatives (nested allowed), as glob(3) with GLOB_BRACE does."""
    depth = 0
    start = -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : i]
                parts: list[str] = []
                level = 0
                cur: list[str] = []
                for c in inner:
                    if c == "," and level == 0:
                        parts.append("".join(cur))
                        cur = []
                        continue
                    level += (c == "{") - (c == "}")
                    cur.append(c)
                parts.append("".join(cur))
                head, tail = pattern[:start], pattern[i + 1 :]
                out: list[str] = []
                for part in parts:
                    out.extend(_expand_braces(head + part + tail))
                return out
    return [pattern]


def _include_paths(pattern: str, base_dir: str, loc: Location) -> list[str]:
    """The files an include pattern names, relative to `base_dir`, sorted within each brace alternative."""
    matches: list[str] = []
    has_magic = False
    for alt in _expand_braces(pattern):
        full = alt if os.path.isabs(alt) else os.path.join(base_dir, alt)
        if glob.has_magic(full):
            has_magic = True
            matches.extend(p for p in sorted(glob.glob(full)) if os.path.isfile(p))
        elif os.path.isfile(full):
            matches.append(full)
        else:
            raise ConfigError(f"included file {full} does not exist", location=loc, key="include")
    if not matches and not has_magic:
        raise ConfigError(f"include pattern {pattern!r} matches no file", location=loc, key="include")
    return matches


def _include_target(body: str, loc: Location) -> str | None:
    """The pattern of an `include PATTERN` line (two words split on white space only, as keepalived
    does before it looks at braces), or None when the line is something else."""
    parts = body.split(None, 1)
    if len(parts) != 2 or parts[0] not in INCLUDE_KEYWORDS:
        return None
    rest = parts[1]
    if rest.startswith('"') and rest.endswith('"') and len(rest) >= 2 and '"' not in rest[1:-1]:
        return rest[1:-1]
    if any(ch in rest for ch in " \t\"'"):
        return None
    del loc
    return rest


def _read(path: str, loc: Location | None) -> str:
    """The file's text; bytes that are not UTF-8 survive as surrogates (refused outside comments)."""
    try:
        return read_bytes(path, limit=MAX_SITE_BYTES).decode("utf-8", errors="surrogateescape")
    except ConfigError as exc:
        raise ConfigError(f"cannot read {path}: {exc.message}", location=loc or exc.location) from None


def default_config_id() -> str:
    """keepalived's default config id: the node name up to its first dot (`uname -n`)."""
    return os.uname().nodename.split(".", 1)[0]


_DEF_LINE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_MAX_SUBSTITUTIONS = 1000


@dataclass
class _Definition:
    value: str
    multiline: bool


class _LineReader:
    """keepalived's read_line(): conditionals, parameter definitions and substitution, includes.

    Every problem is appended to `errors` and the line is skipped, so one run reports them all.
    """

    def __init__(self, config_id: str, errors: list[ConfigError]) -> None:
        self.config_id = config_id
        self.errors = errors
        self.defs: dict[str, _Definition] = {}
        self.pending: tuple[str, list[str]] | None = None  # a multiline definition being read

    def _define(self, name: str, value: str) -> None:
        if value.endswith("\\"):
            first = value[:-1].rstrip(" \t")
            self.pending = (name, [first] if first else [])
            self.defs[name] = _Definition("", True)
        else:
            self.defs[name] = _Definition(value, False)

    def _continue_definition(self, body: str) -> bool:
        """Add a line to the multiline definition being read; False once it has ended."""
        if self.pending is None:
            return False
        name, parts = self.pending
        if body.endswith("\\"):
            piece = body[:-1].rstrip(" \t")
            if piece:
                parts.append(piece)
        else:
            if body:
                parts.append(body)
            self.pending = None
        self.defs[name] = _Definition("\n".join(parts), len(parts) > 1 or self.pending is not None)
        return True

    def _std(self, name: str, file: str) -> str | None:
        if name == "_PWD":
            return os.path.dirname(os.path.abspath(file)) if os.sep in file else os.getcwd()
        if name == "_INSTANCE":
            return self.config_id
        return None

    def _substitute(self, body: str, file: str, loc: Location) -> list[str]:
        """Replace `$NAME` (followed by white space, `,`, `)` or the end) and `${NAME}`; a multiline
        value standing alone on its line becomes several lines. Undefined names stay as written."""
        out = body
        for _ in range(_MAX_SUBSTITUTIONS):
            changed = False
            i = out.find("$")
            while i >= 0 and i + 1 < len(out):
                braces = out[i + 1] == "{"
                j = i + 2 if braces else i + 1
                k = j
                while k < len(out) and (out[k].isalnum() or out[k] == "_"):
                    k += 1
                name = out[j:k]
                end = k + 1 if braces else k
                ok = bool(name) and not name[0].isdigit()
                if braces:
                    ok = ok and k < len(out) and out[k] == "}"
                else:
                    ok = ok and (k == len(out) or out[k] in " \t,)")
                value: str | None = None
                multiline = False
                if ok:
                    if name == "_RANDOM":
                        self.errors.append(
                            ConfigError(
                                "$_RANDOM gives a different file on every read", location=loc, key=name
                            )
                        )
                        return []
                    d = self.defs.get(name)
                    if d is not None:
                        value, multiline = d.value, d.multiline
                    else:
                        value = self._std(name, file)
                if value is None:
                    i = out.find("$", i + 1)
                    continue
                if multiline:
                    if out[end:].strip(_WHITE) or out[:i].strip(_WHITE):
                        i = out.find("$", i + 1)  # keepalived expands a multiline value only on its own
                        continue
                    return [line for line in value.split("\n")]
                out = out[:i] + value + out[end:]
                changed = True
                break
            if not changed:
                return [out]
        self.errors.append(ConfigError("parameter substitution does not end", location=loc, key="$"))
        return []

    def _conditional(self, body: str) -> str | None:
        """The line without its `@ID ` / `@^ID ` prefix when it applies here, else None."""
        neg = body.startswith("@^")
        rest = body[2:] if neg else body[1:]
        parts = rest.split(None, 1)
        if len(parts) < 2 or rest[:1] in " \t":
            return None
        matches = parts[0] == self.config_id
        return parts[1] if matches != neg else None

    def lines(
        self, text: str, file: str, base_dir: str | None, stack: tuple[str, ...]
    ) -> Iterator[list[_Token]]:
        """Yield the tokens of each line that is in effect, with includes spliced in."""
        for lineno, raw in enumerate(text.split("\n"), start=1):
            loc = Location(file, lineno)
            stripped = raw.strip(_WHITE)
            if not stripped:
                if self.pending is not None:
                    self._continue_definition("")
                continue
            try:
                body = _decomment(stripped, loc)
            except ConfigError as exc:
                self.errors.append(exc)
                continue
            if self._continue_definition(body):
                continue
            if not body:
                continue
            if (bad := not_utf8(body)) is not None:
                byte = bad.encode("utf-8", "surrogateescape").hex()
                self.errors.append(
                    ConfigError(f"byte 0x{byte} is not UTF-8 text; save the file as UTF-8", location=loc)
                )
                continue
            yield from self._expand(body, file, loc, base_dir, stack, 0)

    def _expand(
        self, body: str, file: str, loc: Location, base_dir: str | None, stack: tuple[str, ...], depth: int
    ) -> Iterator[list[_Token]]:
        if depth > _MAX_INCLUDE_DEPTH:
            self.errors.append(ConfigError("parameters expand too deeply", location=loc, key="$"))
            return
        if body.startswith("@"):
            kept = self._conditional(body)
            if kept is None:
                return
            body = kept.lstrip(_WHITE)
        m = _DEF_LINE.match(body)
        if m:
            self._define(m.group(1), m.group(2).lstrip(" \t"))
            return
        if body.startswith("~"):
            self.errors.append(
                ConfigError(
                    "~SEQ loops are not supported; expand them first", location=loc, key=body.split()[0]
                )
            )
            return
        if "$" in body:
            expanded = self._substitute(body, file, loc)
            if expanded != [body]:
                for line in expanded:
                    line = line.strip(_WHITE)
                    if line:
                        yield from self._expand(line, file, loc, base_dir, stack, depth + 1)
                return
        target = _include_target(body, loc)
        if target is not None:
            try:
                if base_dir is None:
                    raise ConfigError(
                        "include is only allowed when reading a file", location=loc, key="include"
                    )
                if len(stack) >= _MAX_INCLUDE_DEPTH:
                    raise ConfigError("includes nested too deeply", location=loc, key="include")
                paths = _include_paths(target, base_dir, loc)
            except ConfigError as exc:
                self.errors.append(exc)
                return
            for path in paths:
                real = os.path.realpath(path)
                if real in stack:
                    self.errors.append(
                        ConfigError(f"include loop: {path} includes itself", location=loc, key="include")
                    )
                    continue
                try:
                    text = _read(path, loc)
                except ConfigError as exc:
                    self.errors.append(exc)
                    continue
                yield from self.lines(text, path, os.path.dirname(path) or ".", (*stack, real))
            return
        try:
            yield _split_words(body, file, loc.line)
        except ConfigError as exc:
            self.errors.append(exc)


def _parse_tokens(lines: Iterable[list[_Token]], errors: list[ConfigError]) -> tuple[Node, ...]:
    """Build the keyword tree from lines of tokens; problems go to `errors` and are skipped."""
    # Each open block: (keyword token, args, children list)
    stack: list[tuple[_Token, tuple[str, ...], list[Node]]] = []
    top: list[Node] = []
    # The last statement, which may still get its `{` on a later line.
    pending: tuple[_Token, tuple[str, ...]] | None = None

    def flush_pending() -> None:
        nonlocal pending
        if pending is not None:
            tok, args = pending
            (stack[-1][2] if stack else top).append(Node(tok.text, args, None, tok.file, tok.line))
            pending = None

    for tokens in lines:
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.text == _BOB and not tok.quoted:
                if pending is None:
                    errors.append(
                        ConfigError("'{' without a keyword before it", location=Location(tok.file, tok.line))
                    )
                    stack.append((_Token("{", False, tok.file, tok.line), (), []))
                else:
                    stack.append((pending[0], pending[1], []))
                    pending = None
                i += 1
                continue
            flush_pending()
            if tok.text == _EOB and not tok.quoted:
                if not stack:
                    errors.append(
                        ConfigError("extra '}' found", location=Location(tok.file, tok.line), key="}")
                    )
                    i += 1
                    continue
                kw, args, children = stack.pop()
                if kw.text != _BOB or kw.quoted:
                    (stack[-1][2] if stack else top).append(
                        Node(kw.text, args, tuple(children), kw.file, kw.line)
                    )
                i += 1
                continue
            j = i + 1
            while j < len(tokens) and (tokens[j].quoted or tokens[j].text not in (_BOB, _EOB)):
                j += 1
            pending = (tok, tuple(t.text for t in tokens[i + 1 : j]))
            i = j
        # end of line: a pending statement may still open a block on the next line
    flush_pending()
    while stack:
        kw = stack.pop()[0]
        errors.append(
            ConfigError(
                "block is never closed (missing '}')", location=Location(kw.file, kw.line), key=kw.text
            )
        )
    return tuple(top)


def _raise(errors: list[ConfigError]) -> None:
    if errors:
        from gridlb.config.load import ConfigErrors

        raise ConfigErrors(sorted(errors, key=_error_order)) if len(errors) > 1 else errors[0]


def _error_order(err: ConfigError) -> tuple[str, int]:
    loc = err.location
    return (loc.file, loc.line) if loc is not None else ("", 0)


def parse_text(
    text: str,
    file: str = "<string>",
    *,
    base_dir: str | None = None,
    config_id: str | None = None,
    errors: list[ConfigError] | None = None,
) -> tuple[Node, ...]:
    """Parse keepalived.conf text into top-level nodes; `include` needs `base_dir` (the file's directory).

    `config_id` decides `@ID` lines (default: the node name, as keepalived). With an `errors` list,
    problems are appended to it and parsing goes on; without one, they are raised together at the end.
    """
    own: list[ConfigError] = [] if errors is None else errors
    reader = _LineReader(config_id if config_id is not None else default_config_id(), own)
    nodes = _parse_tokens(reader.lines(text, file, base_dir, ()), own)
    if errors is None:
        _raise(own)
    return nodes


def parse_file(
    path: str, *, config_id: str | None = None, errors: list[ConfigError] | None = None
) -> tuple[Node, ...]:
    """Parse a keepalived.conf file and everything it includes (see `parse_text`)."""
    own: list[ConfigError] = [] if errors is None else errors
    real = os.path.realpath(path)
    text = _read(path, None)
    reader = _LineReader(config_id if config_id is not None else default_config_id(), own)
    nodes = _parse_tokens(reader.lines(text, path, os.path.dirname(path) or ".", (real,)), own)
    if errors is None:
        _raise(own)
    return nodes


# ------------------------------------------------------------------------------------------------ values


def fmt(value: object) -> str:
    """A number or address as keepalived reads it (`1.0` → `1`, `0.5` → `0.5`)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def number(word: str) -> int | float | str:
    """A word as a number when it is one (left as text otherwise, for the schema to reject by name)."""
    if _INT.match(word):
        return int(word)
    if _FLOAT.match(word):
        return float(word)
    return word


# ----------------------------------------------------------------------------------------------- emitter

_SAFE_WORD = re.compile(r"^[^\s\"'\\#!{}$@~][^\s\"'\\#!{}$]*$")


def quote(word: str) -> str:
    """Spell one word so that keepalived reads it back unchanged (double quotes only when needed)."""
    if _SAFE_WORD.match(word):
        return word
    out = ['"']
    for i, ch in enumerate(word):
        nxt = word[i + 1 : i + 2]
        if ch == "$" and nxt and ((nxt.isascii() and nxt.isalpha()) or nxt in "_{"):
            out.append('$""')  # a quote after `$` keeps keepalived from substituting a parameter here
            continue
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def emit_lines(nodes: Sequence[Node], indent: str = "    ", level: int = 0) -> Iterator[str]:
    """Yield the text lines (without newline) of `nodes`, blocks indented by `indent` per level."""
    pad = indent * level
    for node in nodes:
        head = " ".join(quote(w) for w in node.words())
        if node.children is None:
            yield pad + head
        else:
            yield pad + head + " {"
            yield from emit_lines(node.children, indent, level + 1)
            yield pad + "}"


def emit(nodes: Sequence[Node], indent: str = "    ") -> str:
    """keepalived.conf text for `nodes`."""
    return "".join(line + "\n" for line in emit_lines(nodes, indent))
