"""The systemd units gridlb ships, rendered with this installation's paths (`gridlb director unit`)."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

#: Units in this package, by name.
UNITS = ("gridlb-director.service",)


def unit_text(name: str) -> str:
    """Return the shipped text of unit `name`."""
    if name not in UNITS:
        raise KeyError(name)
    return (resources.files("gridlb.systemd") / name).read_text(encoding="utf-8")


def gridlb_executable() -> str:
    """Return the absolute path of the running `gridlb` command (its venv's or the system's)."""
    here = Path(sys.argv[0])
    if here.name == "gridlb" and here.exists():
        return str(here.absolute())
    return shutil.which("gridlb") or str(Path(sys.executable).with_name("gridlb"))


def render_director_unit(
    sites: Sequence[str], gridlb: str | None = None, extra_args: Sequence[str] = ()
) -> str:
    """Return gridlb-director.service running `gridlb director run SITES...` with absolute paths."""
    exe = gridlb or gridlb_executable()
    argv = [exe, "director", "run", *(str(Path(s).resolve()) for s in sites), *extra_args]
    out = []
    for line in unit_text("gridlb-director.service").splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=" + shlex.join(argv).replace("%", "%%").replace("$", "$$")
        out.append(line)
    return "\n".join(out) + "\n"
