"""deltainv: fast, stable triangular inversion for delta-rule linear attention.

The library lives in sub-packages mapped from the repository's top-level folders:

- ``deltainv.kernels``: inversion methods (PyTorch reference, later Triton), the method registry,
  the precision vocabulary, engine-layout ``solve_tril`` and input generators;
- ``deltainv.eval``: numerics reports (and later the accuracy-parity gate);
- ``deltainv.plugin``, ``deltainv.models``, ``deltainv.bench``: engine hooks, shipped models and
  benchmarks.
"""

__version__ = "0.1.0"

# RWKV-7 (fla's format) becomes loadable through transformers' Auto classes once they are imported;
# nothing is imported here (see deltainv/_transformers_hook.py).
from . import _transformers_hook as _hook  # noqa: E402

_hook.install()
del _hook
