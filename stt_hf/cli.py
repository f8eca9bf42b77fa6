"""The `stt-hf` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

# Subcommands whose own parser (HfArgumentParser) reads the rest of the command line.
PASSTHROUGH = {
    "train": ("stt_hf.train", "train or fine-tune a classifier with the HF Trainer (see stt-hf train -h)"),
    "train-caption": ("stt_hf.train_caption",
                      "train an STT-encoder captioner with the Seq2SeqTrainer (stt-hf train-caption -h)"),
}


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


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import run

    run(args)
    return 0


def _eval_caption(args: argparse.Namespace) -> int:
    from .evaluation_caption import run

    run(args)
    return 0


def _push(args: argparse.Namespace) -> int:
    from .publish import push_folder

    push_folder(args.folder, args.repo_id, token=args.token, private=args.private)
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

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)

    from .evaluation import add_arguments

    evaluate = sub.add_parser("eval", help="score a checkpoint on a dataset split, write metrics JSON")
    add_arguments(evaluate)
    evaluate.set_defaults(func=_eval)

    from .evaluation_caption import add_arguments as add_caption_arguments

    evaluate_caption = sub.add_parser("eval-caption", help="score a captioner on a dataset split, write JSON")
    add_caption_arguments(evaluate_caption)
    evaluate_caption.set_defaults(func=_eval_caption)

    from .convert import add_convert_parser

    add_convert_parser(sub)

    from .benchmark import add_bench_parser
    from .visualize import add_visualize_parser

    add_bench_parser(sub)
    add_visualize_parser(sub)

    push = sub.add_parser("push", help="publish a saved model folder to a Hugging Face Hub")
    push.add_argument("folder", help="folder written by stt-hf train (or save_pretrained)")
    push.add_argument("--repo_id", required=True, help="ORG/NAME on the Hub")
    push.add_argument("--token", default=None, help="default: HF_TOKEN or the stored login")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        importlib.import_module(PASSTHROUGH[argv[0]][0]).main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    import stt_hf  # noqa: F401  (registers the models with timm and transformers)

    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
