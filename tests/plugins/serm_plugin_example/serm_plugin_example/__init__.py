"""Example SERM plugins (entry points in pyproject.toml)."""
