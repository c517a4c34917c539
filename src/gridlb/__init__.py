"""gridlb: a load-balanced, highly available GridFTP endpoint (director, VRRP, health checks, tools)."""

__version__ = "0.1.0"
