"""Tiny configs and small trained delta-rule models shipped for offline demos and tests."""

from pathlib import Path

#: The shipped tiny Qwen3-Next hybrid (GDN + full attention, head dims 64): the embedded default of
#: ``deltainv serve`` and the subject of the offline parity gate. See docs/models.md and its card.
DEFAULT_MODEL = Path(__file__).resolve().parent / "qwen3_next_tiny"
