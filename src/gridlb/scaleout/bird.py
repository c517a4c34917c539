"""BIRD 2 as the scale-out BGP speaker: its configuration (pure), its control socket (birdc), its process.

The director runs its own `bird -f` with a configuration it writes: one BGP session per peer, and
one static protocol per address family holding a blackhole /32 or /128 for each VIP it announces
(exported to the peers only; no kernel protocol, so nothing enters the director's own routing
table). Announcing or withdrawing is desired state → rewrite → `birdc configure`: BIRD diffs the
static routes and sends the UPDATEs without touching the sessions. BIRD is started with
PR_SET_PDEATHSIG, so a director that dies takes its speaker with it and the router drops the
session (and the routes) at once; a director that goes silent loses them when the hold time
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from gridlb.config.schema import BgpPeer, ScaleoutSettings
from gridlb.errors import ConfigError, GridlbError
from gridlb.table import IPAddress

log = logging.getLogger(__name__)

#: How long `birdc` may take for one command.
BIRDC_TIMEOUT_S = 10.0
#: How long BIRD may take to open its control socket after it starts.
START_TIMEOUT_S = 10.0
#: How long a clean stop waits for BIRD to send its withdrawals and exit.
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


class SpeakerError(GridlbError):
    """The BGP speaker refused a command or is not running."""


@dataclass(frozen=True, slots=True)
class BirdPlan:
    """What the configuration needs besides the VIPs: identity, AS numbers, peers, hold time."""

    director: str
    router_id: IPv4Address
    local_asn: int
    peers: tuple[BgpPeer, ...]
    hold_time_s: int
    vips: tuple[IPAddress, ...]  # every VIP this director may announce

    @classmethod
    def from_settings(cls, director: str, so: ScaleoutSettings, vips: Sequence[IPAddress]) -> BirdPlan:
        """Return the plan; ConfigError when no router id can be chosen."""
        rid = so.router_id
        if rid is None:
            rid = next((p.local_address for p in so.peers if isinstance(p.local_address, IPv4Address)), None)
        if rid is None:
            raise ConfigError(
                "required unless an IPv4 peer has local_address (each director needs its own BGP id)",
                key="gridlb.scaleout.router_id",
            )
        return cls(director, rid, so.local_asn, so.peers, so.hold_time_s, tuple(vips))


def peer_name(i: int) -> str:
    """Return the BIRD protocol name of the i-th peer (0-based)."""
    return f"peer{i + 1}"


def render_config(plan: BirdPlan, announce: frozenset[IPAddress]) -> str:
    """Return BIRD's configuration announcing the VIPs in `announce` (each must be in `plan.vips`)."""
    unknown = announce - set(plan.vips)
    if unknown:
        raise ValueError(f"not VIPs of this director: {', '.join(map(str, sorted(unknown, key=str)))}")
    keepalive = max(1, plan.hold_time_s // 3)
    lines = [
        f"# BIRD configuration of gridlb director {plan.director}; written by the director on every",
        "# change (announce, withdraw): edit the site file instead.",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        f"router id {plan.router_id};",
        "",
        "protocol device {",
        "}",
    ]
    for fam in (4, 6):
        if not any(p.address.version == fam for p in plan.peers):
            continue
        routes = sorted((v for v in announce if v.version == fam), key=int)
        length = 32 if fam == 4 else 128
        lines += ["", f"protocol static gridlb_vips{fam} {{", f"  ipv{fam};"]
        lines += [f"  route {v}/{length} blackhole;" for v in routes]
        lines.append("}")
    for i, peer in enumerate(plan.peers):
        fam = peer.address.version
        local = (
            f"local {peer.local_address} as {plan.local_asn}"
            if peer.local_address
            else f"local as {plan.local_asn}"
        )
        lines += [
            "",
            f"protocol bgp {peer_name(i)} {{",
            f'  description "router {peer.address}";',
            f"  {local};",
            f"  neighbor {peer.address} as {peer.asn};",
            f"  hold time {plan.hold_time_s};",
            f"  keepalive time {keepalive};",
            "  connect retry time 2;",
            "  error wait time 1, 10;",
            f"  ipv{fam} {{",
            "    import none;",
            f'    export where proto = "gridlb_vips{fam}";',
            "  };",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class PeerState:
    """One BGP session as `birdc show protocols` reports it."""

    name: str
    address: str
    state: str  # BIRD's protocol state: up, start, down, ...
    info: str  # the BGP state: Established, Connect, Active, ...
    since: str

    @property
    def established(self) -> bool:
        """Return True when the session is up."""
        return self.state == "up" and self.info.startswith("Established")


_PROTO_RE = re.compile(r"^(\S+)\s+BGP\s+\S+\s+(\S+)\s+(\S+(?:\s+\S+)?)\s*(.*)$")


def parse_protocols(text: str, plan: BirdPlan) -> tuple[PeerState, ...]:
    """Return the BGP sessions of `birdc show protocols` output (the plan names their addresses)."""
    names = {peer_name(i): str(p.address) for i, p in enumerate(plan.peers)}
    out: list[PeerState] = []
    for line in text.splitlines():
        m = _PROTO_RE.match(line.strip())
        if not m or m.group(1) not in names:
            continue
        since, _, rest = m.group(3).partition(" ")
        info = " ".join(filter(None, (rest, m.group(4)))).strip()
        out.append(PeerState(m.group(1), names[m.group(1)], m.group(2), info, since))
    return tuple(out)


#: prctl(2), looked up once here: the child between fork and exec only calls it (the director has
#: threads, so nothing that may take a lock, such as dlopen, runs there).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class BirdSpeaker:
    """Runs one `bird -f` for the director and announces exactly the VIPs it is given."""

    name = "bird"

    def __init__(self, settings: ScaleoutSettings, plan: BirdPlan) -> None:
        self.settings = settings
        self.plan = plan
        self.config_path = Path(settings.bird_config)
        self.socket_path = settings.bird_socket
        self.current: frozenset[IPAddress] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.reconfigures = 0
        self._lock = asyncio.Lock()

    def unavailable(self) -> str | None:
        """Return why BIRD cannot run here (binary missing), or None."""
        for binary in (self.settings.bird_binary, self.settings.birdc_binary):
            if shutil.which(binary) is None:
                return f"{binary} not found (Debian package bird2)"
        return None

    def _write(self, announce: frozenset[IPAddress]) -> None:
        text = render_config(self.plan, announce)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_name(f".{self.config_path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    async def _run(self, *argv: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), BIRDC_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SpeakerError(
                f"{argv[0]} {' '.join(argv[1:])}: no answer in {BIRDC_TIMEOUT_S:g} s"
            ) from None
        return proc.returncode or 0, out.decode(errors="replace")

    async def birdc(self, *command: str) -> str:
        """Run one birdc command on this director's BIRD and return its output."""
        rc, out = await self._run(self.settings.birdc_binary, "-s", self.socket_path, *command)
        if rc != 0 or "Unable to connect" in out:
            raise SpeakerError(f"birdc {' '.join(command)}: {out.strip() or f'exit {rc}'}")
        return out

    async def start(self) -> None:
        """Write a configuration announcing nothing, check it, start BIRD and wait for its socket."""
        why = self.unavailable()
        if why:
            raise ConfigError(f"the BGP speaker cannot run: {why}", key="gridlb.scaleout.speaker")
        if Path(self.socket_path).exists():
            with contextlib.suppress(SpeakerError):
                await self.birdc("show", "status")
                raise ConfigError(
                    f"a BIRD already answers on {self.socket_path} (another director running?)",
                    key="gridlb.scaleout.bird_socket",
                )
        self.current = None
        self._write(frozenset())
        rc, out = await self._run(self.settings.bird_binary, "-p", "-c", str(self.config_path))
        if rc != 0:
            raise ConfigError(
                f"BIRD refuses the configuration gridlb wrote: {out.strip()}", key="gridlb.scaleout"
            )
        Path(self.socket_path).parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            self.settings.bird_binary,
            "-f",
            "-c",
            str(self.config_path),
            "-s",
            self.socket_path,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_pdeathsig,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            if self.proc.returncode is not None:
                raise SpeakerError(f"bird exited with status {self.proc.returncode} at start")
            try:
                await self.birdc("show", "status")
                break
            except SpeakerError:
                if loop.time() > deadline:
                    await self._kill()
                    raise SpeakerError(
                        f"bird did not open {self.socket_path} in {START_TIMEOUT_S:g} s"
                    ) from None
                await asyncio.sleep(0.05)
        self.current = frozenset()
        log.info("scale-out: bird running (pid %d), %d peer(s)", self.proc.pid, len(self.plan.peers))

    @property
    def running(self) -> bool:
        """Return True while the BIRD process runs."""
        return self.proc is not None and self.proc.returncode is None

    async def announce(self, vips: frozenset[IPAddress]) -> bool:
        """Make BIRD announce exactly `vips`; return True when that changed anything."""
        async with self._lock:
            if vips == self.current:
                return False
            if not self.running:
                raise SpeakerError("bird is not running")
            self._write(vips)
            out = await self.birdc("configure")
            if "Reconfigur" not in out:
                self.current = None  # unknown: rewrite on the next call
                raise SpeakerError(f"birdc configure: {out.strip()}")
            self.current = vips
            self.reconfigures += 1
            return True

    async def peers(self) -> tuple[PeerState, ...]:
        """Return the BGP sessions' states."""
        return parse_protocols(await self.birdc("show", "protocols"), self.plan)

    async def exported(self) -> int:
        """Return how many routes BIRD currently exports to its peers (over all sessions)."""
        total = 0
        for i in range(len(self.plan.peers)):
            out = await self.birdc("show", "route", "export", peer_name(i), "count")
            m = re.search(r"(\d+) of \d+ routes", out)
            total += int(m.group(1)) if m else 0
        return total

    async def stop(self) -> None:
        """Withdraw every VIP, let BIRD send it, then stop BIRD (it closes its sessions with Cease)."""
        if not self.running:
            return
        with contextlib.suppress(SpeakerError):
            await self.announce(frozenset())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_TIMEOUT_S
            while await self.exported() and loop.time() < deadline:
                await asyncio.sleep(0.05)
        with contextlib.suppress(SpeakerError):
            await self.birdc("down")
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            await self._kill()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        log.info("scale-out: bird stopped")

    async def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
