"""IPVS schedulers in pure Python, one module per algorithm, decided exactly as the kernel decides."""

from gridlb.sched.base import DestView, Flow, Scheduler, create_scheduler, register_scheduler, scheduler_names

__all__ = ["DestView", "Flow", "Scheduler", "create_scheduler", "register_scheduler", "scheduler_names"]
