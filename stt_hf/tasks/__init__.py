"""The applications behind the `stt-hf` subcommands: train, evaluate, export, demo."""
