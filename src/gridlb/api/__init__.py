"""The control API: versioned JSON messages over a Unix socket, with SO_PEERCRED authorisation."""
