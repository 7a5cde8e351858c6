"""The accuracy-parity gate: lm-eval on a baseline and a candidate, compared item by item."""
