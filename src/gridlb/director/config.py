"""The director's view of a validated site: service plans, checks per pair, settings, and the
dataplane check that start and reload share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gridlb.config.load import ConfigErrors, Site, load_site
from gridlb.config.schema import CheckKind, CheckSpec, GridftpService, GridlbSettings
from gridlb.dataplane.base import (
    DataplaneFactory,
    Severity,
    resolve_factory,
)
from gridlb.director.reconcile import (
    HealthKey,
    ServicePlan,
    plan_site,
)
from gridlb.errors import ConfigError
from gridlb.health.spec import site_check_problems
from gridlb.table import (
    ServiceKey,
)

# --- configuration --------------------------------------------------------------------------------


def _connection_sync(site: Site) -> tuple[GridlbSettings, list[str]]:
    """Honour keepalived's `lvs_sync_daemon_interface`: the dr dataplane syncs on it unless
    `gridlb.dr.sync_interface` names another interface; any other dataplane says it does not sync."""
    settings = site.gridlb
    named = [
        (f.path, name, inst.lvs_sync_daemon_interface)
        for f in site.files
        for name, inst in f.vrrp_instances.items()
        if inst.lvs_sync_daemon_interface
    ]
    if not named:
        return settings, []
    if settings.dataplane == "dr":
        if settings.dr.sync_interface is None:
            dr = settings.dr.model_copy(update={"sync_interface": named[0][2]})
            settings = settings.model_copy(update={"dr": dr})
        return settings, []
    return settings, [
        f"{path}: vrrp instance {name}: lvs_sync_daemon_interface {ifname}: the {settings.dataplane} "
        "dataplane does not sync connections; it is not used"
        for path, name, ifname in named
    ]


@dataclass(frozen=True, slots=True)
class DirectorConfig:
    """A validated site as the director uses it: service plans, checks per pair, gridlb settings."""

    plans: tuple[ServicePlan, ...]
    checks: Mapping[HealthKey, tuple[CheckSpec, ...]]
    settings: GridlbSettings = field(default_factory=GridlbSettings)
    paths: tuple[str, ...] = ()
    #: What the site asks that the director will not do (checkers it does not run), said at start.
    notices: tuple[str, ...] = ()

    @classmethod
    def from_site(cls, site: Site, paths: Sequence[str] = ()) -> DirectorConfig:
        """Return the director's view of `site`; ConfigErrors when a check cannot run on this host."""
        problems = site_check_problems(site)
        if problems:
            raise ConfigErrors(problems)
        from gridlb.config.lint import unsupported_checkers

        plans, checks = plan_site(site)
        notices = [f"{u}: that real server counts as up" for u in unsupported_checkers(site)]
        settings, sync_notices = _connection_sync(site)
        settings = gridftp_defaults(settings, checks)
        return cls(plans, checks, settings, tuple(paths), (*notices, *sync_notices))

    @classmethod
    def load(cls, paths: Sequence[str]) -> DirectorConfig:
        """Load and validate the site files `paths` (ConfigError names file, line and key)."""
        return cls.from_site(load_site(list(paths)), paths)

    def plan(self, key: ServiceKey) -> ServicePlan | None:
        """Return the plan of service `key`, or None."""
        for p in self.plans:
            if p.key == key:
                return p
        return None

    def check_dataplane(self) -> tuple[DataplaneFactory, list[str]]:
        """Return the site's dataplane factory and what it does differently from what the site says.

        Raises ConfigError (one line) when this machine cannot run that dataplane or a service asks
        what it cannot do. Start and reload both call this: a reload never accepts what a start
        would refuse.
        """
        try:  # `auto` resolves to the first dataplane that can run here
            factory, _ = resolve_factory(self.settings.dataplane)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="gridlb.dataplane") from None
        name = factory.name
        why = factory.unavailable()
        if why:
            raise ConfigError(f"the {name} dataplane cannot run here: {why}", key="gridlb.dataplane")
        refused: list[str] = []
        warnings: list[str] = []
        for plan in self.plans:
            forwarding = [r.spec.forward for r in plan.reals]
            for m in factory.capabilities.assess(plan.key, plan.spec, forwarding):
                text = f"service {m.service}: the {name} dataplane: {m.message}"
                (refused if m.severity is Severity.ERROR else warnings).append(text)
        if name != "proxy" and "workers" in self.settings.proxy.model_fields_set:
            unused = f"the {name} dataplane has no relay workers; it is not used"
            warnings.append(f"gridlb.proxy.workers: {unused}")
        if refused:
            more = f" (and {len(refused) - 1} more; `gridlb lint` lists them)" if len(refused) > 1 else ""
            raise ConfigError(f"{refused[0]}{more}", key="gridlb.dataplane")
        return factory, [*warnings, *self.notices]


def gridftp_defaults(
    settings: GridlbSettings, checks: Mapping[HealthKey, tuple[CheckSpec, ...]]
) -> GridlbSettings:
    """Return `settings` with a default `gridftp_services` entry for every service with a GRIDFTP_CHECK.

    Such a service is a GridFTP service: with no real server up its clients read the default 421 line.
    """
    named = dict(settings.gridftp_services)
    for (service, _), specs in checks.items():
        if service.addr is None or not any(c.kind is CheckKind.GRIDFTP for c in specs):
            continue
        if settings.gridftp_service(service) is None:
            named.setdefault(str(service).split(" ", 1)[1], GridftpService())
    if len(named) == len(settings.gridftp_services):
        return settings
    return settings.model_copy(update={"gridftp_services": named})
