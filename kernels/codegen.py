"""Write (or ``--check``) every generated Triton module.

    .venv/bin/python -m deltainv.kernels.codegen           # regenerate
    .venv/bin/python -m deltainv.kernels.codegen --check   # exit 1 if a generated file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from .gdn.codegen import intra_module
from .tril.codegen import solve_tril_module

_HERE = Path(__file__).resolve().parent

GENERATED = {
    _HERE / "tril" / "_generated.py": solve_tril_module,
    _HERE / "gdn" / "_generated.py": intra_module,
}


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for path, build in GENERATED.items():
        text = build()
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
    if stale:
        print("stale generated files (run python -m deltainv.kernels.codegen): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
