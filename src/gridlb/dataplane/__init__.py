"""Dataplanes: kernel IPVS, userspace direct routing and the userspace TCP proxy."""
