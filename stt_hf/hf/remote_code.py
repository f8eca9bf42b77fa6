"""Self-contained checkpoints: the model code written into every saved folder, and pushing that folder.

transformers' remote-code loader (`trust_remote_code=True`) imports a checkpoint's own modules, and only
follows `from .module import name` between files of one folder, while this package keeps the network in
subpackages. So `write_remote_code` copies each module in the import closure of REMOTE_CODE_MODULES
flat into the folder, its relative imports rewritten to point at its flat siblings. Every module in
that closure must import its siblings as modules (`from ..layers.stt import STT`, not from a package),
and their file names must be unique.

The rewrite of relative imports is the one thing that needs `ast`: the package keeps its layers in
subpackages (`layers/`, `models/`, `hf/`), which a flat remote-code folder cannot hold. Everything else is
public API: each class's own transformers `save_pretrained`, and huggingface_hub's `create_repo` and
`upload_folder` for the push (no private transformers helper).

What a folder of `SttConfig` classes carries is the import closure of `configuration_stt` and
`modeling_stt`, and it cannot be smaller without a second copy of the network's source:
transformers' loader requires every module that any `from .module import` line of a copied file names
(it scans the text, so an import inside a function or a try block counts too), and each of these is
imported when the classes are:

- `configuration_stt`, `modeling_stt`: what `auto_map` points at;
- `stt_resnet` (the network, its options, its key names), `create` (attention modules by `attn_layer`),
  `stt`, `baselines` (every module a config may name), `helpers`, `options` (the one option spec the
  config is validated with): the network the classes wrap;
- `timm_interop`: the config's timm fields and its image processor;
- `checkpoints`: `from_pretrained`'s safety checks (pickle refused, mismatched weights named);
- `stages`: transformers' `GradientCheckpointingLayer`, its own module because importing it loads the
  tokenizers, which `import stt_hf` does not;
- `feature_tokens`: the captioning encoder's token head, which `modeling_stt` defines its encoder with;
- `remote_code` (this module): so that a copy loaded as remote code saves itself again with the same code
  and `auto_map`. It imports nothing but the standard library and huggingface_hub.

Thirteen files in all. Folders of the plug-in classes (`SttPluginConfig`) carry `configuration_stt_plugin`,
`modeling_stt_plugin`, `plugin` and `plugin_stages` (how attention is added to a timm trunk) in place of
`configuration_stt`, `modeling_stt` and `stages`: fourteen. Segmenter folders add `modeling_stt_seg`,
captioner folders `modeling_stt_captioner`.
"""

import ast
import importlib
import importlib.util
import os
import sys

from huggingface_hub import create_repo, upload_folder

# The modules copied into every checkpoint, with the modules they import.
REMOTE_CODE_MODULES = ("configuration_stt", "modeling_stt")


def save_with_code(config, save, save_directory: str | os.PathLike, push_to_hub: bool = False,
                   modules: tuple[str, ...] = REMOTE_CODE_MODULES, **kwargs) -> None:
    """Save a config with its model code: what every saving config class here does.

    Writes the code of `modules` (with everything they import) into the folder, maps the config's
    `auto_classes` whose module is there in `auto_map`, and calls `save(save_directory, **kwargs)` (the
    class's own transformers `save_pretrained`). With push_to_hub, the files written are then uploaded in one
    commit, so the Hub gets what the folder got (`repo_id`, `commit_message`, `private`, `token` are taken
    from kwargs as transformers takes them).
    """
    push = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "token") if k in kwargs}
    os.makedirs(save_directory, exist_ok=True)
    written = [f"{name}.py" for name in write_remote_code(save_directory, modules)]
    # A config loaded alone as remote code has no modeling module to write, though a model saving it may have
    # copied one already: map only the classes whose code is in the folder.
    config.auto_map = {auto: ref for auto, ref in config.auto_classes.items()
                       if os.path.exists(os.path.join(save_directory, ref.split(".")[0] + ".py"))}
    save(save_directory, **kwargs)
    if push_to_hub:
        repo_id = push.get("repo_id") or os.path.basename(os.path.normpath(save_directory))
        token = push.get("token")
        repo_id = create_repo(repo_id, private=push.get("private"), token=token, exist_ok=True).repo_id
        upload_folder(repo_id=repo_id, folder_path=save_directory, token=token,
                      commit_message=push.get("commit_message") or "Upload config",
                      allow_patterns=[*written, "config.json", "preprocessor_config.json"])


def write_remote_code(folder: str | os.PathLike, modules: tuple[str, ...] = REMOTE_CODE_MODULES) -> list[str]:
    """Copy the code of `modules` (names of modules beside this one) into `folder` as flat sibling modules,
    with every module they import from this package; return the names written.

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


__all__ = ["REMOTE_CODE_MODULES", "save_with_code", "write_remote_code"]
