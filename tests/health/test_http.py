"""Tests of the http/https checkers: pure decisions, then against a real nginx WebDAV server over TLS
with a test CA, and keepalived's own HTTP reader (`keepalived --genhash`) on the same answers."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gridlb.config.schema import HttpUrl
from gridlb.health.base import Verdict, create_checker
from gridlb.health.http import (
    certificate_days_left,
    dav_classes,
    judge_canary,
    judge_dav,
    judge_expiry,
    judge_propfind,
    judge_url,
)
from gridlb.table import RealKey, parse_address
from tests.support import need_tool

# ------------------------------------------------------------------------------- pure decisions


def test_status_codes_as_keepalived() -> None:
    default = HttpUrl(path="/")
    assert [default.accepts(c) for c in (199, 200, 299, 300, 404)] == [False, True, True, False, False]
    listed = HttpUrl(path="/", status_code=["200-299", "400-499", "503", 505])
    assert [listed.accepts(c) for c in (200, 404, 500, 503, 505, 504)] == [
        True,
        True,
        False,
        True,
        True,
        False,
    ]
    with pytest.raises(ValueError, match=r"codes are 100\.\.599"):
        HttpUrl(path="/", status_code="99")
    with pytest.raises(ValueError, match="N or N-M"):
        HttpUrl(path="/", status_code="2xx")
    with pytest.raises(ValueError, match="32 hexadecimal"):
        HttpUrl(path="/", digest="abc")
    assert (
        HttpUrl(path="/", digest="FF20AD2481F97B1754EF3E12ECD3A9CC").digest
        == "ff20ad2481f97b1754ef3e12ecd3a9cc"
    )


def test_url_judgement_checks_status_before_digest() -> None:
    url = HttpUrl(path="/x", digest="0" * 32)
    assert judge_url(url, 200, "0" * 32).ok
    bad_digest = judge_url(url, 200, "1" * 32)
    assert not bad_digest.ok and "MD5 digest" in bad_digest.reason
    bad_status = judge_url(url, 500, "0" * 32)
    assert not bad_status.ok and "status 500, expected 200-299" in bad_status.reason


def test_dav_propfind_canary_and_expiry_judgements() -> None:
    assert dav_classes("1, 2, <http://apache.org/dav/propset/fs/1>") == (
        "1",
        "2",
        "<http://apache.org/dav/propset/fs/1>",
    )
    assert judge_dav(200, "1,2", "/dav/").ok
    assert not judge_dav(200, None, "/").ok and not judge_dav(405, "1", "/").ok
    assert judge_propfind(207, "/dav/").ok and not judge_propfind(405, "/dav/").ok
    missing = judge_canary("HEAD", 404, "/dav/c")
    assert not missing.ok and "canary is missing" in missing.reason
    now = time.time()
    soon = time.strftime("%b %d %H:%M:%S %Y GMT", time.gmtime(now + 5 * 86400))
    days = certificate_days_left(soon, now)
    assert 4.9 < days <= 5.0
    assert judge_expiry(days, 30).reason.startswith("warning: certificate expires in")
    assert not judge_expiry(days, 3).reason.startswith("warning")


# ------------------------------------------------------------------------- a test CA and nginx


@dataclass(frozen=True)
class Pki:
    ca: Path
    certs: dict[str, tuple[Path, Path]]  # name -> (cert, key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_pki(root: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gridlb test CA"))
        .issuer_name(_name("gridlb test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs = {}
    plans = {
        "good": (["dav.test"], -30, 365),
        "expired": (["dav.test"], -60, -1),
        "wrong": (["other.test"], -30, 365),
        "soon": (["dav.test"], -30, 5),
    }
    for name, (dns, start, end) in plans.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=start))
            .not_valid_after(now + dt.timedelta(days=end))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                    if name != "wrong"
                    else [x509.DNSName(d) for d in dns]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cpath, kpath = root / f"{name}.pem", root / f"{name}.key"
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kpath.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        certs[name] = (cpath, kpath)
    return Pki(root / "ca.pem", certs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


INDEX = b"<html><body>gridlb test page</body></html>\n"
CANARY = b"canary\n"
MODULES = Path("/usr/lib/nginx/modules")


@dataclass
class Nginx:
    root: Path
    ports: dict[str, int]  # "http", "good", "expired", "wrong", "soon"
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


def _dav_location() -> str:
    return (
        "location /dav/ { dav_methods PUT DELETE MKCOL COPY MOVE; dav_ext_methods PROPFIND OPTIONS; "
        "create_full_put_path on; autoindex on; }\n"
    )


def _start_nginx(
    tmp: Path,
    pki: Pki,
    host: str = "127.0.0.1",
    root: Path | None = None,
    ports: dict[str, int] | None = None,
) -> Nginx:
    """nginx on `host` (plain, and TLS with each test certificate), serving `root` with WebDAV on /dav/."""
    need_tool("nginx")
    need(
        MODULES.joinpath("ngx_http_dav_ext_module.so").exists(), "libnginx-mod-http-dav-ext is not installed"
    )
    tmp.mkdir(parents=True, exist_ok=True)
    root = root or tmp / "www"
    (root / "dav").mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "dav" / "canary.txt").write_bytes(CANARY)
    ports = ports or {name: _free_port() for name in ("http", "good", "expired", "wrong", "soon")}
    servers = [
        f"server {{ listen {host}:{ports['http']}; root {root};\n{_dav_location()}"
        "location = /chunked { echo 'part one'; echo 'part two'; }\n"
        "location = /moved { return 301 /index.html; }\n}\n"
    ]
    for name in ("good", "expired", "wrong", "soon"):
        cert, key = pki.certs[name]
        servers.append(
            f"server {{ listen {host}:{ports[name]} ssl; root {root}; "
            f"ssl_certificate {cert}; ssl_certificate_key {key};\n{_dav_location()}}}\n"
        )
    temp = "".join(
        f"{k}_temp_path {tmp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"load_module {MODULES}/ngx_http_dav_ext_module.so;\n"
        f"load_module {MODULES}/ngx_http_echo_module.so;\n"
        f"user root;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        "daemon off;\nevents { worker_connections 64; }\n"
        f"http {{ access_log off; {temp}types {{ text/html html; text/plain txt; }}\n"
        + "".join(servers)
        + "}\n"
    )
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, ports["soon"]), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((tmp / "error.log").read_text()) from None
            time.sleep(0.05)
    return Nginx(root, ports, proc)


def need(condition: bool, why: str) -> None:
    from tests.support import need as _need

    _need(condition, why)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Nginx]:
    server = _start_nginx(tmp_path_factory.mktemp("nginx"), pki)
    try:
        yield server
    finally:
        server.stop()


def _run(
    kind: str, port: int, *, timeout_s: float = 5.0, **options: object
) -> tuple[Verdict, str, float | None]:
    import asyncio

    checker = create_checker(kind, **options)
    result = asyncio.run(checker.check(RealKey(parse_address("127.0.0.1"), port), timeout_s=timeout_s))
    return result.verdict, result.reason, result.cert_days_left


# ------------------------------------------------------------------------ against real nginx/DAV


def test_https_up_with_every_webdav_level(nginx: Nginx, pki: Pki) -> None:
    verdict, reason, days = _run(
        "https",
        nginx.ports["good"],
        urls=[{"path": "/dav/"}],
        virtualhost="dav.test",
        sni=True,
        ca_file=str(pki.ca),
        level="canary",
        canary_path="/dav/canary.txt",
        cert_warn_days=30,
    )
    assert verdict is Verdict.UP, reason
    assert "OPTIONS /dav/: DAV 1" in reason and "PROPFIND /dav/: 207" in reason and "canary" in reason
    assert days is not None and 364 < days < 366 and "warning" not in reason


def test_https_down_when_stopped(tmp_path: Path, pki: Pki) -> None:
    server = _start_nginx(tmp_path, pki)
    port = server.ports["good"]
    assert _run("https", port, ca_file=str(pki.ca), virtualhost="dav.test")[0] is Verdict.UP
    server.stop()
    verdict, reason, _ = _run("https", port, ca_file=str(pki.ca), virtualhost="dav.test")
    assert verdict is Verdict.DOWN and "connection refused" in reason


def test_https_expired_certificate_is_down(nginx: Nginx, pki: Pki) -> None:
    verdict, reason, _ = _run("https", nginx.ports["expired"], virtualhost="dav.test", ca_file=str(pki.ca))
    assert verdict is Verdict.DOWN and "certificate has expired" in reason
    # unless the site says otherwise (keepalived's SSL_GET checks no certificate)
    assert _run("https", nginx.ports["expired"], tls_verify=False)[0] is Verdict.UP


def test_https_wrong_name_is_down(nginx: Nginx, pki: Pki) -> None:
    verdict, reason, _ = _run("https", nginx.ports["wrong"], virtualhost="dav.test", ca_file=str(pki.ca))
    assert verdict is Verdict.DOWN and "does not name the host" in reason
    assert _run("https", nginx.ports["wrong"], virtualhost="other.test", ca_file=str(pki.ca))[0] is Verdict.UP
    assert _run("https", nginx.ports["wrong"], virtualhost="dav.test", tls_verify=False)[0] is Verdict.UP


def test_https_untrusted_ca_is_down(nginx: Nginx) -> None:
    verdict, reason, _ = _run("https", nginx.ports["good"], virtualhost="dav.test")
    assert verdict is Verdict.DOWN and "not trusted" in reason


def test_missing_canary_is_down(nginx: Nginx, pki: Pki) -> None:
    verdict, reason, _ = _run(
        "https",
        nginx.ports["good"],
        virtualhost="dav.test",
        ca_file=str(pki.ca),
        level="canary",
        urls=[{"path": "/dav/"}],
        canary_path="/dav/no-such-canary.txt",
    )
    assert verdict is Verdict.DOWN and "HEAD /dav/no-such-canary.txt: 404, the canary is missing" in reason


def test_certificate_expiring_soon_is_a_warning(nginx: Nginx, pki: Pki) -> None:
    verdict, reason, days = _run(
        "https", nginx.ports["soon"], virtualhost="dav.test", ca_file=str(pki.ca), cert_warn_days=30
    )
    assert verdict is Verdict.UP
    assert days is not None and 4 < days < 5.1
    assert "warning: certificate expires in" in reason


def test_options_level_needs_webdav(nginx: Nginx) -> None:
    verdict, reason, _ = _run("http", nginx.ports["http"], level="options")
    assert verdict is Verdict.DOWN and "OPTIONS /:" in reason  # no DAV on /
    assert _run("http", nginx.ports["http"], level="propfind", urls=[{"path": "/dav/"}])[0] is Verdict.UP


def test_http_digest_and_status(nginx: Nginx) -> None:
    good = hashlib.md5(INDEX).hexdigest()
    port = nginx.ports["http"]
    assert _run("http", port, urls=[{"path": "/index.html", "digest": good}])[0] is Verdict.UP
    verdict, reason, _ = _run("http", port, urls=[{"path": "/index.html", "digest": "0" * 32}])
    assert verdict is Verdict.DOWN and "MD5 digest" in reason
    assert _run("http", port, urls=[{"path": "/nope"}])[0] is Verdict.DOWN
    assert _run("http", port, urls=[{"path": "/nope", "status_code": ["404"]}])[0] is Verdict.UP


# ------------------------------------------------------------- keepalived's decisions on the same


def _genhash(port: int, path: str, tls: bool) -> tuple[int, str]:
    """keepalived's own HTTP reader (`keepalived --genhash`, check_http.c): status code and MD5 digest.

    keepalived's checker process cannot run on this kernel (no IPVS: it exits FATAL at start); its
    recorded verdicts are compared below (GOLDEN). Here its reading code runs in genhash mode, and
    its rule (http_handle_response) is applied to what it read.
    """
    argv = ["keepalived", "--genhash", *(["-S"] if tls else []), "-s", "127.0.0.1", "-p", str(port)]
    proc = subprocess.run([*argv, "-u", path, "-v"], capture_output=True, text=True, timeout=20, check=False)
    status = re.search(r"HTTP/1\.[01] (\d{3})", proc.stdout)
    digest = re.search(
        r"^([0-9a-f]{32})\s*$",
        subprocess.run([*argv, "-u", path], capture_output=True, text=True, timeout=20, check=False).stdout,
        re.M,
    )
    assert status is not None and digest is not None, proc.stdout + proc.stderr
    return int(status.group(1)), digest.group(1)


def _keepalived_verdict(url: HttpUrl, status: int, digest: str) -> Verdict:
    """keepalived's http_handle_response(): status bit array, then the MD5 compare."""
    if not url.accepts(status):
        return Verdict.DOWN
    if url.digest is not None and url.digest != digest:
        return Verdict.DOWN
    return Verdict.UP


@pytest.mark.parametrize(
    ("path", "tls"),
    [(p, False) for p in ("/index.html", "/nope", "/moved", "/chunked", "/dav/canary.txt")]
    + [(p, True) for p in ("/index.html", "/nope", "/dav/canary.txt")],  # /chunked: plain server only
)
def test_digest_and_status_decisions_match_keepalived(nginx: Nginx, path: str, tls: bool) -> None:
    need_tool("keepalived")
    port = nginx.ports["good" if tls else "http"]
    ka_status, ka_digest = _genhash(port, path, tls)
    specs = [
        HttpUrl(path=path),
        HttpUrl(path=path, status_code=["200"]),
        HttpUrl(path=path, status_code=["404"]),
        HttpUrl(path=path, status_code=["300-399"]),
        HttpUrl(path=path, digest=ka_digest, status_code=["100-599"]),
        HttpUrl(path=path, digest=ka_digest),
        HttpUrl(path=path, digest=hashlib.md5(b"something else").hexdigest(), status_code=["100-599"]),
    ]
    verdicts = []
    for url in specs:
        ours, reason, _ = _run("https" if tls else "http", port, urls=[url], tls_verify=False)
        verdicts.append((ours, _keepalived_verdict(url, ka_status, ka_digest), reason))
    assert [(o, k) for o, k, _ in verdicts if o is not k] == [], verdicts
    # the cases cover both answers
    assert {k for _, k, _ in verdicts} == {Verdict.UP, Verdict.DOWN}


def test_gridlb_check_https_command(nginx: Nginx, pki: Pki) -> None:
    gridlb = shutil.which("gridlb", path=str(Path(sys.executable).parent))
    assert gridlb is not None
    base = [gridlb, "check", "https", "--ca-file", str(pki.ca), "--virtualhost", "dav.test", "--sni"]
    up = subprocess.run(
        [
            *base,
            "--level",
            "canary",
            "--canary",
            "/dav/canary.txt",
            "--url",
            "/dav/",
            f"127.0.0.1:{nginx.ports['good']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert up.returncode == 0 and up.stdout.startswith("up 127.0.0.1:"), up.stdout + up.stderr
    down = subprocess.run(
        [*base, f"127.0.0.1:{nginx.ports['expired']}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert down.returncode == 1 and "certificate has expired" in down.stdout
    bad = subprocess.run(
        [*base, "--digest", "xyz", "127.0.0.1:1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert bad.returncode == 2 and bad.stderr.startswith("gridlb: ") and "Traceback" not in bad.stderr


def test_site_checks_become_http_checkers() -> None:
    """An imported SSL_GET becomes an `https` checker as keepalived's (no certificate checks), with
    keepalived's inheritance: the url's virtualhost, else the checker's, real server's, service's."""
    from gridlb.config.import_keepalived import import_text
    from gridlb.health.http import HttpsChecker
    from gridlb.health.spec import from_check_spec

    site = import_text(
        "virtual_server 10.0.0.1 443 {\n virtualhost vs.test\n real_server 10.0.0.2 443 {\n"
        "  SSL_GET {\n   url {\n    path /a\n    status_code 200 301\n   }\n   enable_sni\n  }\n }\n}\n",
        "s.conf",
    ).site()
    vs = site.virtual_servers["tcp-10.0.0.1-443"]
    rs = vs.real_servers[0]
    spec = vs.check_for(rs)
    assert spec.http is not None and spec.delay_before_retry_s == 3.0  # keepalived's HTTP default
    made = from_check_spec(spec, real=rs.real_key(vs))
    assert made is not None
    checker, policy = made
    assert isinstance(checker, HttpsChecker)
    assert checker.virtualhost == "vs.test" and checker.sni and not checker.tls_verify
    assert checker.urls[0].status_code == ("200", "301") and policy.delay_before_retry_s == 3.0


GOLDEN = Path(__file__).resolve().parent / "golden" / "keepalived_http" / "out" / "verdicts.json"


def test_verdicts_match_the_real_keepalived_checker(nginx: Nginx) -> None:
    """The real keepalived 2.2.7 HTTP_GET / SSL_GET checker's verdicts (recorded under a kernel with
    IPVS by golden/keepalived_http/capture.py: a real server is in the IPVS table once its check
    passed) and gridlb's on the same nginx answers, case by case."""
    import json

    golden = json.loads(GOLDEN.read_text())
    assert golden["keepalived"].startswith("Keepalived v2.2.7")
    cases = golden["cases"]
    assert {c["keepalived"] for c in cases} == {"up", "down"} and len(cases) == 63
    differ = []
    for case in cases:
        tls = case["tls"]
        port = nginx.ports["good" if tls else "http"]
        ours, reason, _ = _run("https" if tls else "http", port, urls=[case["url"]], tls_verify=False)
        if ours.value != case["keepalived"]:
            differ.append((case, ours.value, reason))
    assert differ == []


def test_curl_uploads_and_downloads_through_a_director(tmp_path: Path, pki: Pki) -> None:
    """A director (proxy dataplane) in front of two nginx WebDAV servers, checked by the https
    checker at the propfind level: curl PUTs and GETs through the VIP; a stopped server goes down."""
    import json

    need_tool("curl")
    net = 60 + os.getpid() % 100
    vip, rs = f"127.45.{net}.1", [f"127.45.{net}.{i}" for i in (11, 12)]
    port = _free_port()
    ports = {
        "http": _free_port(),
        "good": port,
        "expired": _free_port(),
        "wrong": _free_port(),
        "soon": _free_port(),
    }
    shared = tmp_path / "store"
    servers = [
        _start_nginx(tmp_path / f"n{i}", pki, host=a, root=shared, ports=ports) for i, a in enumerate(rs)
    ]
    sock = tmp_path / "control.sock"
    site = tmp_path / "site.yaml"
    reals = "".join(f"      - ip_address: {a}\n" for a in rs)
    site.write_text(
        "virtual_servers:\n  webdav:\n"
        f"    ip_address: {vip}\n    port: {port}\n    lb_algo: rr\n    lb_kind: NAT\n"
        "    delay_loop: 1\n    delay_before_retry: 0.5\n    retry: 0\n    warmup: 0\n"
        "    virtualhost: dav.test\n"
        f"    ssl_get:\n      url:\n        - path: /dav/\n      level: propfind\n      ca_file: {pki.ca}\n"
        "      cert_warn_days: 30\n      connect_timeout: 3\n"
        f"    real_servers:\n{reals}"
        f"gridlb:\n  dataplane: proxy\n  control_socket: {sock}\n"
    )
    log = (tmp_path / "director.log").open("wb")
    director = subprocess.Popen(
        [sys.executable, "-m", "gridlb", "director", "run", str(site), "--no-vrrp", "--resync", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    curl = [
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "20",
        "--cacert",
        str(pki.ca),
        "--resolve",
        f"dav.test:{port}:{vip}",
    ]
    base = f"https://dav.test:{port}/dav"

    def status() -> list[dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "gridlb", "status", "--json", "--socket", str(sock)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            return []
        return [r for svc in json.loads(out.stdout)["services"] for r in svc["reals"]]

    def wait(predicate: Callable[[], bool], what: str, timeout_s: float = 40) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert director.poll() is None, (tmp_path / "director.log").read_text()
            assert time.monotonic() < deadline, f"{what}: {status()}"
            time.sleep(0.3)

    try:
        wait(lambda: len(status()) == 2 and all(r["in_table"] for r in status()), "both servers up")
        payload = tmp_path / "upload.bin"
        payload.write_bytes(os.urandom(256 << 10))
        for i in range(4):  # rr: both real servers take requests
            put = subprocess.run(
                [*curl, "-T", str(payload), f"{base}/f{i}.bin"], capture_output=True, timeout=30
            )
            assert put.returncode == 0, put.stderr
            got = subprocess.run([*curl, f"{base}/f{i}.bin"], capture_output=True, timeout=30)
            assert got.returncode == 0 and got.stdout == payload.read_bytes()
        servers[1].stop()
        wait(lambda: any(not r["in_table"] for r in status()), "the stopped server to leave the table")
        got = subprocess.run([*curl, f"{base}/f0.bin"], capture_output=True, timeout=30)
        assert got.returncode == 0 and got.stdout == payload.read_bytes()
    finally:
        director.send_signal(signal.SIGTERM)
        try:
            director.wait(timeout=30)
        except subprocess.TimeoutExpired:
            director.kill()
            director.wait(timeout=10)
        log.close()
        for server in servers:
            server.stop()
