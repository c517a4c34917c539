"""Read site YAML files (with line numbers) into a validated `Site`; every user error is a `ConfigError`.

Public API:

* `load_site(paths) -> Site` reads one or several files (e.g. one per director, as the seed's
  Hiera does) and raises `ConfigErrors` (a `ConfigError` carrying every error found, the first one
  is its message) naming `file:line`, the key as written and what is wrong.
* `site_from_mapping(data, source=...) -> Site` does the same for a plain dict (the keepalived
  importer and tests); locations then have no line.
* `load_file(path) -> SiteFile` reads one file.

Model of a multi-file site:

* `Site.files` keeps each file separately (`SiteFile`: path, its own `vrrp_instances`,
  `virtual_servers`, `vrrp_scripts`, `gridlb` section as written, and a `SourceMap` giving the line
  and spelling of every key) so lint can compare director files.
* `Site.vrrp_instances`, `.virtual_servers`, `.vrrp_scripts` merge the files by name; when two files
  define the same name the FIRST file wins (give a director's own file first; `Site.for_director`
  picks one director's view). `Site.gridlb` merges the `gridlb:` sections key by key, later files
  overriding earlier ones (Hiera-like layering).
* A file's director name is its `gridlb.director_name`, else the file name without extension.

Paths into the data are tuples of canonical keys and list indexes, e.g.
`("virtual_servers", "red-gridftp-v4", "real_servers", 4, "ip_address")`; `SourceMap.locate(path)`
returns the `Location` of the longest known prefix and `SourceMap.key(path)` the key as the user
wrote it (`keepalived::virtual_servers.red-gridftp-v4.real_servers[4].ip_address`).

Errors about a file as a whole (missing, unreadable, empty, not a mapping, over the 1 MiB
`userfiles.MAX_SITE_BYTES`) are reported at line 1 so that every message parses as `file:line: ...`.

Hostile or broken YAML is refused while it is composed, before anything walks it: nesting deeper than
`MAX_YAML_DEPTH` levels, more than `MAX_YAML_NODES` values, an alias that refers to the node containing
it, and aliases that together stand for more than `MAX_ALIAS_NODES` nodes (a "billion laughs" bomb:
nine lines of nine aliases each expand to 387 million) are each one `file:line` error. Anchors and
aliases for sharing a list between services stay usable. Strings that cannot be written as UTF-8
(lone surrogates from `"\\udcff"` escapes) are refused at their line, so renders never fail on them.

Top-level keys: see `schema.TOP_LEVEL_KEYS`. Keys of other puppet classes (`ntp::servers`, any
`NAME::...` not under `keepalived::`) are ignored, as Hiera files mix classes; any other unknown
key is an error with a did-you-mean. YAML is read as YAML 1.2 (Hiera's `yes`/`no` stay strings and
are accepted by boolean fields); duplicate keys are errors.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from gridlb.config.schema import (
    KEY_ALIASES,
    TOP_LEVEL_KEYS,
    GridlbSettings,
    KeepalivedExtras,
    SiteData,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
)
from gridlb.errors import ConfigError, Location
from gridlb.userfiles import MAX_SITE_BYTES, not_utf8, read_text

KeyPath = tuple[str | int, ...]

#: Deepest nesting of mappings and lists a site file may use (the seed's deepest is 6).
MAX_YAML_DEPTH = 32

#: How many nodes all aliases of one file may stand for together (sharing a 50-server list between a
#: few services is a few thousand; an alias bomb is hundreds of millions).
MAX_ALIAS_NODES = 10_000

#: How many nodes (mappings, lists, scalars) one site file may hold: the seed holds about 100, a site of
#: 5,000 real servers about 20,000; the YAML reader needs some 170 us and 1 KB per node.
MAX_YAML_NODES = 50_000


class ConfigErrors(ConfigError):
    """Several config errors at once; formats as the first, `errors` holds them all (file order)."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.message, location=first.location, key=first.key)
        self.errors = tuple(errors)


@dataclass(frozen=True)
class SourceMap:
    """Where each key of one file was written: line numbers and the spelling used."""

    file: str
    lines: Mapping[KeyPath, int] = field(default_factory=dict)
    spelled: Mapping[KeyPath, str] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> Location:
        """Return the location of `path`, or of its longest prefix that was written."""
        for n in range(len(path), 0, -1):
            line = self.lines.get(path[:n])
            if line:
                return Location(self.file, line)
        return Location(self.file, self.lines.get((), 0))

    def key(self, path: KeyPath) -> str:
        """Return `path` as the user wrote it, e.g. `keepalived::vrrp_instances.VI_1.priority`."""
        for n in range(len(path), 0, -1):
            text = self.spelled.get(path[:n])
            if text is not None:
                return text + "".join(_fmt(p) for p in path[n:])
        return "".join(_fmt(p) for p in path).lstrip(".")

    def has(self, path: KeyPath) -> bool:
        """Return True when `path` itself was written in the file."""
        return path in self.spelled


def _fmt(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else f".{part}"


@dataclass(frozen=True)
class SiteFile:
    """One site file as written: its sections and where each key is."""

    path: str
    vrrp_instances: dict[str, VrrpInstance]
    virtual_servers: dict[str, VirtualServer]
    vrrp_scripts: dict[str, VrrpScript]
    gridlb: GridlbSettings | None
    source: SourceMap
    keepalived: KeepalivedExtras = field(
        default_factory=KeepalivedExtras.empty
    )  # sync groups, static_*, mail

    @property
    def director(self) -> str:
        """Return the director this file describes: `gridlb.director_name`, else the file stem."""
        if self.gridlb is not None and self.gridlb.director_name:
            return self.gridlb.director_name
        return Path(self.path).stem

    def locate(self, *path: str | int) -> Location:
        """Return the location of a canonical key path in this file."""
        return self.source.locate(path)

    def key(self, *path: str | int) -> str:
        """Return the key path as written in this file."""
        return self.source.key(path)


@dataclass(frozen=True)
class Site:
    """A validated site: every file kept apart (`files`) and their merged view."""

    files: tuple[SiteFile, ...]
    vrrp_instances: dict[str, VrrpInstance]
    virtual_servers: dict[str, VirtualServer]
    vrrp_scripts: dict[str, VrrpScript]
    gridlb: GridlbSettings
    keepalived: KeepalivedExtras = field(default_factory=KeepalivedExtras.empty)

    @classmethod
    def from_files(cls, files: Sequence[SiteFile]) -> Site:
        """Merge `files` (first definition of a name wins; `gridlb:` keys layer, later wins)."""
        instances: dict[str, VrrpInstance] = {}
        servers: dict[str, VirtualServer] = {}
        scripts: dict[str, VrrpScript] = {}
        settings: dict[str, Any] = {}
        extras = KeepalivedExtras.empty()
        for f in files:
            extras = extras.merged(f.keepalived)
            for name, inst in f.vrrp_instances.items():
                instances.setdefault(name, inst)
            for name, vs in f.virtual_servers.items():
                servers.setdefault(name, vs)
            for name, script in f.vrrp_scripts.items():
                scripts.setdefault(name, script)
            if f.gridlb is not None:
                settings.update({k: getattr(f.gridlb, k) for k in f.gridlb.model_fields_set})
        return cls(tuple(files), instances, servers, scripts, GridlbSettings(**settings), extras)

    @property
    def directors(self) -> tuple[str, ...]:
        """Return the director names of the files that define VRRP instances, in file order."""
        return tuple(f.director for f in self.files if f.vrrp_instances)

    def for_director(self, name: str) -> Site:
        """Return the site as director `name` sees it: its own file plus files without instances."""
        own = [f for f in self.files if f.vrrp_instances and f.director == name]
        if not own:
            known = ", ".join(self.directors) or "none"
            raise ConfigError(f"no director file named {name!r} (directors: {known})", key="director")
        shared = [f for f in self.files if not f.vrrp_instances]
        return Site.from_files(own + shared)

    def origin(self, section: str, name: str) -> SiteFile:
        """Return the file whose definition of `section`/`name` the merged view uses."""
        for f in self.files:
            if name in getattr(f, section):
                return f
        raise KeyError(f"{section}.{name}")

    def locate(self, *path: str | int) -> Location:
        """Return the location of a canonical key path (`section, name, ...`) in its origin file."""
        if len(path) >= 2 and isinstance(path[0], str) and isinstance(path[1], str):
            try:
                return self.origin(path[0], path[1]).locate(*path)
            except (KeyError, AttributeError):
                pass
        return self.files[0].locate(*path) if self.files else Location("<site>")


# ----------------------------------------------------------------------------------- loading


def load_site(paths: Sequence[str | Path]) -> Site:
    """Read and validate the site files in `paths`; raise `ConfigErrors` naming file, line and key."""
    if not paths:
        raise ConfigError("no site file given", key="SITE")
    files: list[SiteFile] = []
    errors: list[ConfigError] = []
    for p in paths:
        try:
            files.append(load_file(p))
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    return Site.from_files(files)


def load_file(path: str | Path) -> SiteFile:
    """Read and validate one site file (size-limited, UTF-8; see `gridlb.userfiles`)."""
    return parse_text(read_text(path, limit=MAX_SITE_BYTES), str(path))


def parse_text(text: str, source: str) -> SiteFile:
    """Parse YAML `text` (named `source` in messages) and validate it into a `SiteFile`."""
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or exc.context or "invalid YAML"
        if "duplicate key" in what or "found duplicate key" in str(exc):
            what = _duplicate_key_message(exc)
        raise ConfigError(f"YAML: {_one_line(what)}", location=Location(source, line)) from None
    except YAMLError as exc:
        raise ConfigError(f"YAML: {_one_line(str(exc))}", location=Location(source, 1)) from None
    if doc is None:
        raise ConfigError("file is empty (expected a mapping of site keys)", location=Location(source, 1))
    return _validate(doc, source)


class _BoundedComposer(Composer):
    """ruamel's composer, refusing deep nesting, self-referring aliases and alias expansion over budget.

    Every composed node counts 1 and every alias counts the nodes its anchor stands for (aliases
    inside it included), so `_expanded` is the size of the data as a walker would see it.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._level = 0
        self._expanded = 0  # nodes an alias stands for, summed over every alias so far
        self._nodes = 0  # nodes composed (an alias is not a node)
        self._size: dict[int, int] = {}  # id(anchored node) -> nodes it stands for, once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._size.get(id(target))
                if size is None:
                    raise ComposerError(
                        None,
                        None,
                        f"alias *{event.anchor} refers to the node that contains it",
                        event.start_mark,
                    )
                self._expanded += size
                if self._expanded > MAX_ALIAS_NODES:
                    raise ComposerError(
                        None,
                        None,
                        f"aliases stand for more than {MAX_ALIAS_NODES} nodes (at *{event.anchor}); "
                        "write the data out or use fewer aliases",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        if self._level >= MAX_YAML_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        self._level += 1
        before = self._nodes + self._expanded
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values; is this a site file?", event.start_mark
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._level -= 1
        if event.anchor is not None:
            self._size[id(node)] = self._nodes + self._expanded - before
        return node


def site_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> Site:
    """Validate a plain mapping (the keepalived importer's output, tests) into a `Site`."""
    return Site.from_files([_validate(data, source)])


def _duplicate_key_message(exc: MarkedYAMLError) -> str:
    first = exc.context_mark.line + 1 if exc.context_mark is not None else 0
    problem = (exc.problem or "").strip()
    return f"{problem} (first written on line {first})" if first else problem


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _validate(doc: Any, source: str) -> SiteFile:
    if not isinstance(doc, Mapping):
        kind = "a list" if isinstance(doc, list) else "a string" if isinstance(doc, str) else repr(doc)
        raise ConfigError(
            f"the top level must be a mapping of site keys, not {kind}", location=Location(source, 1)
        )
    lines: dict[KeyPath, int] = {(): 1 if hasattr(doc, "lc") else 0}
    spelled: dict[KeyPath, str] = {}
    errors: list[ConfigError] = []
    smap = SourceMap(source, lines, spelled)
    data = _walk_top(doc, smap, lines, spelled, errors)
    try:
        model = SiteData.model_validate(data)
    except ValidationError as exc:
        errors.extend(_convert(exc, smap))
        model = None
    if errors:
        errors.sort(key=lambda e: e.location.line if e.location else 0)
        raise ConfigErrors(errors)
    assert model is not None
    return SiteFile(
        source,
        model.vrrp_instances,
        model.virtual_servers,
        model.vrrp_scripts,
        model.gridlb,
        smap,
        KeepalivedExtras.of(model),
    )


def _walk_top(
    doc: Mapping[Any, Any],
    smap: SourceMap,
    lines: dict[KeyPath, int],
    spelled: dict[KeyPath, str],
    errors: list[ConfigError],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in doc.items():
        key = str(raw_key)
        line = _key_line(doc, raw_key)
        canon = TOP_LEVEL_KEYS.get(key)
        if canon is None and "::" in key and not key.startswith("keepalived::"):
            continue  # another puppet class's data in the same Hiera file
        canon = canon or key
        if canon in out:
            first = spelled[(canon,)]
            errors.append(
                ConfigError(
                    f"{first} and {key} both give {canon}; keep one",
                    location=Location(smap.file, line),
                    key=key,
                )
            )
            continue
        lines[(canon,)] = line
        spelled[(canon,)] = key
        out[canon] = _walk(value, (canon,), key, lines, spelled, errors, smap.file)
    return out


def _walk(
    node: Any,
    path: KeyPath,
    text: str,
    lines: dict[KeyPath, int],
    spelled: dict[KeyPath, str],
    errors: list[ConfigError],
    file: str,
) -> Any:
    """Return `node` as plain Python data with aliases renamed, recording lines and spellings."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for raw_key, value in node.items():
            key = str(raw_key)
            canon = KEY_ALIASES.get(key, key)
            line = _key_line(node, raw_key)
            sub = (*path, canon)
            if (bad := not_utf8(key)) is not None:
                errors.append(_not_utf8_error(bad, Location(file, line), text))
                continue
            if canon in out:
                errors.append(
                    ConfigError(
                        f"{spelled[sub].rsplit('.', 1)[-1]} and {key} are the same setting; keep one",
                        location=Location(file, line),
                        key=f"{text}.{key}",
                    )
                )
                continue
            lines[sub] = line
            spelled[sub] = f"{text}.{key}"
            out[canon] = _walk(value, sub, f"{text}.{key}", lines, spelled, errors, file)
        return out
    if isinstance(node, list):
        items = []
        for i, value in enumerate(node):
            sub = (*path, i)
            lines[sub] = _item_line(node, i)
            spelled[sub] = f"{text}[{i}]"
            items.append(_walk(value, sub, f"{text}[{i}]", lines, spelled, errors, file))
        return items
    if isinstance(node, str) and (bad := not_utf8(node)) is not None:
        errors.append(_not_utf8_error(bad, Location(file, lines.get(path, 0)), text))
        return None
    return _scalar(node)


def _not_utf8_error(char: str, where: Location, key: str) -> ConfigError:
    return ConfigError(
        f"holds {char!a}, which is not a character (only UTF-8 text can be written out)",
        location=where,
        key=key,
    )


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value) if type(value).__name__ == "ScalarBoolean" else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _key_line(node: Any, key: Any) -> int:
    lc = getattr(node, "lc", None)
    if lc is None:
        return 0
    try:
        return int(lc.key(key)[0]) + 1
    except (KeyError, TypeError, IndexError):
        return int(lc.line) + 1


def _item_line(node: Any, index: int) -> int:
    lc = getattr(node, "lc", None)
    if lc is None:
        return 0
    try:
        return int(lc.item(index)[0]) + 1
    except (KeyError, TypeError, IndexError):
        return int(lc.line) + 1


# --------------------------------------------------------------------------- error conversion


def _convert(exc: ValidationError, smap: SourceMap) -> list[ConfigError]:
    out: list[ConfigError] = []
    for err in exc.errors(include_url=False):
        loc: KeyPath = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key{did_you_mean(str(loc[-1]), _known_keys(loc[:-1]))}"
        elif kind == "missing":
            message = "required key is missing"
            out.append(ConfigError(message, location=smap.locate(loc[:-1]), key=smap.key(loc)))
            continue
        elif kind in _RANGE_ERRORS and (bounds := _field_range(loc)) is not None:
            message = f"{err.get('input')} is out of range {bounds}"
        else:
            message = _clean_message(err["msg"], err.get("input"), kind)
        out.append(ConfigError(message, location=smap.locate(loc), key=smap.key(loc)))
    return out


_RANGE_ERRORS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _field_range(loc: KeyPath) -> str | None:
    """Return `LO..HI` (or `>= LO`, `<= HI`) of the numeric field at `loc`, from its constraints."""
    model = _model_at(SiteData, loc[:-1])
    if model is None or not isinstance(loc[-1], str) or loc[-1] not in model.model_fields:
        return None
    lo = hi = None
    for meta in _constraints(model.model_fields[loc[-1]].annotation, model.model_fields[loc[-1]].metadata):
        lo = getattr(meta, "ge", lo)
        hi = getattr(meta, "le", hi)
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}"
    if lo is not None:
        return f">= {lo:g}"
    return f"<= {hi:g}" if hi is not None else None


def _constraints(annotation: Any, metadata: list[Any]) -> list[Any]:
    found = list(metadata)
    stack = [annotation]
    while stack:
        tp = stack.pop()
        if typing.get_origin(tp) is typing.Annotated:
            args = typing.get_args(tp)
            found.extend(args[1:])
            stack.append(args[0])
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(tp))
    return found


_PLAIN = {
    "should be a valid integer, unable to parse string as an integer": "should be an integer",
    "should be a valid number, unable to parse string as a number": "should be a number",
    "should be a valid boolean, unable to interpret input": "should be true or false",
}


def _clean_message(msg: str, value: Any, kind: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = msg.replace("Input should be", "should be").replace("a valid tuple", "a list")
    msg = msg.replace("a valid dictionary", "a mapping")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "should be a mapping"
    msg = _PLAIN.get(msg, msg)
    if isinstance(value, str | int | float | bool) and repr(value) not in msg:
        msg = f"{msg} (got {value!r})"
    return msg


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return `" (did you mean 'x'?)"` for the closest candidate, or `""`."""
    pool = sorted(set(candidates))
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), [c.lower() for c in pool], n=1, cutoff=0.6)
        close = [c for c in pool if c.lower() in close][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(loc: KeyPath) -> list[str]:
    """Return the keys accepted at `loc` (fields of the model found there plus their aliases)."""
    if not loc:
        return [k for k in TOP_LEVEL_KEYS if k.startswith("keepalived::") or k == "gridlb"]
    model = _model_at(SiteData, loc)
    if model is None:
        return []
    names = list(model.model_fields)
    names += [alias for alias, canon in KEY_ALIASES.items() if canon in model.model_fields]
    return names


def _model_at(root: type[BaseModel], loc: KeyPath) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif typing.get_origin(tp) in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) in (tuple, list):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp
