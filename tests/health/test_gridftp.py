"""The gridftp checker: pure reply parsing and classification, odd replies from small fake servers on
127.0.0.x, and the real globus-gridftp-server (loopback, and from another network namespace)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from gridlb.gridftp.protocol import ReplyParser
from gridlb.health.base import Verdict, create_checker
from gridlb.health.gridftp import GridftpChecker, classify_banner, data_address_fault
from gridlb.health.tcp import TcpChecker
from gridlb.lab import procfs
from gridlb.lab.netns import Lab
from tests.support import freeze, need_tool
from tests.support import lab as lab_up

GLOBUS_BANNER = b"220 vm GridFTP Server 13.24 (gcc64, 1653033972-1) [Grid Community Toolkit 6.2] ready.\r\n"
BUSY = b"421 Service busy: Connection limit exceeded. Please try again later. Closing control connection.\r\n"
OFFLINE = b"422 Service temporarily offline. Closing control connection.\r\n"

# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        (GLOBUS_BANNER, Verdict.UP),
        (BUSY, Verdict.REFUSING),
        (OFFLINE, Verdict.REFUSING),
        (b"120 Service ready in 5 minutes.\r\n", Verdict.DOWN),
        (b"500 What?\r\n", Verdict.DOWN),
        (b"230 logged in already\r\n", Verdict.DOWN),
    ],
)
def test_classify_banner(line: bytes, verdict: Verdict) -> None:
    (reply,) = ReplyParser().feed(line)
    assert classify_banner(reply)[0] is verdict


VIP = ip_address("10.201.0.100")


@pytest.mark.parametrize(
    ("advertised", "local", "fault"),
    [
        ("127.0.0.1", "10.201.0.2", "a loopback address, to a non-loopback client (10.201.0.2)"),
        ("127.0.0.1", "127.0.0.1", ""),  # on loopback, loopback is legitimate
        ("127.0.0.3", "127.0.0.9", ""),
        ("10.201.0.1", "10.201.0.2", ""),
        ("10.201.0.100", "10.201.0.2", "a VIP address"),
        ("10.201.0.100", "127.0.0.1", "a VIP address"),  # the VIP is wrong from anywhere
        ("0.0.0.0", "10.201.0.2", "the unspecified address"),
        ("::1", "fd00::2", "a loopback address"),
        ("::ffff:127.0.0.1", "fd00::2", "a loopback address"),
    ],
)
def test_data_address_fault(advertised: str, local: str, fault: str) -> None:
    reason = data_address_fault(ip_address(advertised), local=ip_address(local), vips=[VIP])
    if fault:
        assert fault in reason and reason.startswith("data-address fault: PASV advertises ")
        assert "-data-interface" in reason
    else:
        assert reason == ""


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="level"):
        GridftpChecker(level="deep")
    with pytest.raises(ValueError, match="canary_path"):
        GridftpChecker(level="canary")
    with pytest.raises(ValueError, match="line breaks"):
        GridftpChecker(level="canary", canary_path="/x\r\nDELE /y")
    with pytest.raises(ValueError, match="unsupported checksum algorithm CRC "):
        GridftpChecker(canary_algorithm="CRC")
    assert GridftpChecker(vips="10.0.0.1, 10.0.0.2").vips == {
        IPv4Address("10.0.0.1"),
        IPv4Address("10.0.0.2"),
    }


# --------------------------------------------------------------------------- fake servers


@dataclass
class Fake:
    """A scripted control-channel server: a banner (after a delay), then one reply per command verb."""

    banner: bytes = GLOBUS_BANNER
    banner_delay_s: float = 0.0
    replies: dict[str, bytes] = field(default_factory=dict)
    close_after_banner: bool = False
    seen: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(self.banner_delay_s)
            writer.write(self.banner)
            await writer.drain()
            if self.close_after_banner:
                return
            while line := await reader.readline():
                text = line.decode().strip()
                self.seen.append(text)
                verb = text.split(" ", 1)[0].upper()
                writer.write(self.replies.get(verb, b"500 Unknown command.\r\n"))
                await writer.drain()
                if verb == "QUIT":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


LOGIN = {
    "USER": b"331 Password required for anonymous.\r\n",
    "PASS": b"230 User anonymous logged in.\r\n",
    "NOOP": b"200 NOOP command successful.\r\n",
    "EPSV": b"229 Entering Extended Passive Mode (|||58637|)\r\n",
    "PASV": b"227 Entering Passive Mode (127,0,0,1,188,177)\r\n",
    "QUIT": b"221 Goodbye.\r\n",
}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Fake], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(fake: Fake) -> str:
        server = await asyncio.start_server(fake.handle, "127.0.0.41", 0)
        servers.append(server)
        return f"127.0.0.41:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def run_check(target: str, timeout_s: float = 2.0, **options: object) -> tuple[Verdict, str]:
    from gridlb.table import RealKey

    result = await create_checker("gridftp", **options).check(RealKey.parse(target), timeout_s=timeout_s)
    return result.verdict, result.reason


@pytest.mark.parametrize(
    ("fake", "verdict", "reason"),
    [
        (Fake(), Verdict.UP, "banner 220 vm GridFTP Server 13.24"),
        (Fake(banner=b"220-Welcome\r\n to gridftp\r\n220 ready\r\n"), Verdict.UP, "banner 220 Welcome"),
        (Fake(banner=BUSY), Verdict.REFUSING, "refusing: 421 Service busy: Connection limit exceeded"),
        (Fake(banner=OFFLINE), Verdict.REFUSING, "refusing: 422 Service temporarily offline"),
        (Fake(banner=b"HTTP/1.1 400 Bad Request\r\n\r\n"), Verdict.DOWN, "malformed reply: not an FTP reply"),
        (Fake(banner=b"\x16\x03\x01\x00\xa5\x01\x00\r\n"), Verdict.DOWN, "not an FTP reply"),
        (Fake(banner=b"500 go away\r\n"), Verdict.DOWN, "unexpected banner: 500 go away"),
        (
            Fake(banner=b"", close_after_banner=True),
            Verdict.DOWN,
            "control connection closed by the server (waiting for the banner)",
        ),
        (Fake(banner=b"220 no end of line", close_after_banner=True), Verdict.DOWN, "closed by the server"),
        (Fake(banner=b"220 no end of line"), Verdict.DOWN, "no banner from 127.0.0.41:"),
        (Fake(banner_delay_s=5.0), Verdict.DOWN, "no banner from 127.0.0.41:"),
    ],
)
async def test_banner_level(
    serve: Callable[[Fake], Awaitable[str]], fake: Fake, verdict: Verdict, reason: str
) -> None:
    target = await serve(fake)
    got = await run_check(target, timeout_s=0.4)
    assert got[0] is verdict, got
    assert reason in got[1], got
    if verdict is Verdict.UP:
        assert fake.seen == ["QUIT"]


async def test_slow_banner_reason_names_the_timeout(serve: Callable[[Fake], Awaitable[str]]) -> None:
    target = await serve(Fake(banner_delay_s=5.0))
    verdict, reason = await run_check(target, timeout_s=0.3)
    assert (verdict, reason) == (Verdict.DOWN, f"no banner from {target} within 0.3 s")


@pytest.mark.parametrize(
    ("replies", "verdict", "reason"),
    [
        (
            {},
            Verdict.UP,
            "banner 220, login anonymous ok, EPSV port 58637 (no address), PASV 127.0.0.1:48305",
        ),
        ({"PASS": b"530 Login incorrect.\r\n"}, Verdict.DOWN, "PASS failed: 530 Login incorrect."),
        ({"USER": BUSY}, Verdict.REFUSING, "refusing: USER answered 421 Service busy"),
        ({"USER": b"230 already in\r\n"}, Verdict.UP, "login anonymous ok"),
        ({"NOOP": b"502 no\r\n"}, Verdict.DOWN, "NOOP failed: 502 no"),
        ({"PASV": b"227 Entering Passive Mode\r\n"}, Verdict.DOWN, "malformed 227 reply: no h1,h2"),
        ({"PASV": b"227 (0,0,0,0,10,10)\r\n"}, Verdict.DOWN, "the unspecified address 0.0.0.0"),
        (
            {"PASV": b"227 (10,201,0,100,10,10)\r\n"},
            Verdict.DOWN,
            "PASV advertises 10.201.0.100, a VIP address",
        ),
        ({"PASV": b"227 (127,0,0,1,10,10)\r\n"}, Verdict.UP, "PASV 127.0.0.1:2570"),  # loopback on loopback
        ({"PASV": b"500 no PASV here\r\n"}, Verdict.DOWN, "PASV failed: 500 no PASV here"),
    ],
)
async def test_login_level(
    serve: Callable[[Fake], Awaitable[str]], replies: dict[str, bytes], verdict: Verdict, reason: str
) -> None:
    target = await serve(Fake(replies=LOGIN | replies))
    got = await run_check(target, level="login", vips=["10.201.0.100"])
    assert got[0] is verdict, got
    assert reason in got[1], got


@pytest.mark.parametrize(
    ("epsv", "vips", "verdict", "reason"),
    [
        # IPv4 VIPs only: IPv4 clients use PASV, so an address-less EPSV is a note, not a fault
        (b"229 Entering Extended Passive Mode (|||58637|)", ["10.201.0.100"], Verdict.UP, "(no address)"),
        (b"500 Unknown command.", ["10.201.0.100"], Verdict.UP, "EPSV refused, PASV 127.0.0.1:"),
        (b"229 (|1|127.0.0.1|4000|)", ["10.201.0.100"], Verdict.UP, "EPSV 127.0.0.1:4000, PASV"),
        (
            b"229 (|1|10.201.0.100|4000|)",
            ["10.201.0.100"],
            Verdict.DOWN,
            "EPSV advertises 10.201.0.100, a VIP",
        ),
        (b"229 (|1|0.0.0.0|4000|)", [], Verdict.DOWN, "EPSV advertises the unspecified address"),
        # an IPv6 VIP: every IPv6 client uses EPSV, and an address-less reply sends it to the VIP
        (
            b"229 Entering Extended Passive Mode (|||58637|)",
            ["10.201.0.100", "fd00:201::100"],
            Verdict.DOWN,
            "EPSV reply carries no address, so EPSV clients (every IPv6 client) connect to the VIP "
            "10.201.0.100, fd00:201::100",
        ),
        (b"500 Unknown command.", ["fd00:201::100"], Verdict.DOWN, "EPSV refused, and IPv6 clients need it"),
        (b"229 (|2|::1|4000|)", ["fd00:201::100"], Verdict.UP, "EPSV [::1]:4000"),  # loopback on loopback
        (b"229 (|2|fd00:201::100|4000|)", ["fd00:201::100"], Verdict.DOWN, "fd00:201::100, a VIP address"),
        # no VIP known (checking a server on its own): RFC 2428's address-less reply is right
        (b"229 Entering Extended Passive Mode (|||58637|)", [], Verdict.UP, "(no address)"),
    ],
)
async def test_epsv_data_address(
    serve: Callable[[Fake], Awaitable[str]], epsv: bytes, vips: list[str], verdict: Verdict, reason: str
) -> None:
    fake = Fake(replies=LOGIN | {"EPSV": epsv + b"\r\n"})
    got = await run_check(await serve(fake), level="login", vips=vips)
    assert got[0] is verdict and reason in got[1], got
    assert "EPSV" in fake.seen
    if verdict is Verdict.DOWN:
        assert got[1].startswith("data-address fault: ")
        assert "-epsv-ip" in got[1] or "-data-interface" in got[1] or "IPv6 clients" in got[1]


async def test_login_without_data_address_check(serve: Callable[[Fake], Awaitable[str]]) -> None:
    fake = Fake(replies=LOGIN | {"PASV": b"227 (10,201,0,100,10,10)\r\n"})
    target = await serve(fake)
    got = await run_check(target, level="login", vips=["10.201.0.100"], data_address_check=False)
    assert got == (Verdict.UP, "banner 220, login anonymous ok")
    assert fake.seen == ["USER anonymous", "PASS gridlb@", "NOOP", "QUIT"]


@pytest.mark.parametrize(
    ("reply", "expected", "verdict", "reason"),
    [
        (b"213 084b021f\r\n", None, Verdict.UP, "canary ADLER32 084b021f"),
        (b"213 084b021f\r\n", "084B021F", Verdict.UP, "canary ADLER32 084b021f"),
        (
            b"213 deadbeef\r\n",
            "084b021f",
            Verdict.DOWN,
            "canary /data/canary: ADLER32 deadbeef, expected 084b021f",
        ),
        (b"550 No such file\r\n", None, Verdict.DOWN, "CKSM failed: 550 No such file"),
        (b"213 not hex!\r\n", None, Verdict.DOWN, "CKSM returned no checksum"),
    ],
)
async def test_canary_cksm(
    serve: Callable[[Fake], Awaitable[str]], reply: bytes, expected: str | None, verdict: Verdict, reason: str
) -> None:
    fake = Fake(replies=LOGIN | {"CKSM": reply})
    target = await serve(fake)
    got = await run_check(target, level="canary", canary_path="/data/canary", canary_checksum=expected)
    assert got[0] is verdict, got
    assert reason in got[1], got
    assert "CKSM ADLER32 0 -1 /data/canary" in fake.seen


# --------------------------------------------------------------------------- the real globus-gridftp-server


def _children(pid: int) -> list[int]:
    pids = (int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    return [kid for kid in pids if procfs.parent(kid) == pid]


def _kill(pid: int) -> None:
    for kid in _children(pid):
        _kill(kid)
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


@dataclass
class Globus:
    """One globus-gridftp-server we started (anonymous, as nobody) and the files it serves."""

    proc: subprocess.Popen[bytes]
    target: str
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            _kill(self.proc.pid)
            self.proc.wait(timeout=10)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(host: str, port: int) -> bool:
    """True when /proc/net/tcp has a LISTEN socket on host:port (no probe connection: globus counts those)."""
    want = f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"globus-gridftp-server exited with {proc.returncode}"
        if _listening(host, port):
            return
        time.sleep(0.05)
    pytest.fail(f"globus-gridftp-server did not listen on {host}:{port}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory nobody can read (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="glbH-"))
    root.chmod(0o755)
    (root / "canary").write_bytes(b"hello\n")
    (root / "canary").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def globus(scratch: Path) -> Iterator[Callable[..., Globus]]:
    need_tool("globus-gridftp-server")
    started: list[Globus] = []

    def start(*extra: str, host: str = "127.0.0.51") -> Globus:
        port = _free_port(host)
        argv = ["globus-gridftp-server", "-aa", "-p", str(port), "-control-interface", host]
        argv += ["-home-dir", str(scratch), *extra]
        if os.geteuid() == 0:
            argv += ["-anonymous-user", "nobody"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        g = Globus(proc, f"{host}:{port}", scratch)
        started.append(g)
        _wait_listening(host, port, proc)
        return g

    yield start
    for g in started:
        g.stop()


async def test_globus_up_at_every_level(globus: Callable[..., Globus]) -> None:
    g = globus()
    canary = str(g.root / "canary")
    assert (await run_check(g.target))[0] is Verdict.UP
    verdict, reason = await run_check(g.target, level="login")
    # bound to one IPv4 address, globus advertises the address the client dialled (gridftp.md §2.2)
    assert verdict is Verdict.UP and "PASV 127.0.0.51:" in reason, reason
    for method in ("cksm", "retr"):
        verdict, reason = await run_check(
            g.target, level="canary", canary_path=canary, canary_method=method, canary_checksum="084b021f"
        )
        assert (verdict, reason.endswith("canary ADLER32 084b021f")) == (Verdict.UP, True), reason
    verdict, reason = await run_check(g.target, level="canary", canary_path=str(g.root / "missing"))
    assert verdict is Verdict.DOWN and reason.startswith("CKSM failed: 5"), reason  # 500 from globus
    verdict, reason = await run_check(
        g.target, level="canary", canary_path=canary, canary_method="retr", canary_checksum="00000000"
    )
    assert verdict is Verdict.DOWN and "expected 00000000" in reason


async def test_globus_refusing_at_its_connection_limit(globus: Callable[..., Globus]) -> None:
    g = globus("-connections-max", "2")
    host, port = g.target.split(":")
    held: list[socket.socket] = []
    try:
        for _ in range(2):
            held.append(socket.create_connection((host, int(port)), timeout=5))
            assert held[-1].recv(200).startswith(b"220 ")
        verdict, reason = await run_check(g.target)
        assert verdict is Verdict.REFUSING
        assert reason.startswith("refusing: 421 Service busy: Connection limit exceeded"), reason
        # a plain TCP_CHECK cannot tell
        from gridlb.table import RealKey

        assert (await TcpChecker().check(RealKey.parse(g.target), timeout_s=2)).verdict is Verdict.UP
    finally:
        for s in held:
            s.close()
    # the limit frees up once the held sessions end
    deadline = time.monotonic() + 10
    while (verdict := (await run_check(g.target))[0]) is not Verdict.UP and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert verdict is Verdict.UP


async def test_globus_hung_is_down_by_timeout(globus: Callable[..., Globus]) -> None:
    g = globus()
    freeze(g.proc.pid)
    try:
        verdict, reason = await run_check(g.target, timeout_s=0.5)
        assert (verdict, reason) == (Verdict.DOWN, f"no banner from {g.target} within 0.5 s")
        from gridlb.table import RealKey

        # the kernel still completes the handshake: TCP_CHECK says up
        assert (await TcpChecker().check(RealKey.parse(g.target), timeout_s=0.5)).verdict is Verdict.UP
    finally:
        os.kill(g.proc.pid, signal.SIGCONT)
    g.stop()


async def test_globus_stopped_is_down(globus: Callable[..., Globus]) -> None:
    g = globus()
    assert (await run_check(g.target))[0] is Verdict.UP
    g.stop()
    verdict, reason = await run_check(g.target)
    assert (verdict, reason) == (Verdict.DOWN, f"{g.target}: connect: connection refused")


# --------------------------------------------------------------------------- data address, across namespaces


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@dataclass
class NetPair:
    """The server's and the checker's namespaces of a lab (rs1, not set up, and the client)."""

    lab: Lab
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def srv(self) -> str:
        return self.lab.node("rs1").ns

    def addr(self, node: str, family: int = 4) -> str:
        n = self.lab.node(node)
        return str(n.ipv4 if family == 4 else n.ipv6)

    def vip(self, family: int = 4) -> str:
        return str(self.lab.vip4 if family == 4 else self.lab.vip6)

    def hosts_file(self, text: str) -> None:
        """Give the server namespace its own /etc/hosts (removed with the lab)."""
        etc = Path("/etc/netns") / self.srv
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(text)

    def start_globus(self, root: Path, *extra: str) -> subprocess.Popen[bytes]:
        argv = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody"]
        argv += ["-p", "2811", "-home-dir", str(root), *extra]
        proc = self.lab.spawn("rs1", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)  # `ip netns exec` execs: this PID is the server's
        return proc

    def check(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `gridlb check gridftp ...` from the checker's namespace."""
        argv = [sys.executable, "-m", "gridlb", "check", "gridftp", *args]
        return self.lab.exec("client", argv, timeout_s=30, check=False)

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, "globus-gridftp-server exited"
            if self.check(f"{self.addr('rs1')}:2811", "--timeout", "2").returncode == 0:
                return
            time.sleep(0.1)
        pytest.fail("globus-gridftp-server did not come up in the server namespace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                _kill(proc.pid)
                proc.wait(timeout=10)
        self.procs.clear()


@pytest.fixture
def netpair() -> Iterator[NetPair]:
    need_tool("ip", "globus-gridftp-server")
    with lab_up("H", realservers=1, directors=0, start="none", net_a=201, net_b=0) as lab:
        pair = NetPair(lab)
        try:
            yield pair
        finally:
            pair.stop_all()


@pytest.mark.privileged
def test_data_address_fault_from_another_namespace(netpair: NetPair, scratch: Path) -> None:
    SRV_ADDR, CHK_ADDR, VIP_ADDR = netpair.addr("rs1"), netpair.addr("client"), netpair.vip()
    target = f"{SRV_ADDR}:2811"
    # Without -data-interface globus advertises what its hostname resolves to: 127.0.0.1 here
    # (/etc/hosts maps this host's name to 127.0.0.1, as on Debian).
    proc = netpair.start_globus(scratch)
    netpair.wait_ready(proc)
    out = netpair.check(target, "--level", "login", "--timeout", "5")
    assert out.returncode == 1, out
    assert out.stdout.startswith(f"down {SRV_ADDR}:2811: data-address fault: PASV advertises 127.0.0.1, ")
    assert f"a loopback address, to a non-loopback client ({CHK_ADDR})" in out.stdout
    # the banner level cannot see the fault
    assert netpair.check(target, "--timeout", "5").returncode == 0
    netpair.stop_all()

    # The other real-world fault: the server's host name resolves to the VIP (say its hosts file maps it
    # to the service name's address). `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts for the
    # server only. The VIP sits on the server's lo as on any DR real server; the check goes to the RIP.
    netpair.hosts_file(f"127.0.0.1 localhost\n{VIP_ADDR} {socket.gethostname()}\n")
    _ip("-n", netpair.srv, "addr", "add", f"{VIP_ADDR}/32", "dev", "lo")
    proc = netpair.start_globus(scratch)
    netpair.wait_ready(proc)
    out = netpair.check(target, "--level", "login", "--vip", VIP_ADDR, "--timeout", "5")
    assert out.returncode == 1, out
    assert (
        f"data-address fault: PASV advertises {VIP_ADDR}, a VIP address, to client {CHK_ADDR}" in out.stdout
    )
    netpair.stop_all()

    proc = netpair.start_globus(scratch, "-data-interface", SRV_ADDR)
    netpair.wait_ready(proc)
    out = netpair.check(target, "--level", "login", "--timeout", "5")
    assert out.returncode == 0, out
    assert f"PASV {SRV_ADDR}:" in out.stdout
    # and the data path really works across the namespaces: a RETR canary over the advertised address
    args = ["--level", "canary", "--canary", str(scratch / "canary"), "--canary-method", "retr"]
    out = netpair.check(target, *args, "--canary-checksum", "084b021f", "--timeout", "5")
    assert out.returncode == 0, out
    assert "canary ADLER32 084b021f" in out.stdout


@pytest.mark.privileged
def test_globus_epsv_behind_an_ipv6_vip_needs_epsv_ip(netpair: NetPair, scratch: Path) -> None:
    """A Globus real server behind an IPv6 VIP: without -epsv-ip its EPSV reply sends every IPv6 client
    to the VIP (a data-address fault); with -epsv-ip (and -data-interface) it is up, data path included."""
    SRV6, VIP6 = netpair.addr("rs1", 6), netpair.vip(6)  # the lab's addresses (nodad)
    _ip("-n", netpair.srv, "addr", "add", f"{VIP6}/128", "dev", "lo")  # as on any DR real server
    target = f"[{SRV6}]:2811"
    login = ("--level", "login", "--vip", VIP6, "--timeout", "5")

    proc = netpair.start_globus(scratch, "-data-interface", SRV6)
    netpair.wait_ready(proc)
    out = netpair.check(target, *login)
    assert out.returncode == 1, out
    assert out.stdout.startswith(f"down {target}: data-address fault: EPSV reply carries no address"), out
    assert f"connect to the VIP {VIP6}" in out.stdout and "-epsv-ip" in out.stdout
    # checked on its own (no VIP), the RFC 2428 reply is right
    assert netpair.check(target, "--level", "login", "--timeout", "5").returncode == 0
    netpair.stop_all()

    proc = netpair.start_globus(scratch, "-data-interface", SRV6, "-epsv-ip")
    netpair.wait_ready(proc)
    out = netpair.check(target, *login)
    assert out.returncode == 0, out
    assert f"EPSV [{SRV6}]:" in out.stdout
    args = ["--canary", str(scratch / "canary"), "--canary-method", "retr", "--canary-checksum", "084b021f"]
    out = netpair.check(target, "--level", "canary", "--vip", VIP6, *args, "--timeout", "5")
    assert out.returncode == 0, out
    assert "canary ADLER32 084b021f" in out.stdout


@pytest.mark.parametrize(("epsv_ip", "verdict"), [(None, Verdict.UP), (False, Verdict.DOWN)])
async def test_embedded_server_behind_an_ipv6_vip(
    tmp_path: Path, epsv_ip: bool | None, verdict: Verdict
) -> None:
    """gridlb's own server names its data address in EPSV by default (--epsv-ip); --no-epsv-ip is a fault."""
    from tests.gridftp.helpers import ThreadedServer

    srv = ThreadedServer(tmp_path, host="::1", data_address="::1", epsv_ip=epsv_ip).start()
    try:
        got = await run_check(f"[::1]:{srv.port}", level="login", vips=["fd00:201::100"])
    finally:
        srv.stop()
    assert got[0] is verdict, got
    assert ("EPSV [::1]:" in got[1]) if verdict is Verdict.UP else ("EPSV reply carries no address" in got[1])
