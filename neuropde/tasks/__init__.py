"""Tasks: how models are trained (base, supervised operators, ...)."""
