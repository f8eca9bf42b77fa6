"""The `stt-hf` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys


def _models(args: argparse.Namespace) -> int:
    import timm

    from .profiling import model_complexity

    names = timm.list_models(args.filter)
    if not names:
        print(f"no registered model matches {args.filter!r}", file=sys.stderr)
        return 1
    print(f"{'model':28s} {'input':>12s} {'params (M)':>11s} {'GMACs':>8s}")
    for name in names:
        row = model_complexity(name)
        size = "x".join(str(s) for s in row["input_size"])
        print(f"{name:28s} {size:>12s} {row['params_m']:11.2f} {row['gmacs']:8.3f}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stt-hf",
        description="STT (Synthesizing Tensor Transformations) attention for timm and transformers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    models = sub.add_parser("models", help="list the registered stt models with params and GMACs")
    models.add_argument("--filter", default="stt_*", help="timm name pattern (default: stt_*)")
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    import stt_hf  # noqa: F401  (registers the models with timm and transformers)

    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
