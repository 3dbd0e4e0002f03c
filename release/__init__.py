"""Release tooling: ``make dist``."""
