"""The director's view of a validated site: service plans, checks per pair, settings, and the
dataplane check that start and reload share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gridlb.config.load import ConfigErrors, Site, load_site
from gridlb.config.schema import CheckSpec, GridlbSettings
from gridlb.dataplane.base import (
    DataplaneFactory,
    Severity,
    get_factory,
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
        notices = tuple(f"{u}: that real server counts as up" for u in unsupported_checkers(site))
        return cls(plans, checks, site.gridlb, tuple(paths), notices)

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
        name = self.settings.dataplane
        try:
            factory = get_factory(name)
        except KeyError:
            raise ConfigError(f"no dataplane {name!r} in this build", key="gridlb.dataplane") from None
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
        if refused:
            more = f" (and {len(refused) - 1} more; `gridlb lint` lists them)" if len(refused) > 1 else ""
            raise ConfigError(f"{refused[0]}{more}", key="gridlb.dataplane")
        return factory, [*warnings, *self.notices]
