"""Which directors a site describes, each as one view to render, including the peer a single file implies.

A site given as one file per director (two files: the seed's "the source/peer IPs would be different
for the other host's .yaml file") is rendered file by file, as written. A site given as a single
director file (the seed's own text) also yields the peer director's view, derived by this rule:

* the peer is named `<name>-peer`;
* every instance starts as BACKUP, at priority `max(1, priority - PEER_PRIORITY_DROP)` (50 below);
* unicast: the peer's source is the instance's first unicast peer, its peers are the instance's source
  followed by the remaining peers (an instance with peers but no `unicast_source_ip` cannot be
  mirrored: that is an error asking for the second file);
* multicast: `mcast_src_ip` is left out (keepalived then uses the interface's own address);
* everything else (interfaces, VIPs, services, scripts) is the same on both directors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gridlb.config.load import Site
from gridlb.config.schema import (
    GridlbSettings,
    InitialState,
    KeepalivedExtras,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
)
from gridlb.errors import ConfigError

#: How far below the given director's priority the derived peer runs.
PEER_PRIORITY_DROP = 50

#: Suffix of the derived peer director's name.
PEER_SUFFIX = "-peer"


@dataclass(frozen=True)
class DirectorView:
    """What one director runs: its instances, services and scripts, and where they came from."""

    name: str
    sources: tuple[str, ...]
    vrrp_instances: Mapping[str, VrrpInstance]
    virtual_servers: Mapping[str, VirtualServer]
    vrrp_scripts: Mapping[str, VrrpScript]
    gridlb: GridlbSettings
    derived_from: str | None = None  # the director this peer view was derived from
    keepalived: KeepalivedExtras = field(
        default_factory=KeepalivedExtras.empty
    )  # sync groups, static_*, mail


def peer_priority(priority: int) -> int:
    """The derived peer's priority: PEER_PRIORITY_DROP below, at least 1."""
    return max(1, priority - PEER_PRIORITY_DROP)


def _view(site: Site, name: str) -> DirectorView:
    return DirectorView(
        name=name,
        sources=tuple(f.path for f in site.files),
        vrrp_instances=dict(site.vrrp_instances),
        virtual_servers=dict(site.virtual_servers),
        vrrp_scripts=dict(site.vrrp_scripts),
        gridlb=site.gridlb,
        keepalived=site.keepalived,
    )


def peer_instance(name: str, inst: VrrpInstance) -> VrrpInstance:
    """The instance as the peer director runs it (see the module's rule)."""
    update: dict[str, object] = {
        "state": InitialState.BACKUP,
        "priority": peer_priority(inst.priority),
        "multicast_source_ip": None,
    }
    if inst.unicast_peers:
        if inst.unicast_source_ip is None:
            raise ConfigError(
                f"instance {name} has unicast peers but no unicast_source_ip, so the peer director's "
                "config cannot be derived; give both director files",
                key=f"keepalived::vrrp_instances.{name}.unicast_source_ip",
            )
        update["unicast_source_ip"] = inst.unicast_peers[0]
        update["unicast_peers"] = (inst.unicast_source_ip, *inst.unicast_peers[1:])
    return inst.model_copy(update=update)


def peer_view(view: DirectorView) -> DirectorView:
    """The peer director's view derived from a single director's."""
    return DirectorView(
        name=view.name + PEER_SUFFIX,
        sources=view.sources,
        vrrp_instances={n: peer_instance(n, i) for n, i in view.vrrp_instances.items()},
        virtual_servers=view.virtual_servers,
        vrrp_scripts=view.vrrp_scripts,
        gridlb=view.gridlb,
        derived_from=view.name,
        keepalived=view.keepalived,
    )


def director_views(site: Site) -> list[DirectorView]:
    """Every director of `site`, in file order; a single director file also yields its derived peer."""
    names = site.directors
    if len(names) >= 2:
        return [_view(site.for_director(n), n) for n in names]
    if len(names) == 1:
        own = _view(site.for_director(names[0]), names[0])
        for name, inst in own.vrrp_instances.items():
            if inst.unicast_peers and inst.unicast_source_ip is None:
                origin = site.origin("vrrp_instances", name)
                raise ConfigError(
                    "unicast peers but no unicast_source_ip, so the peer director's config cannot be "
                    "derived; add unicast_source_ip or give both director files",
                    location=origin.locate("vrrp_instances", name, "unicast_peers"),
                    key=origin.key("vrrp_instances", name, "unicast_peers"),
                )
        return [own, peer_view(own)]
    name = site.gridlb.director_name or (site.files[0].director if site.files else "director")
    return [_view(site, name)]


def find_view(views: list[DirectorView], name: str) -> DirectorView:
    """The view of director `name` (a file's director or a derived `<name>-peer`) among `views`."""
    for view in views:
        if view.name == name:
            return view
    known = ", ".join(v.name for v in views)
    raise ConfigError(f"no director named {name!r} (directors: {known})", key="--director")
