"""The director: composes config, health, schedulers, dataplane, VRRP and the control API."""
