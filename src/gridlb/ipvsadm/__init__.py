"""ipvsadm-compatible views and edits of an IPVS table: option grammar, listings, save and restore."""
