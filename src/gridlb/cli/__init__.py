"""The `gridlb` command line."""
