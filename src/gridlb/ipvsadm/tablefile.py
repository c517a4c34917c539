"""Lossless JSON persistence of an IpvsTable: what `gridlb ipvsadm --table FILE` reads and writes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from gridlb.errors import ConfigError, Location
from gridlb.table import (
    ConnEntry,
    Dest,
    DestCounters,
    DestSpec,
    ForwardMethod,
    IpvsTable,
    Proto,
    RealKey,
    Service,
    ServiceKey,
    ServiceSpec,
    Stats,
    Timeouts,
    parse_address,
)
from gridlb.userfiles import NoSuchFile, check_json_depth, read_text

FORMAT = "gridlb-ipvs-table/1"

#: Deepest JSON nesting a table file may have (a table nests at most 7 deep).
MAX_JSON_DEPTH = 16


def _realkey(k: RealKey) -> dict[str, Any]:
    return {"addr": str(k.addr), "port": k.port}


def to_json(table: IpvsTable) -> dict[str, Any]:
    """Return `table` as JSON-ready data."""

    def service(s: Service) -> dict[str, Any]:
        spec = asdict(s.spec)
        spec["flags"] = sorted(s.spec.flags)
        return {
            "key": {
                "proto": s.key.proto.value,
                "addr": str(s.key.addr) if s.key.addr is not None else None,
                "port": s.key.port,
                "fwmark": s.key.fwmark,
                "af": s.key.af,
            },
            "spec": spec,
            "stats": asdict(s.stats),
            "dests": [
                {
                    "key": _realkey(d.key),
                    "spec": {**asdict(d.spec), "forward": d.spec.forward.name},
                    "counters": asdict(d.counters),
                }
                for d in s.dests
            ],
        }

    return {
        "format": FORMAT,
        "services": [service(s) for s in table.services],
        "timeouts": asdict(table.timeouts),
        "connections": [
            {
                "proto": c.proto.value,
                "expire_s": c.expire_s,
                "state": c.state,
                "client": _realkey(c.client),
                "virtual": _realkey(c.virtual),
                "dest": _realkey(c.dest),
            }
            for c in table.connections
        ],
    }


def _only(data: Any, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return data


def from_json(data: Any) -> IpvsTable:
    """Return the table in `data` (as written by to_json); ValueError/KeyError/TypeError if malformed."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT!r}")

    def rk(d: Any) -> RealKey:
        return RealKey(parse_address(d["addr"]), int(d["port"]))

    services = []
    for i, s in enumerate(data.get("services", [])):
        where = f"services[{i}]"
        k = s["key"]
        key = ServiceKey(
            Proto(k["proto"]),
            parse_address(k["addr"]) if k.get("addr") is not None else None,
            int(k["port"]),
            int(k.get("fwmark", 0)),
            int(k.get("af", 4)),
        )
        spec_data = dict(_only(s.get("spec", {}), ServiceSpec, f"{where}.spec"))
        spec_data["flags"] = frozenset(spec_data.get("flags", ()))
        dests = []
        for j, d in enumerate(s.get("dests", [])):
            dwhere = f"{where}.dests[{j}]"
            dspec = dict(_only(d.get("spec", {}), DestSpec, f"{dwhere}.spec"))
            if "forward" in dspec:
                dspec["forward"] = ForwardMethod[dspec["forward"]]
            cnt = dict(_only(d.get("counters", {}), DestCounters, f"{dwhere}.counters"))
            cnt["stats"] = Stats(**_only(cnt.get("stats", {}), Stats, f"{dwhere}.counters.stats"))
            dests.append(Dest(rk(d["key"]), DestSpec(**dspec), DestCounters(**cnt)))
        stats = Stats(**_only(s.get("stats", {}), Stats, f"{where}.stats"))
        services.append(Service(key, ServiceSpec(**spec_data), tuple(dests), stats))
    timeouts = Timeouts(**_only(data.get("timeouts", {}), Timeouts, "timeouts"))
    conns = tuple(
        ConnEntry(
            Proto(c["proto"]),
            int(c["expire_s"]),
            c["state"],
            rk(c["client"]),
            rk(c["virtual"]),
            rk(c["dest"]),
        )
        for c in data.get("connections", [])
    )
    return IpvsTable(tuple(services), timeouts, conns)


def load(path: str | Path) -> IpvsTable:
    """Read a table file; a missing file is an empty table; a broken one is a ConfigError naming it."""
    p = Path(path)
    try:
        text = read_text(p)
    except NoSuchFile:
        return IpvsTable()
    try:
        check_json_depth(text, MAX_JSON_DEPTH)
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg}", location=Location(str(p), exc.lineno)) from None
    except ValueError as exc:
        raise ConfigError(f"not an IPVS table: JSON {exc}", location=Location(str(p), 1)) from None
    try:
        return from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not an IPVS table: {exc}", location=Location(str(p))) from None


def save(path: str | Path, table: IpvsTable) -> None:
    """Write a table file atomically (a temporary file renamed over it)."""
    p = Path(path)
    text = json.dumps(to_json(table), indent=1, sort_keys=True) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=str(p.parent or "."))
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror or exc}", location=Location(str(p))) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write: {exc.strerror or exc}", location=Location(str(p))) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
