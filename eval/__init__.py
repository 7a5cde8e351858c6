"""Numerical-error reports (``deltainv numerics``) and, later, the lm-eval accuracy-parity gate."""
