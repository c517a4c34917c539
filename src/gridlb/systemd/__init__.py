"""Running under systemd: the shipped unit files, sd_notify and the journal's native protocol."""
