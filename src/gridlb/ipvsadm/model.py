"""How ipvsadm's numbers map onto the table model: scheduler-flag bits, netmasks, forwarding, tunnels."""

from __future__ import annotations

from ipaddress import IPv4Address

from gridlb.sched import scheduler_names
from gridlb.table import ForwardMethod, ServiceKey, ServiceSpec

SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3 = 0x08, 0x10, 0x20

#: Kernel scheduler modules (Linux 6.x): the ones gridlb.sched implements, all fourteen.
KERNEL_SCHEDULERS = frozenset(scheduler_names())
#: Persistence engines (PERSISTENCE_ENGINES).
PERSISTENCE_ENGINES = frozenset({"sip"})

_FLAG_BITS = {
    "flag-1": SVC_F_SCHED1,
    "flag-2": SVC_F_SCHED2,
    "flag-3": SVC_F_SCHED3,
    "sh-fallback": SVC_F_SCHED1,
    "sh-port": SVC_F_SCHED2,
    "mh-fallback": SVC_F_SCHED1,
    "mh-port": SVC_F_SCHED2,
}


def flag_names(scheduler: str, bits: int) -> frozenset[str]:
    """Return the scheduler-flag names for `bits`, named as ipvsadm prints them for `scheduler`."""
    names = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}.get(
        scheduler, ("flag-1", "flag-2")
    )
    out = set()
    if bits & SVC_F_SCHED1:
        out.add(names[0])
    if bits & SVC_F_SCHED2:
        out.add(names[1])
    if bits & SVC_F_SCHED3:
        out.add("flag-3")
    return frozenset(out)


def flag_bits(flags: frozenset[str]) -> int:
    """Return the IP_VS_SVC_F_SCHED* bits of the named flags (unknown names are ignored)."""
    bits = 0
    for name in flags:
        bits |= _FLAG_BITS.get(name, 0)
    return bits


def netmask_value(key: ServiceKey, spec: ServiceSpec) -> int:
    """Return the kernel's netmask: an IPv4 mask as an integer, or an IPv6 prefix length."""
    if key.af == 6:
        return int(spec.netmask) if spec.netmask else 128
    return int(IPv4Address(spec.netmask)) if spec.netmask else 0xFFFFFFFF


def netmask_text(af: int, value: int) -> str:
    """Return the ServiceSpec.netmask text for a kernel netmask ("" for a host mask)."""
    if af == 6:
        return "" if value == 128 else str(value)
    return "" if value == 0xFFFFFFFF else str(IPv4Address(value))


FWD_BY_NUMBER = {m.value: m for m in ForwardMethod}


def fwd_switch(method: ForwardMethod) -> str:
    """Return the -S switch of a forwarding method (Local is saved as -g, as ipvsadm does)."""
    return {ForwardMethod.MASQ: "-m", ForwardMethod.TUNNEL: "-i"}.get(method, "-g")
