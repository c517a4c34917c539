"""`gridlb ipvsadm ...`: ipvsadm 1.31's command line, output and exit codes, on a pluggable table source.

Options are ipvsadm's own (see `gridlb ipvsadm -h`), plus `--table FILE` (anywhere on the line)
choosing the table file; the default is $GRIDLB_IPVSADM_TABLE, else ./ipvs-table.json. The table
comes from a `TableSource`: a JSON file, or with `--socket PATH` a running director's control
socket (read-only: `gridlb ipvsadm -Ln --stats --socket /run/gridlb/control.sock`). Table files and
`-R` input are read as every user file is (size limit, UTF-8; see `gridlb.userfiles`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from gridlb.errors import EXIT_USAGE, GridlbError
from gridlb.ipvsadm import tablefile
from gridlb.ipvsadm.commands import Session
from gridlb.ipvsadm.names import Resolver, SystemResolver
from gridlb.table import IpvsTable
from gridlb.userfiles import decode_utf8, read_stream

DEFAULT_TABLE = "ipvs-table.json"
ENV_TABLE = "GRIDLB_IPVSADM_TABLE"


class TableSource(Protocol):
    """Where `gridlb ipvsadm` reads the table and writes it back after a change."""

    def load(self) -> IpvsTable:
        """Return the current table."""
        ...

    def save(self, table: IpvsTable) -> None:
        """Store `table` (called only when a command changed it)."""
        ...


class FileTableSource:
    """A JSON table file (gridlb.ipvsadm.tablefile); a missing file is an empty table."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> IpvsTable:
        return tablefile.load(self.path)

    def save(self, table: IpvsTable) -> None:
        tablefile.save(self.path, table)


def read_restore_input() -> str:
    """Standard input for `-R`, read as every user file is (size limit, UTF-8; see gridlb.userfiles)."""
    return decode_utf8(read_stream(sys.stdin.buffer, "<stdin>"), "<stdin>")


def split_table_option(argv: Sequence[str], option: str = "--table") -> tuple[str | None, list[str]]:
    """Remove `--table FILE` / `--table=FILE` from argv (before a `--`); return (file, the rest)."""
    rest: list[str] = []
    table: str | None = None
    i = 0
    args = list(argv)
    while i < len(args):
        word = args[i]
        if word == "--":
            rest.extend(args[i:])
            break
        if word == option:
            if i + 1 >= len(args):
                raise GridlbError(f"{option} needs a file name")
            table = args[i + 1]
            i += 2
            continue
        if word.startswith(f"{option}="):
            table = word.split("=", 1)[1]
            i += 1
            continue
        rest.append(word)
        i += 1
    return table, rest


def main(
    argv: Sequence[str] | None = None,
    *,
    source: TableSource | None = None,
    resolver: Resolver | None = None,
    stdin: str | None = None,
) -> int:
    """Run one ipvsadm command line; print as ipvsadm prints; return ipvsadm's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        table_path, args = split_table_option(args)
        socket_path, args = split_table_option(args, "--socket")
        if source is None and socket_path is not None:
            from gridlb.api.client import DirectorTableSource

            source = DirectorTableSource(socket_path)
        if source is None:
            source = FileTableSource(table_path or os.environ.get(ENV_TABLE) or DEFAULT_TABLE)
        session = Session(
            source.load(),
            resolver or SystemResolver(),
            read_stdin=(lambda: stdin) if stdin is not None else read_restore_input,
        )
        status = session.run(args)
        if session.changed:
            source.save(session.table)
    except GridlbError as exc:
        print(f"gridlb ipvsadm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write("".join(session.out))
    sys.stdout.flush()
    sys.stderr.write("".join(session.err))
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
