"""Turns the config's resolved `CheckSpec` of one real server into a checker and a `CheckPolicy`.

The director calls `from_check_spec(vs.check_for(rs, settings), real=rs.real_key(vs), vips=...)` for
every real server and hands the pair to `HealthRunner.set` / `.sync`. `vips` are the service's
virtual addresses: a GridFTP server whose PASV advertises one of them, or an XRootD redirector that
sends clients to one, is reported as misconfigured. Every checker option of the site schema is
passed on here, and nowhere else.

`site_check_problems(site)` lists the checks this host cannot run as written (a MISC_CHECK user that
does not exist; a script keepalived's `enable_script_security` would refuse; an option the checker
rejects; more than one checker block for one real server, which keepalived would all require to
pass and gridlb does not combine), each as a `ConfigError` at its file and line: lint reports them
and the director refuses to start (or reload) with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gridlb.config.load import Site
from gridlb.config.schema import (
    UNSUPPORTED_CHECKERS,
    CheckKind,
    CheckSpec,
    MiscCheck,
    RealServer,
    VirtualServer,
)
from gridlb.errors import ConfigError
from gridlb.health.base import Checker, create_checker
from gridlb.health.http import options_from_spec
from gridlb.health.script import ScriptChecker
from gridlb.health.tracker import CheckPolicy
from gridlb.table import IPAddress, RealKey


def policy_from_spec(spec: CheckSpec) -> CheckPolicy:
    """Return the tracker policy of `spec` (for script checks the time limit is misc_timeout)."""
    timeout_s = spec.connect_timeout_s
    if spec.kind is CheckKind.SCRIPT and spec.script_timeout_s is not None:
        timeout_s = spec.script_timeout_s
    return CheckPolicy(
        delay_loop_s=spec.delay_loop_s,
        connect_timeout_s=timeout_s,
        retry=spec.retry,
        delay_before_retry_s=spec.delay_before_retry_s,
        alpha=spec.alpha,
        warmup_s=spec.warmup_s,
        inhibit_on_failure=spec.inhibit_on_failure,
    )


def from_check_spec(
    spec: CheckSpec, *, real: RealKey | None = None, vips: Iterable[IPAddress | str] = ()
) -> tuple[Checker, CheckPolicy] | None:
    """Return (checker, policy) for `spec`, or None when the real server has no check (always up).

    `real` is the real server's own key; when `spec.target` differs (connect_ip / connect_port) the
    checker is told to connect there instead.
    """
    if spec.kind is CheckKind.NONE:
        return None
    policy = policy_from_spec(spec)
    if spec.kind is CheckKind.SCRIPT:
        if not spec.script:
            raise ValueError(f"{spec.target}: a script check without misc_path")
        return create_checker(
            "script", path=spec.script, dynamic=spec.script_dynamic, user=spec.script_user
        ), policy
    connect: dict[str, object] = {
        "bindto": str(spec.bindto) if spec.bindto is not None else None,
        "bind_port": spec.bind_port or 0,
        "bind_if": spec.bind_if,
    }
    if real is not None and spec.target != real:
        connect.update(connect_ip=str(spec.target.addr), connect_port=spec.target.port)
    if spec.kind is CheckKind.TCP:
        return create_checker("tcp", **connect), policy
    if spec.kind in (CheckKind.HTTP, CheckKind.HTTPS):
        return create_checker(spec.kind.value, **options_from_spec(spec, real or spec.target)), policy
    if spec.kind is CheckKind.XROOTD:
        return (
            create_checker(
                "xrootd",
                level=spec.xrootd_level,
                user=spec.xrootd_user,
                canary_path=spec.xrootd_canary_path,
                check_redirect=spec.xrootd_check_redirect,
                vips=[str(v) for v in vips],
                **connect,
            ),
            policy,
        )
    return (
        create_checker(
            "gridftp",
            level=spec.gridftp_level,
            canary_path=spec.gridftp_canary_path,
            data_address_check=spec.gridftp_check_data_address,
            user=spec.gridftp_user,
            password=spec.gridftp_password,
            vips=[str(v) for v in vips],
            **connect,
        ),
        policy,
    )


def site_check_problems(site: Site) -> list[ConfigError]:
    """Return every check of `site` this host cannot run as written (see the module docstring)."""
    problems: list[ConfigError] = []
    for name, vs in site.virtual_servers.items():
        origin = site.origin("virtual_servers", name)
        for i, rs in enumerate(vs.real_servers):
            holder: RealServer | VirtualServer = rs if rs.checker_blocks else vs
            base: tuple[str | int, ...] = ("virtual_servers", name)
            if rs.checker_blocks:
                base = (*base, "real_servers", i)
            specs = vs.checks_for(rs, site.gridlb)
            # the blocks gridlb runs (the others are lint's `checker-not-run`), in `checkers` order
            runnable = [(k, b) for k, b in holder.checker_blocks if k not in UNSUPPORTED_CHECKERS]
            for n, ((field, block), spec) in enumerate(zip(runnable, specs, strict=True)):
                block_path = (*base, field)
                if n > 0 and (holder is rs or i == 0):
                    first = runnable[0][0]
                    message = (
                        f"a second checker on one real server: gridlb runs one checker per real server "
                        f"(keepalived would need every one to pass); keep one ({first} is the first)"
                    )
                    problems.append(
                        ConfigError(message, location=origin.locate(*block_path), key=origin.key(*block_path))
                    )
                    continue
                for key_path, message in _spec_problems(spec, block, block_path, rs.real_key(vs)):
                    f = origin
                    if key_path[0] == "gridlb":
                        f = next((x for x in reversed(site.files) if x.gridlb is not None), origin)
                    problems.append(ConfigError(message, location=f.locate(*key_path), key=f.key(*key_path)))
    return list(dict.fromkeys(problems))


def _spec_problems(
    spec: CheckSpec, block: object, block_path: tuple[str | int, ...], real: RealKey
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if spec.kind is CheckKind.SCRIPT:
        assert isinstance(block, MiscCheck)
        user_path = (*block_path, "user") if block.user else ("gridlb", "script_user")
        try:
            checker = ScriptChecker(path=spec.script or "", user=spec.script_user)
        except ValueError as exc:
            yield (
                (user_path if spec.script_user and "exist" in str(exc) else (*block_path, "misc_path")),
                str(exc),
            )
            return
        problem = checker.problem()
        if problem is not None:
            yield (*block_path, "misc_path"), problem
        return
    try:
        from_check_spec(spec, real=real)
    except (ValueError, TypeError) as exc:
        yield block_path, str(exc)
