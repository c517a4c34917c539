"""`gridlb vrrp run`: the VRRP-only daemon (like `keepalived -P`), defined in gridlb.vrrp.__main__."""

from gridlb.vrrp.__main__ import register

__all__ = ["register"]
