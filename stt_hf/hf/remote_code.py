"""Self-contained checkpoints: the model code written into every saved folder, and pushing that folder.

transformers' remote-code loader (`trust_remote_code=True`) imports a checkpoint's own modules, and only
follows `from .module import name` between files of one folder, while this package keeps the network in
subpackages. So `write_remote_code` copies each module in the import closure of REMOTE_CODE_MODULES
flat into the folder, its relative imports rewritten to point at its flat siblings. Every module in
that closure must import its siblings as modules (`from ..layers.stt import STT`, not from a package),
and their file names must be unique.

This module is itself in the closure (the configs import it): it imports nothing but the standard library
and huggingface_hub.
"""

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub import create_repo

# The modules copied into every checkpoint, with the modules they import.
REMOTE_CODE_MODULES = ("configuration_stt", "modeling_stt")


def write_remote_code(folder: str | os.PathLike, modules: tuple[str, ...] = REMOTE_CODE_MODULES) -> list[str]:
    """Copy the model code (`modules` of this package and what they import) into `folder` as flat
    sibling modules; return their names.

    The rewrite is idempotent, so a checkpoint loaded as remote code saves its code again unchanged.
    """
    package = __name__.rpartition(".")[0]
    pending = []
    for name in modules:
        try:
            pending.append(importlib.import_module(f"{package}.{name}"))
        except ImportError:  # remote code loaded for AutoConfig alone has no modeling module
            pass
    sources: dict[str, str] = {}
    seen: dict[str, str] = {}  # flat name -> full module name
    while pending:
        module = pending.pop()
        flat = module.__name__.rpartition(".")[2]
        if flat in seen:
            if seen[flat] != module.__name__:
                raise ValueError(f"Two modules named {flat!r} cannot be flattened into one folder: "
                                 f"{seen[flat]} and {module.__name__}")
            continue
        seen[flat] = module.__name__
        with open(module.__file__, encoding="utf-8") as f:
            source, deps = _flatten_relative_imports(f.read(), module)
        sources[flat] = source
        pending.extend(deps)
    for flat, source in sources.items():
        with open(os.path.join(folder, f"{flat}.py"), "w", encoding="utf-8") as f:
            f.write(source)
    return sorted(sources)


def _flatten_relative_imports(source: str, module) -> tuple[str, list]:
    """Rewrite `from ..pkg.mod import x` as `from .mod import x`; return the source and imported modules."""
    lines = source.splitlines(keepends=True)
    deps = []
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level > 0]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        target = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
        dep = sys.modules.get(target) or importlib.import_module(target)
        if node.module is None or hasattr(dep, "__path__"):
            raise ValueError(f"{module.__name__} line {node.lineno}: remote code needs relative imports "
                             f"of modules (`from .module import name`), not of packages")
        deps.append(dep)
        indent = lines[node.lineno - 1][: node.col_offset]
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        flat = target.rpartition(".")[2]
        lines[node.lineno - 1: node.end_lineno] = [f"{indent}from .{flat} import {names}\n"]
    return "".join(lines), deps


@contextmanager
def push_to_hub_after(config, folder: str | os.PathLike, push_to_hub: bool, kwargs: dict) -> Iterator[None]:
    """With push_to_hub, upload every file written into `folder` inside the block, in one commit.

    transformers' `save_pretrained(..., push_to_hub=True)` uploads from inside its own save, so it would
    miss what is written around it: the model code and preprocessor config before, the timm keys of
    config.json after. This takes its arguments (`repo_id`, `commit_message`, `private`, `token`; popped
    from `kwargs`) and uploads what the whole save wrote, so the Hub gets the local folder's files.
    """
    if not push_to_hub:
        yield
        return
    commit_message = kwargs.pop("commit_message", None)
    repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(folder)))
    token = kwargs.get("token")
    repo_id = create_repo(repo_id, private=kwargs.pop("private", None), token=token, exist_ok=True).repo_id
    os.makedirs(folder, exist_ok=True)
    timestamps = config._get_files_timestamps(folder)
    yield
    config._upload_modified_files(folder, repo_id, timestamps, commit_message=commit_message, token=token)


__all__ = ["REMOTE_CODE_MODULES", "push_to_hub_after", "write_remote_code"]
