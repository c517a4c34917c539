"""The `http` / `https` checkers: keepalived's HTTP_GET / SSL_GET, WebDAV levels, certificate checks.

Decisions as keepalived 2.2.7's (keepalived/check/check_http.c), one url after the other:

* a url answers with one of its `status_code`s (none written: 200-299), else down;
* then, when the url has a `digest`, the MD5 of the body (as sent: no content decoding is asked for
  or applied) must be that digest, else down;
* no answer within the timeout, a refused or reset connection, or an empty answer: down.

The request carries `Host: <virtualhost>` (the url's, else the checker's, real server's or
service's), else `Host: ADDR:PORT`, and keepalived's `User-Agent: KeepAliveClient`. With `enable_sni`
the TLS handshake names the virtualhost.

gridlb's additions, levels done in this order (each includes the ones before it):

* `get`: the urls (keepalived's check; with no url, `GET /` must answer 200-299);
* `options`: `OPTIONS` of the first url's path (or `/`) answers 2xx with a `DAV:` header naming
  class 1 (the classes are in the reason);
* `propfind`: `PROPFIND` of that path with `Depth: 0` answers 207 Multi-Status;
* `canary`: `HEAD` then `GET` of `canary_path` answer 2xx (404: the canary is missing).

HTTPS certificates: with `tls_verify` (the default) an expired certificate, one that does not name
the host (the virtualhost, else the address) or one no trusted CA signed is down; with
`cert_warn_days N`, a certificate that expires within N days is up with a warning in the reason and
`CheckResult.cert_days_left` set (status and metrics read it). With `tls_verify` off (keepalived's
SSL_GET, and every imported one) nothing about the certificate is checked.

The pure decisions (`judge_url`, `judge_dav`, `certificate_days_left`, ...) take their inputs and the
time; `HttpChecker` is the asyncio adapter around httpx.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gridlb.config import defaults as D
from gridlb.config.schema import CheckSpec, HttpUrl
from gridlb.health.base import (
    Checker,
    CheckResult,
    ConnectOptions,
    Verdict,
    describe_os_error,
    register_checker,
)
from gridlb.table import RealKey

#: What keepalived's HTTP_GET sends as User-Agent.
USER_AGENT = "KeepAliveClient"

#: Levels in the order they build on each other.
LEVELS = ("get", "options", "propfind", "canary")

#: OpenSSL verify codes the reason names (X509_V_ERR_*).
_CERT_EXPIRED = 10
_CERT_NOT_YET_VALID = 9
_HOSTNAME_MISMATCH = 62


# ----------------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True, slots=True)
class Judgement:
    """One decision: passed or not, and why."""

    ok: bool
    reason: str


def judge_url(url: HttpUrl, status: int, body_md5: str | None) -> Judgement:
    """keepalived's decision on one url's answer: the status code first, then the digest."""
    if not url.accepts(status):
        wanted = " ".join(url.status_code) or f"{D.HTTP_DEFAULT_STATUS_MIN}-{D.HTTP_DEFAULT_STATUS_MAX}"
        return Judgement(False, f"GET {url.path}: status {status}, expected {wanted}")
    if url.digest is not None:
        if body_md5 != url.digest:
            return Judgement(False, f"GET {url.path}: MD5 digest {body_md5} is not {url.digest}")
        return Judgement(True, f"GET {url.path}: {status}, MD5 digest matches")
    return Judgement(True, f"GET {url.path}: {status}")


def dav_classes(header: str | None) -> tuple[str, ...]:
    """The DAV compliance classes an OPTIONS answer's `DAV:` header names (`1, 2, <http://...>`)."""
    if not header:
        return ()
    return tuple(c.strip() for c in header.split(",") if c.strip())


def judge_dav(status: int, header: str | None, path: str) -> Judgement:
    """OPTIONS level: a 2xx answer whose DAV header names class 1."""
    classes = dav_classes(header)
    if not 200 <= status <= 299:
        return Judgement(False, f"OPTIONS {path}: status {status}")
    if "1" not in classes:
        return Judgement(False, f"OPTIONS {path}: no WebDAV (DAV header {header!r})")
    return Judgement(True, f"OPTIONS {path}: DAV {','.join(classes)}")


def judge_propfind(status: int, path: str) -> Judgement:
    """PROPFIND level: depth 0 answers 207 Multi-Status."""
    if status != 207:
        return Judgement(False, f"PROPFIND {path}: status {status}, expected 207")
    return Judgement(True, f"PROPFIND {path}: 207")


def judge_canary(method: str, status: int, path: str) -> Judgement:
    """Canary level: HEAD and GET of the canary answer 2xx; 404 says the canary is missing."""
    if status == 404:
        return Judgement(False, f"{method} {path}: 404, the canary is missing")
    if not 200 <= status <= 299:
        return Judgement(False, f"{method} {path}: status {status}")
    return Judgement(True, f"{method} {path}: {status}")


def certificate_days_left(not_after: str, now: float) -> float:
    """Days from `now` (UNIX time) until a certificate's `notAfter` (as `ssl` prints it)."""
    return (ssl.cert_time_to_seconds(not_after) - now) / 86400.0


def judge_expiry(days_left: float, warn_days: int | None) -> Judgement:
    """Up either way; a warning when the certificate expires within `warn_days`."""
    if warn_days is not None and days_left < warn_days:
        return Judgement(True, f"warning: certificate expires in {days_left:.1f} days (< {warn_days})")
    return Judgement(True, f"certificate valid for {days_left:.0f} more days")


def describe_verify_error(code: int, message: str) -> str:
    """A short reason for a failed certificate verification."""
    if code == _CERT_EXPIRED:
        return "certificate has expired"
    if code == _CERT_NOT_YET_VALID:
        return "certificate is not yet valid"
    if code == _HOSTNAME_MISMATCH:
        return f"certificate does not name the host ({message})"
    return f"certificate not trusted ({message})"


# ------------------------------------------------------------------------------------ the checker


def _host(dest: RealKey) -> str:
    return f"[{dest.addr}]" if dest.addr.version == 6 else str(dest.addr)


def _verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _Down(Exception):
    """A level failed: the reason."""


@register_checker
class HttpChecker(Checker):
    """keepalived HTTP_GET (and the WebDAV levels) over plain HTTP."""

    kind = "http"
    tls = False

    def __init__(
        self,
        *,
        urls: Sequence[HttpUrl | dict[str, Any]] = (),
        virtualhost: str | None = None,
        level: str = D.HTTP_CHECK_LEVEL,
        canary_path: str | None = None,
        sni: bool = False,
        tls_verify: bool = True,
        ca_file: str | None = None,
        cert_warn_days: int | None = None,
        http_protocol: str = D.HTTP_PROTOCOL,
        connect_ip: str | None = None,
        connect_port: int | None = None,
        bindto: str | None = None,
        bind_port: int = 0,
        bind_if: str | None = None,
    ) -> None:
        super().__init__(urls=urls, virtualhost=virtualhost, level=level, canary_path=canary_path)
        if level not in LEVELS:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        if level == "canary" and not canary_path:
            raise ValueError("level 'canary' needs a canary path")
        if bind_port:
            raise ValueError("bind_port is not supported by the http/https checkers")
        if bind_if:
            raise ValueError("bind_if is not supported by the http/https checkers")
        self.urls = tuple(u if isinstance(u, HttpUrl) else HttpUrl.model_validate(u) for u in urls)
        self.virtualhost = virtualhost
        self.level = level
        self.canary_path = canary_path
        self.sni = sni
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self.cert_warn_days = cert_warn_days
        self.http_protocol = http_protocol
        self.conn = ConnectOptions(connect_ip, connect_port, bindto, 0, None)

    # -- TLS -----------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = (
            ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        )
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _server_name(self, dest: RealKey) -> str | None:
        """The TLS name: the virtualhost with enable_sni (or when verifying, to check the name)."""
        if self.virtualhost and (self.sni or self.tls_verify):
            return self.virtualhost
        return None

    # -- one run -------------------------------------------------------------------------------
    async def check(self, target: RealKey, *, timeout_s: float) -> CheckResult:
        """Run the levels up to `self.level` against `target`; never raises."""
        dest = self.conn.destination(target)
        start = time.monotonic()
        scheme = "https" if self.tls else "http"
        transport = httpx.AsyncHTTPTransport(
            verify=self._ssl_context() if self.tls else False,
            local_address=str(self.conn.bindto) if self.conn.bindto is not None else None,
            retries=0,
        )
        notes: list[str] = []
        days_left: float | None = None
        try:
            async with httpx.AsyncClient(
                transport=transport,
                base_url=f"{scheme}://{_host(dest)}:{dest.port}",
                timeout=timeout_s,
                follow_redirects=False,
                trust_env=False,
            ) as client:
                days_left = await self._levels(client, dest, notes)
        except _Down as down:
            return CheckResult(Verdict.DOWN, str(down), time.monotonic() - start, cert_days_left=days_left)
        except httpx.TimeoutException:
            return CheckResult(
                Verdict.DOWN, f"{scheme} {dest}: no answer within {timeout_s:g} s", time.monotonic() - start
            )
        except httpx.HTTPError as exc:
            verify = _verify_error(exc)
            reason = (
                describe_verify_error(verify.verify_code, verify.verify_message)
                if verify is not None
                else _describe(exc)
            )
            return CheckResult(Verdict.DOWN, f"{scheme} {dest}: {reason}", time.monotonic() - start)
        except (OSError, ssl.SSLError) as exc:  # pragma: no cover - httpx wraps these
            return CheckResult(Verdict.DOWN, f"{scheme} {dest}: {exc}", time.monotonic() - start)
        return CheckResult(Verdict.UP, "; ".join(notes), time.monotonic() - start, cert_days_left=days_left)

    def _headers(self, dest: RealKey, url_vhost: str | None = None) -> dict[str, str]:
        vhost = url_vhost or self.virtualhost
        headers = {
            "Host": vhost if vhost else f"{_host(dest)}:{dest.port}",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
        }
        if self.http_protocol in ("1.0C", "1.1"):
            headers["Connection"] = "close"
        return headers

    def _extensions(self, dest: RealKey, url_vhost: str | None = None) -> dict[str, Any]:
        if not self.tls:
            return {}
        name = (url_vhost if url_vhost and (self.sni or self.tls_verify) else None) or self._server_name(dest)
        return {"sni_hostname": name} if name else {}

    async def _request(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        dest: RealKey,
        *,
        url_vhost: str | None = None,
        extra: dict[str, str] | None = None,
        want_body: bool = False,
    ) -> tuple[httpx.Response, str | None, float | None]:
        """Send one request; return the response, the body's MD5 (when asked) and the days the
        certificate has left (HTTPS with verification)."""
        headers = self._headers(dest, url_vhost)
        headers.update(extra or {})
        request = client.build_request(
            method, path, headers=headers, extensions=self._extensions(dest, url_vhost)
        )
        response = await client.send(request, stream=True)
        days: float | None = None
        try:
            if self.tls:
                stream = response.extensions.get("network_stream")
                sslobj = stream.get_extra_info("ssl_object") if stream is not None else None
                cert = sslobj.getpeercert() if sslobj is not None else None
                if cert and "notAfter" in cert:
                    days = certificate_days_left(str(cert["notAfter"]), time.time())
            digest: str | None = None
            if want_body:
                md5 = hashlib.md5(usedforsecurity=False)
                async for chunk in response.aiter_raw():
                    md5.update(chunk)
                digest = md5.hexdigest()
            return response, digest, days
        finally:
            await response.aclose()

    async def _levels(self, client: httpx.AsyncClient, dest: RealKey, notes: list[str]) -> float | None:
        days: float | None = None
        urls = self.urls or (HttpUrl(path="/"),)
        for url in urls:
            response, md5, d = await self._request(
                client, "GET", url.path, dest, url_vhost=url.virtualhost, want_body=url.digest is not None
            )
            days = d if d is not None else days
            j = judge_url(url, response.status_code, md5)
            if not j.ok:
                raise _Down(j.reason)
            notes.append(j.reason)
        rank = LEVELS.index(self.level)
        path = urls[0].path
        if rank >= LEVELS.index("options"):
            response, _md5, _d = await self._request(client, "OPTIONS", path, dest)
            j = judge_dav(response.status_code, response.headers.get("DAV"), path)
            if not j.ok:
                raise _Down(j.reason)
            notes.append(j.reason)
        if rank >= LEVELS.index("propfind"):
            response, _md5, _d = await self._request(
                client, "PROPFIND", path, dest, extra={"Depth": "0", "Content-Length": "0"}
            )
            j = judge_propfind(response.status_code, path)
            if not j.ok:
                raise _Down(j.reason)
            notes.append(j.reason)
        if rank >= LEVELS.index("canary"):
            assert self.canary_path is not None
            for method in ("HEAD", "GET"):
                response, _md5, _d = await self._request(
                    client, method, self.canary_path, dest, want_body=method == "GET"
                )
                j = judge_canary(method, response.status_code, self.canary_path)
                if not j.ok:
                    raise _Down(j.reason)
            notes.append(f"canary {self.canary_path}: HEAD and GET 2xx")
        if days is not None:
            notes.append(judge_expiry(days, self.cert_warn_days).reason)
        return days


@register_checker
class HttpsChecker(HttpChecker):
    """keepalived SSL_GET (and the WebDAV levels) over TLS, with certificate checks."""

    kind = "https"
    tls = True


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending" in text:
        return "empty answer (no data received)"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None and not isinstance(seen, ssl.SSLError):
            return describe_os_error(seen)
        seen = seen.__cause__ or seen.__context__
    if "connection attempts failed" in text:
        return "connection refused"  # anyio's summary of refused connects to every address
    return text


# ------------------------------------------------------------------------------ from the site's spec


def options_from_spec(spec: CheckSpec, real: RealKey) -> dict[str, Any]:
    """`create_checker("http"|"https", **options)` options that carry out a resolved HTTP check of `real`."""
    h = spec.http
    if h is None:
        raise ValueError(f"{spec.target}: an {spec.kind} check without its HTTP settings")
    opts: dict[str, Any] = {
        "urls": h.urls,
        "virtualhost": h.virtualhost,
        "level": h.level,
        "canary_path": h.canary_path,
        "sni": h.sni,
        "tls_verify": h.tls_verify,
        "ca_file": h.ca_file,
        "cert_warn_days": h.cert_warn_days,
        "http_protocol": h.http_protocol,
    }
    if spec.target.addr != real.addr:
        opts["connect_ip"] = str(spec.target.addr)
    if spec.target.port != real.port:
        opts["connect_port"] = spec.target.port
    if spec.bindto is not None:
        opts["bindto"] = str(spec.bindto)
    return opts


# ------------------------------------------------------------------------ `gridlb check http|https`


def add_cli_options(p: Any) -> None:
    """The options of `gridlb check http|https` (an argparse parser)."""
    p.add_argument(
        "--url", action="append", default=[], metavar="PATH", help="a url path (repeatable; default /)"
    )
    p.add_argument(
        "--digest", metavar="HEX", help="MD5 the body of the last --url must have (keepalived digest)"
    )
    p.add_argument(
        "--status-code", metavar="CODES", help="codes/ranges the last --url may answer, e.g. 200-299,404"
    )
    p.add_argument("--virtualhost", metavar="NAME", help="Host: header (and TLS name)")
    p.add_argument("--sni", action="store_true", help="send the virtualhost as TLS SNI (enable_sni)")
    p.add_argument("--level", choices=LEVELS, default=D.HTTP_CHECK_LEVEL)
    p.add_argument("--canary", metavar="PATH", help="file HEAD and GET must find (canary level)")
    p.add_argument("--ca-file", metavar="PEM", help="CA certificates to verify the server with")
    p.add_argument("--no-verify", action="store_true", help="check no certificate (keepalived's SSL_GET)")
    p.add_argument(
        "--cert-warn-days", type=int, metavar="N", help="warn when the certificate expires within N days"
    )


def cli_options(args: Any) -> dict[str, Any]:
    """Checker options from parsed `gridlb check http|https` arguments (ValueError on bad values)."""
    urls: list[dict[str, Any]] = [{"path": p} for p in args.url] or [{"path": "/"}]
    if args.digest:
        urls[-1]["digest"] = args.digest
    if args.status_code:
        urls[-1]["status_code"] = args.status_code.replace(",", " ").split()
    try:
        checked = [HttpUrl.model_validate(u) for u in urls]
    except ValueError as exc:
        raise ValueError(str(exc).splitlines()[-1].strip()) from None
    return {
        "urls": checked,
        "virtualhost": args.virtualhost,
        "sni": args.sni,
        "level": args.level,
        "canary_path": args.canary,
        "tls_verify": not args.no_verify,
        "ca_file": args.ca_file,
        "cert_warn_days": args.cert_warn_days,
    }
