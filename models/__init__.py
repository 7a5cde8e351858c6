"""Tiny configs and small trained delta-rule models shipped for offline demos and tests."""
