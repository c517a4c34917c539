"""Connection synchronisation between directors in the kernel IPVS sync format."""
