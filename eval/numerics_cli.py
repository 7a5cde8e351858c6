"""``deltainv numerics``: argument parsing and output for :mod:`deltainv.eval.numerics`."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from deltainv.kernels import CHUNK_SIZES, METHODS, PRECISIONS
    from deltainv.kernels.inputs import INPUTS

    p = sub.add_parser(
        "numerics",
        help="error of every inversion method against float64 (reproduces the paper's stability study)",
        description=(
            "Run methods x precisions x chunk sizes x input generators against a float64 reference and "
            "report relative Frobenius error, max abs error, residual ||(I+A)X - I||_F and non-finite "
            "counts, then check the paper's findings. Exit code 1 if a finding does not hold."
        ),
    )
    p.add_argument("--quick", action="store_true", help="32 matrices per cell instead of 256 (well under a minute)")
    p.add_argument("-n", type=int, default=None, help="matrices per (input, C); overrides --quick")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG (heatmap of every cell + the paper's findings)")
    p.add_argument("--markdown", metavar="PATH", help="write the tables and findings as Markdown")
    p.add_argument("--methods", help=f"comma list (default all: {','.join(METHODS)})")
    p.add_argument("--precisions", help=f"comma list (default all: {','.join(PRECISIONS)})")
    p.add_argument("--sizes", help=f"comma list of C (default {','.join(map(str, CHUNK_SIZES))})")
    p.add_argument("--inputs", help=f"comma list (default all: {','.join(INPUTS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option for the methods that take it, e.g. base_precision=tf32x3 (repeatable)")
    p.add_argument("--no-check", action="store_true", help="exit 0 even if a finding does not hold")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deltainv.eval import numerics as nm
    from deltainv.kernels import CHUNK_SIZES, METHODS, PRECISIONS
    from deltainv.kernels.inputs import INPUTS

    try:
        picked = {
            "methods": nm.parse_list(args.methods, list(METHODS)),
            "precisions": nm.parse_list(args.precisions, PRECISIONS),
            "sizes": nm.parse_list(args.sizes, CHUNK_SIZES, int),
            "inputs": nm.parse_list(args.inputs, list(INPUTS)),
        }
    except ValueError as e:
        print(f"deltainv numerics: {e}", file=sys.stderr)
        return 2
    kw = {k: v for k, v in picked.items() if v is not None}
    options = []
    specs = {name: spec for m in METHODS.values() for name, spec in m.options.items()}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or key not in specs:
            print(f"deltainv numerics: --option wants KEY=VALUE with KEY in {', '.join(sorted(specs))}; got {item!r}",
                  file=sys.stderr)
            return 2
        try:
            options.append((key, specs[key].parse(value)))
        except ValueError as e:
            print(f"deltainv numerics: {e}", file=sys.stderr)
            return 2
    if options:
        kw["options"] = tuple(options)
    config = nm.NumericsConfig.quick(**kw) if args.quick else nm.NumericsConfig(**kw)
    if args.n is not None:
        if args.n < 1:
            print("deltainv numerics: -n must be at least 1", file=sys.stderr)
            return 2
        config = nm.NumericsConfig(**{**config.__dict__, "n": args.n})
    try:
        nm.recipes(config)  # every (method, precision, options) validated before the grid runs
    except (TypeError, ValueError) as e:
        print(f"deltainv numerics: {e}", file=sys.stderr)
        return 2
    report = nm.run(config)
    print(nm.format_table(report))
    if args.json:
        nm.write_json(report, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(nm.format_markdown(report))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        nm.plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    failed = [f for f in report.findings if f["holds"] is False]
    return 1 if failed and not args.no_check else 0
