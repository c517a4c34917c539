"""Health checking: one module per checker kind behind a registry, and a shared pure tracker."""
