"""The real-server side of direct routing: VIPs on lo, ARP suppressed, set up idempotently."""
