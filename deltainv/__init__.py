"""deltainv: fast, stable triangular inversion for delta-rule linear attention.

The library lives in sub-packages mapped from the repository's top-level folders:

- ``deltainv.kernels``: inversion methods (PyTorch reference, later Triton), the method registry,
  the precision vocabulary, engine-layout ``solve_tril`` and input generators;
- ``deltainv.eval``: numerics reports (and later the accuracy-parity gate);
- ``deltainv.plugin``, ``deltainv.models``, ``deltainv.bench``: engine hooks, shipped models and
  benchmarks.
"""

__version__ = "0.1.0"
