"""The `stt-hf` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Trainers: their own parser (HfArgumentParser over TrainingArguments) reads the rest of the command line.
TRAINERS = {
    "train": ("stt_hf.tasks.train",
              "train or fine-tune a classifier with the HF Trainer (see stt-hf train -h)"),
    "train-caption": ("stt_hf.tasks.train_caption",
                      "train an STT-encoder captioner with the Seq2SeqTrainer (stt-hf train-caption -h)"),
    "train-seg": ("stt_hf.tasks.train_seg",
                  "train a UperNet segmenter over an STT backbone with the HF Trainer (stt-hf train-seg -h)"),
    "write-shards": ("stt_hf.data.shards",
                     "write a sharded Parquet/WebDataset copy of a dataset, for train --streaming"),
    "bench-input": ("stt_hf.experiments.input_pipeline",
                    "images/s of decoding + the train transform per worker vs a model's training step"),
}
# Evaluators: (module with add_arguments and run, help, the kind of model folder it scores).
EVALUATORS = {
    "eval": ("stt_hf.tasks.evaluation", "score a checkpoint on a dataset split, write metrics JSON", "stt"),
    "eval-caption": ("stt_hf.tasks.evaluation_caption", "score a captioner on a dataset split, write JSON",
                     "vision-encoder-decoder"),
    "eval-seg": ("stt_hf.tasks.evaluation_seg",
                 "score a segmenter on a dataset split: metrics JSON, overlay PNG", "upernet"),
}
DEBUG_ENV = "STT_HF_DEBUG"
# Not --debug: that is a TrainingArguments flag, which the trainers' parsers own.
DEBUG_FLAG = "--stt_debug"
DEBUG_HELP = f"show the full traceback of an error (also: {DEBUG_ENV}=1)"


def _trainer(module: str):
    def train(args: argparse.Namespace) -> int:
        importlib.import_module(module).main(args.rest)
        return 0

    return train


def _evaluator(module: str, model_kind: str):
    def evaluate(args: argparse.Namespace) -> int:
        from .hf.convert import check_model_folder

        task = importlib.import_module(module)
        task.check_arguments(args)  # the flag values first: no model is read for a bad one
        _check_model_path(args.model)
        check_model_folder(args.model, (model_kind,))
        task.run(args)
        return 0

    return evaluate


def _models(args: argparse.Namespace) -> int:
    import timm

    from .reporting.profiling import model_complexity

    names = timm.list_models(args.filter)
    if not names:
        raise ValueError(f"no registered model matches --filter {args.filter!r}; "
                         "`stt-hf models --filter '*'` lists every timm model")
    print(f"{'model':28s} {'input':>12s} {'params (M)':>11s} {'GMACs':>8s}")
    for name in names:
        row = model_complexity(name)
        size = "x".join(str(s) for s in row["input_size"])
        print(f"{name:28s} {size:>12s} {row['params_m']:11.2f} {row['gmacs']:8.3f}", flush=True)
    return 0


def _check_model_path(spec: str) -> None:
    """A --model that can only be a path (a Hub id is ORG/NAME) must exist; transformers would
    otherwise report it as a malformed repo id."""
    from pathlib import Path

    if not Path(spec).exists() and (spec.startswith(("/", ".", "~")) or spec.count("/") > 1):
        raise FileNotFoundError(f"--model {spec}: no such checkpoint folder (a Hub id has the form ORG/NAME)")


def _push(args: argparse.Namespace) -> int:
    from .reporting.publish import push_folder

    try:
        push_folder(args.folder, args.repo_id, token=args.token, private=args.private)
    except RuntimeError as err:  # push_folder's wrapper around network and HTTP errors
        raise ConnectionError(str(err)) from err
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The stt-hf parser: every subcommand sets `func`, which takes the parsed namespace (a trainer's
    arguments, which its own parser reads, in `rest`)."""
    from .tasks.common import ShortUsageErrors

    class Parser(ShortUsageErrors, argparse.ArgumentParser):
        pass

    parser = Parser(prog="stt-hf", description="STT (Synthesizing Tensor Transformations) attention for "
                                               "timm and transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    models = sub.add_parser("models", help="list the registered stt models with params and GMACs")
    models.add_argument("--filter", default="stt_*", help="timm name pattern (default: stt_*)")
    models.set_defaults(func=_models)

    for name, (module, help_text) in TRAINERS.items():
        sub.add_parser(name, help=help_text, add_help=False).set_defaults(func=_trainer(module), rest=[])
    for name, (module, help_text, model_kind) in EVALUATORS.items():
        evaluate = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(evaluate)
        evaluate.set_defaults(func=_evaluator(module, model_kind))

    from .experiments.benchmark import add_bench_parser
    from .hf.convert import add_convert_parser
    from .reporting.visualize import add_visualize_parser
    from .tasks.demo import add_demo_parsers
    from .tasks.export import add_export_parser

    add_convert_parser(sub)
    add_export_parser(sub)
    add_bench_parser(sub)
    add_visualize_parser(sub)

    push = sub.add_parser("push", help="publish a saved model folder to a Hugging Face Hub")
    push.add_argument("folder", help="folder written by stt-hf train (or save_pretrained)")
    push.add_argument("--repo_id", required=True, help="ORG/NAME on the Hub")
    push.add_argument("--token", default=None, help="default: HF_TOKEN or the stored login")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)

    add_demo_parsers(sub)
    for name, command in sub.choices.items():  # read by main(); listed here for -h
        if name not in TRAINERS:
            command.add_argument(DEBUG_FLAG, "--debug", action="store_true", dest="debug", help=DEBUG_HELP)
    parser.add_argument(DEBUG_FLAG, "--debug", action="store_true", dest="debug", help=DEBUG_HELP)
    parser.commands = sub.choices
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a bad input (flag, path, file, dataset, Hub access), not a bug in stt-hf.

    OSError covers missing files, unreadable images (PIL's UnidentifiedImageError) and every Hub error
    (huggingface_hub's HTTP, offline and not-found errors), ValueError the checks of stt-hf, timm and
    transformers (TrainingArguments included).
    """
    errors: list[type[BaseException]] = [ValueError, OSError, ImportError]
    if "yaml" in sys.modules:  # a --config file that is not YAML
        errors.append(sys.modules["yaml"].YAMLError)
    if "datasets" in sys.modules:  # a dataset that fails to build
        from datasets.exceptions import DatasetsError

        errors.append(DatasetsError)
    return tuple(errors)


def how_to_fix(err: BaseException, command: str) -> str:
    """One line: what to do about `err`."""
    message = str(err).lower()
    if "offline" in message or type(err).__name__ == "OfflineModeIsEnabled":
        return ("this needs the Hub, which HF_HUB_OFFLINE=1 forbids: give a local folder, or unset "
                "HF_HUB_OFFLINE (HF_ENDPOINT and HF_TOKEN say which Hub and who)")
    if isinstance(err, ImportError):
        return "install the missing package: pip install -c constraints.txt -e '.[data,caption,demo,export]'"
    if type(err).__name__ == "UnidentifiedImageError":
        return "give an image file PIL can read (PNG, JPEG, WebP, BMP, GIF)"
    if isinstance(err, FileNotFoundError):
        return f"check the path (relative paths start at {os.getcwd()})"
    if isinstance(err, OSError) and ("http" in message or "hub" in message or "connect" in message):
        return "check the repo id, HF_ENDPOINT, HF_TOKEN and the network, then run the command again"
    return f"see `{f'stt-hf {command}'.strip()} -h` for the options"


def _is_bug(err: BaseException) -> bool:
    """An ImportError other than a missing third-party package: stt-hf's own code is broken."""
    if not isinstance(err, ImportError):
        return False
    missing = err.name if isinstance(err, ModuleNotFoundError) else None
    return not missing or missing.split(".")[0] == "stt_hf"


def problem_of(err: BaseException) -> str:
    """The error's message on one line. An error raised in a DataLoader worker arrives re-raised by torch
    as "Caught E in DataLoader worker process N. Original Traceback ...": its last line is the message."""
    message = str(err)
    if message.startswith("Caught ") and "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(message.split()) or type(err).__name__


def report(err: BaseException, command: str) -> None:
    """The error in two lines on stderr: the problem, then the fix."""
    problem = problem_of(err)
    where = f"stt-hf {command}" if command else "stt-hf"
    print(f"{where}: error: {problem}\n  fix: {how_to_fix(err, command)} "
          f"({DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run `stt-hf ARGV`; return the exit code. Expected errors are reported in two lines (exit code 2)
    unless --stt_debug (anywhere on the command line) or STT_HF_DEBUG=1 asks for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if DEBUG_FLAG in argv:
        debug, argv = True, [a for a in argv if a != DEBUG_FLAG]
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    if command not in TRAINERS and "--debug" in argv:  # the trainers' --debug is TrainingArguments'
        debug = True
    try:
        return _run(argv)
    except expected_errors() as err:
        if debug or _is_bug(err):
            raise
        report(err, command)
        return 2


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "func", None) is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        parser.print_help()
        return 0
    if args.command in TRAINERS:
        args.rest = rest
    elif rest:
        parser.commands[args.command].error(
            f"unrecognized arguments: {' '.join(rest)}")
    import stt_hf  # noqa: F401  (registers the models with timm and transformers)

    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
