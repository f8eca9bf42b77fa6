"""The documentation works: README.md and every docs/*.md.

- Every ```python block runs: the blocks of one file in order, in one namespace, in a temporary working
  directory, offline (HF_HUB_OFFLINE=1). The line before a fence may hold one marker:
  `<!-- not run: REASON -->` for a block that cannot run here (a GPU, the Hub, a full training run; the
  reason is required), or `<!-- setup: NAME[, NAME] -->` naming fixtures of SETUPS below that prepare
  the files the block reads (a saved model folder, an image).
- Every `stt-hf ...` command of a ```bash block parses with the command's own parser (subcommand, flags,
  values), and every script or module a bash block runs exists. Bash blocks are not run.
- The repository paths and `stt_hf.` names quoted in inline code exist; docs/layout.md lists every module
  of the package.
- Every relative link points to an existing file, and every `#anchor` to a heading of its page.
- README.md is the front page: it opens with the two commands (`.ci/run` runs the second) and stays short.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# The README's first block, byte for byte: the main job and the test command that .ci/run calls.
FIRST_COMMANDS = (
    "bash scripts/main.sh    # the main job: sets up .venv + data, trains an STT ResNet on Fashion-MNIST\n"
    "bash scripts/test.sh    # the test suite: sets up .venv, runs ruff and pytest (offline)\n"
)
README_MAX_LINES = 300

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(not run|setup)\s*:\s*(.*?)\s*-->$")
ANY_MARKER = re.compile(r"<!--\s*(not\s*run|setup)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    marker: str | None = None  # "not run" or "setup"
    value: str = ""  # the reason, or the fixture names

    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, each with the marker on the line before its fence."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{_rel(path)}:{i + 1}: a fence that is never closed"
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        blocks.append(Block(path, i + 2, fence.group(1), "".join(f"{line}\n" for line in lines[i + 1:end]),
                            *(marker.groups() if marker else ())))
        i = end + 1
    return blocks


def _outside_fences(path: Path) -> list[str]:
    """The file's lines, those of fenced blocks (fences included) blanked."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line) or (inside and line.rstrip() == "```"):
            inside = not inside
            lines.append("")
        else:
            lines.append("" if inside else line)
    return lines


def _prose(path: Path) -> list[str]:
    """The lines outside fenced blocks, inline code spans dropped (links inside code are not links)."""
    return [re.sub(r"`[^`]*`", "", line) for line in _outside_fences(path)]


# --- setups: files a block reads, made by the test ---------------------------------------------------

def _tiny_model(workdir: Path) -> None:
    """`outputs/mnist`: a saved (untrained) stt_resnet10_s classifier, as `stt-hf train` leaves one."""
    from stt_hf import SttConfig, SttForImageClassification

    config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=10)
    SttForImageClassification(config).save_pretrained(workdir / "outputs" / "mnist")


def _photo(workdir: Path) -> None:
    """`photo.png`: a small RGB image."""
    from PIL import Image

    Image.radial_gradient("L").resize((48, 40)).convert("RGB").save(workdir / "photo.png")


SETUPS = {"tiny_model": _tiny_model, "photo": _photo}


# --- the markers ------------------------------------------------------------------------------------

def marker_problems(path: Path) -> list[str]:
    """What is wrong with the file's markers: each sits on the line before a ```python fence, a `not run`
    says why, a `setup` names fixtures of SETUPS."""
    problems = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not ANY_MARKER.search(re.sub(r"`[^`]*`", "", line)):  # one quoted in inline code is text
            continue
        where = f"{_rel(path)}:{number}"
        marker = MARKER.match(line.strip())
        following = lines[number] if number < len(lines) else ""
        if not marker:
            problems.append(f"{where}: write `<!-- not run: REASON -->` or `<!-- setup: NAME -->`")
        elif following.rstrip() != "```python":
            problems.append(f"{where}: a marker must be on the line just before a ```python fence")
        elif marker.group(1) == "not run" and len(marker.group(2).split()) < 2:
            problems.append(f"{where}: say why the block is not run (e.g. `needs a GPU`)")
        elif marker.group(1) == "setup":
            unknown = {name.strip() for name in marker.group(2).split(",")} - set(SETUPS)
            if unknown:
                problems.append(f"{where}: no setup named {sorted(unknown)}; known: {sorted(SETUPS)}")
    return problems


def test_markers_are_well_formed():
    problems = [problem for path in DOC_FILES for problem in marker_problems(path)]
    assert not problems, "\n".join(problems)


def test_bad_markers_are_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- not run: needs a GPU -->\n```python\nx = 1\n```\n"
                    "<!-- setup: photo, tiny_model -->\n```python\nx = 2\n```\n")
    assert marker_problems(page) == []
    assert [block.marker for block in read_blocks(page)] == ["not run", "setup"]
    for bad in ("<!-- not run -->", "<!-- not run: -->", "<!-- not run: slow -->", "<!-- setup: nothing -->",
                "<!-- NOT RUN because -->"):
        page.write_text(f"{bad}\n```python\nx = 1\n```\n")
        assert len(marker_problems(page)) == 1, bad
    page.write_text("<!-- not run: needs a GPU -->\n\n```python\nx = 1\n```\n")  # not just before
    assert len(marker_problems(page)) == 1


# --- the Python blocks run -----------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Hub access, as in CI; the libraries read these at import, so set the parsed values too."""
    import datasets
    import evaluate
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setenv("STT_HF_SCENES_CACHE", str(tmp_path / "scenes-cache"))
    # A log call that cannot format its message (transformers 5.24's notice that `image-to-text` was
    # renamed passes an extra argument) is reported and skipped outside pytest; pytest's handler raises.
    monkeypatch.setattr(logging, "raiseExceptions", False)


PYTHON_FILES = [path for path in DOC_FILES if any(b.lang == "python" for b in read_blocks(path))]


@pytest.mark.parametrize("path", PYTHON_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path, monkeypatch, offline):
    """The file's ```python blocks, in order, in one namespace; tracebacks point into the markdown."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    namespace: dict = {"__name__": "__main__"}
    timings = []
    for block in read_blocks(path):
        if block.lang != "python" or block.marker == "not run":
            continue
        if block.marker == "setup":
            for name in block.value.split(","):
                SETUPS[name.strip()](workdir)
        start, cpu = time.perf_counter(), time.process_time()
        code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own code)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        timings.append(f"{block.where()}: {wall:.1f} s ({cpu:.1f} s CPU in this process)")
    print("\n".join(timings))


# --- the bash blocks name real commands ----------------------------------------------------------------

def bash_commands(block: Block) -> list[list[str]]:
    """The commands of a bash block as argument lists (continuations joined, comments dropped)."""
    commands = []
    for line in block.code.replace("\\\n", " ").splitlines():
        words: list[str] = []
        for word in shlex.split(line, comments=True) + [";"]:
            if word in (";", "&&", "||", "|"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(word)
    return commands


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _check_stt_hf(argv: list[str]) -> str | None:
    """Parse `stt-hf ARGV` with the command's own parser, running nothing; the problem, if any."""
    from stt_hf import cli

    try:
        if argv and argv[0] in cli.TRAINERS:
            importlib.import_module(cli.TRAINERS[argv[0]][0]).parse_args(argv[1:])
        else:
            cli.build_parser().parse_args(argv)
    except SystemExit as err:
        return f"argparse exit {err.code}"
    except ValueError as err:
        return str(err)
    return None


def _check_command(argv: list[str]) -> str | None:
    program, args = argv[0], argv[1:]
    if program == "stt-hf":
        return _check_stt_hf(args)
    if program in ("python", "python3", "torchrun", "accelerate"):
        if "-m" in args:
            module = args[args.index("-m") + 1]
            return None if _module_exists(module) else f"no module {module}"
        script = next((arg for arg in args if arg.endswith(".py")), None)
        return None if script is None or (ROOT / script).is_file() else f"no file {script}"
    if program in ("bash", "source"):
        return None if (ROOT / args[0]).is_file() else f"no file {args[0]}"
    return None  # pip, mkdir, cp, ...: not ours to check


def test_bash_commands_parse(capsys):
    problems = []
    for path in DOC_FILES:
        for block in read_blocks(path):
            if block.lang != "bash":
                continue
            for argv in bash_commands(block):
                problem = _check_command(argv)
                if problem:
                    problems.append(f"{block.where()}: {shlex.join(argv)}\n    {problem}")
    errors = capsys.readouterr().err
    assert not problems, "\n".join(problems) + "\n" + errors[-3000:]


# --- links -----------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces as -, repeats -1, -2."""
    found, counts = set(), {}
    for line in _outside_fences(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        found.add(f"{slug}-{count}" if count else slug)
    return found


def test_anchor_rules():
    assert "same-recipe-every-module-scriptsmain_comparisonpy" in anchors(ROOT / "docs" / "results.md")


def test_relative_links_resolve():
    problems = []
    for path in DOC_FILES:
        for number, line in enumerate(_prose(path), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                file, _, anchor = target.partition("#")
                linked = (path.parent / file).resolve() if file else path
                where = f"{path.relative_to(ROOT)}:{number}: {target}"
                if not linked.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{where}: no heading with this anchor in {linked.name}")
    assert not problems, "\n".join(problems)


REPO_PATH = re.compile(r"(?<![\w/.])(?:stt_hf|scripts|tests|spaces|model_cards|docs)/[\w./-]*")
DOTTED_NAME = re.compile(r"(?<![\w.])stt_hf(?:\.\w+)+")


def _resolves(dotted: str) -> bool:
    """`stt_hf.a.b.c`: the longest module prefix imports and the rest are its attributes."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if _module_exists(".".join(parts[:end])):
            obj = importlib.import_module(".".join(parts[:end]))
            return all((obj := getattr(obj, part, None)) is not None for part in parts[end:])
    return False


def test_named_files_and_names_exist():
    """Repository paths (`stt_hf/tasks/train.py`) and stt_hf names (`stt_hf.hf.convert.hf_to_timm`) that the
    prose quotes in inline code exist, so a moved module cannot leave a stale pointer behind."""
    problems = []
    for path in DOC_FILES:
        for number, line in enumerate(_outside_fences(path), 1):
            for span in re.findall(r"`([^`]+)`", line):
                for named in REPO_PATH.findall(span):
                    if not (ROOT / named).exists():
                        problems.append(f"{_rel(path)}:{number}: no file {named}")
                for dotted in DOTTED_NAME.findall(span):
                    if not _resolves(dotted):
                        problems.append(f"{_rel(path)}:{number}: {dotted} does not resolve")
    assert not problems, "\n".join(problems)


def layout_entries() -> set[str]:
    """The files and folders the table of docs/layout.md names (`stt_hf/hf/` then `  convert.py`)."""
    block = next(b for b in read_blocks(ROOT / "docs" / "layout.md") if b.lang == "text")
    entries, folder = set(), ""
    for line in block.code.splitlines():
        name = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("   "):
            entries.add(folder + name)
        elif name and not line.startswith(" "):
            entries.add(name)
            folder = name if name.endswith("/") else ""
    return entries


def test_layout_names_every_module():
    """docs/layout.md lists every module of the package (a package listed as a folder covers its files)."""
    entries = layout_entries()
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "stt_hf").rglob("*.py")
               if path.name != "__init__.py"}
    whole = {e for e in entries if e.endswith("/") and not any(x != e and x.startswith(e) for x in entries)}
    missing = sorted(m for m in modules if m not in entries and not any(m.startswith(f) for f in whole))
    assert not missing, f"add these to the table of docs/layout.md: {missing}"
    stale = sorted(e for e in entries if e.startswith("stt_hf/") and not (ROOT / e).exists())
    assert not stale, f"docs/layout.md names files that do not exist: {stale}"


# --- the front page ------------------------------------------------------------------------------------

def test_readme_opens_with_the_two_commands():
    first = read_blocks(README)[0]
    assert (first.lang, first.code) == ("bash", FIRST_COMMANDS)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == FIRST_COMMANDS.splitlines()[1].split("#")[0].strip()


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; long guides belong in docs/"
