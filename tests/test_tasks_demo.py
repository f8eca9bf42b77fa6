"""The demo app: loading models, refusing bad uploads, the page in a real browser, and the Space.

The browser tests start the Gradio app on 127.0.0.1 and drive the system's headless Chromium through
Playwright (`executable_path`, nothing downloads a browser); they skip, saying why, without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import hub_fixtures
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from stt_hf.tasks.demo import build_demo  # noqa: E402  (after the Gradio setting)
from stt_hf.tasks.demo_inputs import DemoError, example_images, open_upload  # noqa: E402
from stt_hf.tasks.demo_models import ALL_MODES, Captioner, fresh_classifier, load_classifier  # noqa: E402

local_hub = hub_fixtures.local_hub
CHROMIUM = os.environ.get("STT_HF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[1]
# True once the picture and its boxes are not faded (Gradio fades an output while its request runs).
SETTLED = ("sel => { let e = document.querySelector(sel + ' img'); const top = document.querySelector(sel); "
           "for (; e && e !== top.parentElement; e = e.parentElement) "
           "{ if (getComputedStyle(e).opacity !== '1') return false; } return true; }")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory) -> Path:
    """A transformers-format classifier with its own label names, as `stt-hf train` saves it."""
    from stt_hf import SttConfig, SttForImageClassification

    labels = ["cat", "dog", "bird", "fish", "frog", "horse"]
    config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=len(labels), img_size=32,
                                      id2label=dict(enumerate(labels)),
                                      label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(0)
    model = SttForImageClassification(config).eval()
    with torch.no_grad():  # a non-trivial head, so the ranking is the weights', not ties
        model.classifier.weight.normal_(0, 1)
    folder = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(folder)
    (folder / "checkpoint-10").mkdir()  # local only: not shipped with a Space
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    return folder


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Captioner:
    """A small untrained captioner saved and reloaded the way `stt-hf train-caption` writes it."""
    from stt_hf import build_captioner, train_caption_tokenizer
    from stt_hf.tasks.demo_models import load_captioner

    captions = ["a red tomato", "a green frog on a leaf", "a yellow sun", "a blue fish in water"] * 4
    tokenizer = train_caption_tokenizer(captions, vocab_size=300, model_max_length=12)
    torch.manual_seed(0)
    model = build_captioner("stt_resnet10_s", tokenizer, encoder_kwargs=dict(img_size=32, hidden_size=32),
                            decoder_kwargs=dict(layers=1, heads=2), generation=dict(max_length=8))
    folder = tmp_path_factory.mktemp("captioner")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model.config.encoder.image_processor().save_pretrained(folder)
    return load_captioner(str(folder))


# ---------------------------------------------------------------------------------------------------
# Without a browser
# ---------------------------------------------------------------------------------------------------

def test_bad_uploads_are_refused_with_the_reason(tmp_path, photo):
    text = tmp_path / "notes.png"
    text.write_text("these are notes, not pixels")
    with pytest.raises(DemoError, match="notes.png is not an image that can be read"):
        open_upload(text)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photo.read_bytes()[:2000])
    with pytest.raises(DemoError, match="truncated.png is not an image"):
        open_upload(truncated)
    with pytest.raises(DemoError, match=r"451x300 pixels .* up to 0 MP"):
        open_upload(photo, max_pixels=100_000)
    with pytest.raises(DemoError, match="Upload an image first"):
        open_upload(None)
    assert open_upload(photo).size == (451, 300)


def test_checkpoint_folder_keeps_its_labels_and_scores(classifier_folder, photo):
    from stt_hf import SttForImageClassification
    from stt_hf.reporting.visualize import preprocess

    demo_model = load_classifier(str(classifier_folder))
    assert not demo_model.untrained and demo_model.labels == ["cat", "dog", "bird", "fish", "frog", "horse"]
    image = Image.open(photo)
    top5 = demo_model.predict(image)
    hf = SttForImageClassification.from_pretrained(classifier_folder).eval()
    with torch.no_grad():
        probs = hf(preprocess(demo_model.model, image)[0]).logits.softmax(-1)[0]
    expected = {hf.config.id2label[i]: p for p, i in zip(*(t.tolist() for t in probs.topk(5)), strict=True)}
    assert list(top5) == list(expected)
    assert list(top5.values()) == pytest.approx([float(p) for p in expected.values()], abs=1e-5)


def test_untrained_model_when_the_main_job_has_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs/stt_resnet10_s-fashion_mnist here
    model = load_classifier(None)
    assert model.untrained and "untrained" in model.name and model.labels[0] == "T-shirt/top"
    with pytest.raises(DemoError, match="not a file"):
        load_classifier(str(Path(__file__)))


def test_attention_picture_per_mode(photo):
    model = fresh_classifier()
    image = Image.open(photo)
    pictures = {mode: model.attention(image, mode) for mode in ("channel", "height", "width", ALL_MODES)}
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.std() > 0 for p in pictures.values())
    assert not (pictures["height"] == pictures["width"]).all()
    assert pictures[ALL_MODES].shape[0] > pictures["channel"].shape[0]  # one row per block under the input


def test_examples_cover_photos_and_fashion_items(tmp_path):
    paths = [Path(p).name for p in example_images(tmp_path, extra=ROOT / "spaces" / "stt-demo" / "examples")]
    assert paths[:4] == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    assert sum(name.startswith("fashion_mnist-") for name in paths) == 4  # from the dataset or the Space
    assert len(paths) == len(set(paths))


def test_example_cache_is_private_and_never_serves_a_planted_link(tmp_path, monkeypatch):
    """Another user of the machine makes the fixed folder the demo once used under the system temp dir
    and plants coffee.png there as a link to a file of their choosing: the page must not offer it."""
    from stt_hf.tasks import demo

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # the system temp dir, shared with that user
    secret = tmp_path / "secret.txt"
    secret.write_text("not an image")
    (tmp_path / "stt-hf-demo-examples").mkdir()
    (tmp_path / "stt-hf-demo-examples" / "coffee.png").symlink_to(secret)
    seen = {}
    monkeypatch.setattr(demo, "build_demo", lambda classifier, captioner, examples, **_: seen.update(
        examples=[Path(p) for p in examples]))
    demo.create_demo("stt_resnet10_s")
    examples = seen["examples"]
    assert "coffee.png" in [p.name for p in examples]
    assert not any(p.is_symlink() or p.resolve() == secret for p in examples)
    folder = examples[0].parent
    assert all(p.parent == folder for p in examples)
    assert folder.stat().st_uid == os.getuid() and folder.stat().st_mode & 0o077 == 0  # private: 0700
    with Image.open(folder / "coffee.png") as img:
        assert img.size == (600, 400)  # scikit-image's coffee photo


def test_a_given_example_folder_replaces_links_and_refuses_shared_folders(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not an image")
    folder = tmp_path / "examples"
    folder.mkdir(mode=0o700)
    (folder / "coffee.png").symlink_to(secret)
    paths = [Path(p) for p in example_images(folder, fashion_items=0)]
    assert folder / "coffee.png" in paths and not (folder / "coffee.png").is_symlink()
    assert secret.read_text() == "not an image"  # the link was replaced, not written through
    with Image.open(folder / "coffee.png") as img:
        assert img.size == (600, 400)

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(DemoError, match="may be written by other users"):
        example_images(shared)
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    with pytest.raises(DemoError, match="is a symbolic link"):
        example_images(tmp_path / "link")


def test_demo_command_keeps_gradio_files_in_a_private_folder(tmp_path, monkeypatch):
    """Gradio copies every file it serves under GRADIO_TEMP_DIR, by default a fixed folder in the shared
    temp dir; `stt-hf demo` gives it a private one unless the user chose one."""
    from stt_hf.tasks import demo

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    launched = {}

    class Page:
        def launch(self, **kwargs):
            launched["dir"] = Path(os.environ["GRADIO_TEMP_DIR"])

    monkeypatch.setattr(demo, "create_demo", lambda *args, **kwargs: Page())
    assert demo.main([]) == 0
    assert launched["dir"].parent == tmp_path and launched["dir"].stat().st_mode & 0o077 == 0
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "chosen"))
    assert demo.main([]) == 0 and launched["dir"] == tmp_path / "chosen"


def test_captioner_gives_greedy_and_beam_captions(captioner, photo):
    greedy, beam = captioner.captions(Image.open(photo))
    assert greedy.strip() and beam.strip()


# ---------------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/setup_env.sh --data does "
                    "it as root), or point STT_HF_CHROMIUM at one")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the demo extra) is missing")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, captioner):
    """The demo on 127.0.0.1: an untrained classifier (so the banner shows) and the captioner."""
    pytest.importorskip("gradio", reason="gradio (the demo extra) is missing")
    classifier = fresh_classifier()
    examples = example_images(tmp_path_factory.mktemp("examples"), fashion_items=2)
    demo = build_demo(classifier, captioner, examples=examples, max_pixels=1_000_000)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True,
                quiet=True)
    yield dict(url=f"http://127.0.0.1:{port}/", classifier=classifier, captioner=captioner)
    demo.close()


def test_upload_shows_labels_and_attention(browser_page, served, photo, tmp_path):
    page = browser_page
    page.goto(served["url"])
    page.get_by_text("Untrained weights").wait_for()
    page.locator("#classify-image input[type=file]").set_input_files(str(photo))
    top = page.locator("#labels [data-testid=label-output-value]")
    top.wait_for()
    expected = served["classifier"].predict(Image.open(photo))
    assert top.inner_text().strip() == next(iter(expected))
    assert page.locator("#labels [data-testid$='-confidence-set']").count() == 5
    picture = page.locator("#attention-picture img")
    picture.wait_for()
    channel = picture.get_attribute("src")
    page.get_by_label("width").check()  # the mode switch redraws the picture
    # the new picture is in place and decoded (naturalWidth is 0 until the image has loaded)
    page.wait_for_function(
        "s => { const img = document.querySelector('#attention-picture img');"
        " return img.src !== s && img.complete && img.naturalWidth > 0; }",
        arg=channel,
    )
    assert page.locator("#attention-picture img").evaluate("img => img.naturalWidth") > 300
    page.wait_for_function(SETTLED, arg="#attention-picture")  # the pending fade is over
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    if os.environ.get("STT_HF_DEMO_SCREENSHOT"):  # to refresh the README's picture
        shutil.copy(tmp_path / "demo.png", os.environ["STT_HF_DEMO_SCREENSHOT"])


def test_bad_uploads_show_a_message(browser_page, served, tmp_path):
    page = browser_page
    page.goto(served["url"])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    page.locator("#classify-image input[type=file]").set_input_files(str(text))
    page.get_by_text("notes.png is not an image that can be read").wait_for()
    page.goto(served["url"])
    big = tmp_path / "big.png"
    Image.new("L", (1200, 1000)).save(big)
    page.locator("#classify-image input[type=file]").set_input_files(str(big))
    page.get_by_text("this demo takes images up to 1 MP").wait_for()


def test_caption_tab(browser_page, served, photo):
    page = browser_page
    page.goto(served["url"])
    page.get_by_role("tab", name="Caption").click()
    page.locator("#caption-image input[type=file]").set_input_files(str(photo))
    page.locator("#caption-button").click()
    greedy, beam = served["captioner"].captions(Image.open(photo))
    page.wait_for_function("t => document.querySelector('#caption-greedy textarea').value === t", arg=greedy)
    assert page.locator("#caption-beam textarea").input_value() == beam


# ---------------------------------------------------------------------------------------------------
# The Space
# ---------------------------------------------------------------------------------------------------

def test_push_space_publishes_a_space_that_runs(local_hub, classifier_folder, tmp_path):
    """push-space over real HTTP to the local Hub; the downloaded Space then builds its page with its own
    copy of the package and the shipped model."""
    pytest.importorskip("gradio", reason="gradio (the demo extra) is missing")
    local_hub.run_python(
        "import sys; from stt_hf.cli import main; sys.exit(main(sys.argv[1:]))",
        "push-space", "--repo_id", "user/stt-demo", "--model", str(classifier_folder), timeout=300)
    files = local_hub.files("user/stt-demo", repo_type="space")
    for name in ("app.py", "requirements.txt", "README.md", "stt_hf/__init__.py", "stt_hf/tasks/demo.py",
                 "stt_hf/templates/model_card.md", "model/config.json", "model/model.safetensors",
                 "examples/fashion_mnist-dress.png"):
        assert name in files, f"{name} missing from the Space: {sorted(files)}"
    assert not any("checkpoint-" in name or "__pycache__" in name for name in files)
    assert b"\nsdk: gradio\n" in files["README.md"]
    space = tmp_path / "space"
    for name, data in files.items():
        (space / name).parent.mkdir(parents=True, exist_ok=True)
        (space / name).write_bytes(data)
    code = ("import runpy, stt_hf; ns = runpy.run_path('app.py'); "
            "print(stt_hf.__file__); print(type(ns['demo']).__name__); print(ns['shipped']('model'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.run([sys.executable, "-c", code], cwd=space, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    package, kind, model = proc.stdout.split("\n")[-4:-1]
    assert Path(package).resolve().is_relative_to(space.resolve()) and kind == "Blocks", proc.stdout
    assert Path(model).resolve() == (space / "model").resolve()
