"""Example site files shipped with gridlb (read them with `importlib.resources.files("gridlb.examples")`)."""
