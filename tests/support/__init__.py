"""Test support code (not part of the installed package)."""
