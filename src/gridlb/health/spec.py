"""Turns the config's resolved `CheckSpec` of one real server into a checker and a `CheckPolicy`.

The director calls `from_check_spec(vs.check_for(rs, settings), real=rs.real_key(vs), vips=...)` for
every real server and hands the pair to `HealthRunner.set` / `.sync`. `vips` are the service's
virtual addresses: a GridFTP server whose PASV advertises one of them is reported as misconfigured.
"""

from __future__ import annotations

from collections.abc import Iterable

from gridlb.config.schema import CheckKind, CheckSpec
from gridlb.health.base import Checker, create_checker
from gridlb.health.http import options_from_spec
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
    spec: CheckSpec, *, real: RealKey | None = None, vips: Iterable[IPAddress] = ()
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
