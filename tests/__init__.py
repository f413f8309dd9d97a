"""The test suite: an importable package, so shared helpers are imported by their full names (tests.helpers)."""
