"""The package layout: what `import stt_hf` loads, the lazy names and import direction."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stt_hf"

# The layers of the package, lowest first: a module may import from its own layer and the ones below.
LAYERS = ("layers", "models", "hf", "data", "metrics", "reporting", "tasks", "experiments", "cli")
# Top-level modules outside the folders, and the layer each belongs to. `stt_hf` itself (its __init__)
# registers the models, so importing it counts as importing from `hf`; `plotting` (the one matplotlib set-up)
# imports nothing of the package, so every layer may use it.
ROOT_MODULES = {"stt_hf": "hf", "registration": "hf", "cli": "cli", "plotting": "layers"}
# Facades that name every layer on purpose, lazily: the package namespace.
FACADES = {"stt_hf"}
# Upward imports that are allowed, with the reason: (importing module, imported module) -> reason.
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("stt_hf.hf.captioning", "stt_hf.data.common"):
        "the caption pipeline converts its images with the package's one RGB policy, `to_rgb`, imported "
        "when a pipeline first preprocesses; data.common imports nothing of the package",
}

# Loaded only when first used: none of these may be imported by `import stt_hf`.
LAZY_MODULES = ("tokenizers", "datasets", "evaluate", "stt_hf.hf.captioning", "stt_hf.hf.convert",
                "stt_hf.hf.modeling_stt_captioner",
                "stt_hf.hf.modeling_stt_seg", "stt_hf.data", "stt_hf.metrics", "stt_hf.tasks",
                "stt_hf.reporting", "stt_hf.experiments", "stt_hf.cli")


def run_python(code: str) -> str:
    """stdout of `python -c code` in a fresh interpreter (nothing of this test process leaks in)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# ------------------------------------------------------------------------------- import stt_hf


def test_import_registers_and_loads_nothing_else():
    out = run_python(f"""
        import json, sys, warnings
        warnings.simplefilter("error", FutureWarning)
        import stt_hf
        lazy = {LAZY_MODULES!r}
        loaded = sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in lazy))

        import timm, torch
        from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification
        from stt_hf.hf.configuration_stt import SttConfig, SttVisionConfig

        assert AutoConfig.for_model("stt").model_type == "stt"
        assert type(AutoConfig.for_model("stt_vision")).__name__ == "SttVisionConfig"
        model = timm.create_model("stt_resnet10_s", num_classes=3)
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
        config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=4)
        classifier = AutoModelForImageClassification.from_config(config)
        kinds = dict(classifier=type(classifier).__name__, model=type(AutoModel.from_config(config)).__name__,
                     backbone=type(AutoBackbone.from_config(config)).__name__,
                     encoder=type(AutoModel.from_config(SttVisionConfig.from_timm_name("stt_resnet10_s",
                                                                                         img_size=32))).__name__)
        print(json.dumps(dict(loaded=loaded, kinds=kinds)))
    """)
    result = json.loads(out.splitlines()[-1])
    assert result["loaded"] == []
    assert result["kinds"] == dict(classifier="SttForImageClassification", model="SttModel",
                                   backbone="SttBackbone", encoder="SttVisionEncoder")


def test_every_public_name_resolves():
    out = run_python("""
        import json, sys
        import stt_hf
        missing = [name for name in stt_hf.__all__ if getattr(stt_hf, name, None) is None]
        not_listed = sorted(set(stt_hf.__all__) - set(dir(stt_hf)))
        print(json.dumps(dict(missing=missing, not_listed=not_listed, count=len(stt_hf.__all__),
                              tokenizers="tokenizers" in sys.modules)))
    """)
    result = json.loads(out.splitlines()[-1])
    assert result["missing"] == [] and result["not_listed"] == []
    assert result["count"] >= 20
    assert result["tokenizers"]  # build_captioner and friends were imported on first use


def test_lazy_names_are_the_modules_objects():
    import stt_hf
    from stt_hf.hf.captioning import build_captioner
    from stt_hf.hf.checkpoints import CheckpointError, load_checkpoint
    from stt_hf.hf.convert import timm_from_pretrained

    assert stt_hf.build_captioner is build_captioner
    assert stt_hf.load_checkpoint is load_checkpoint and stt_hf.CheckpointError is CheckpointError
    assert stt_hf.timm_from_pretrained is timm_from_pretrained
    assert sorted(stt_hf.__all__) == stt_hf.__all__ and len(set(stt_hf.__all__)) == len(stt_hf.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        stt_hf.nothing_here  # noqa: B018


# ------------------------------------------------------------------------- import direction


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "stt_hf":
        return None
    if len(parts) == 1:
        return ROOT_MODULES["stt_hf"]
    return parts[1] if parts[1] in LAYERS else ROOT_MODULES.get(parts[1])


def imports_of(path: Path):
    """(line, imported module, names) of every import in the file, at any depth (lazy ones too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names = [a.name for a in node.names]
            if node.module is None:  # `from . import x`: x is a module of the package
                for name in names:
                    yield node.lineno, f"{target}.{name}", []
            else:
                yield node.lineno, target, names


def package_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_layer_table_covers_the_package():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS)
    for path in package_files():
        assert module_name(path) in FACADES or layer_of(module_name(path)), path


def test_no_private_names_across_modules():
    found = []
    for path in package_files():
        source = module_name(path)
        for line, target, names in imports_of(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != source and target.startswith("stt_hf"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {private} from {target}")
    assert not found, "\n".join(found)


def test_imports_only_go_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    found, used = [], set()
    for path in package_files():
        source = module_name(path)
        if source in FACADES:
            continue
        for line, target, _ in imports_of(path):
            low, high = layer_of(source), layer_of(target)
            if high is None or rank[high] <= rank[low]:
                continue
            key = (source, target)
            if key in UPWARD_EXCEPTIONS:
                used.add(key)
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({low}) imports {target} ({high})")
    assert not found, "\n".join(found)
    assert used == set(UPWARD_EXCEPTIONS), f"stale exceptions: {set(UPWARD_EXCEPTIONS) - used}"
