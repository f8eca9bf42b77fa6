"""The in-memory test Hub against the real huggingface_hub / transformers / timm clients.

Clients run in subprocesses with `local_hub.env`, since huggingface_hub reads its endpoint at import.
"""

import json
import textwrap
import urllib.error
import urllib.request

import hub_fixtures
import numpy as np
import pytest

local_hub = hub_fixtures.local_hub

ROUNDTRIP = textwrap.dedent(
    """
    import json, sys
    from huggingface_hub import (
        HfApi, create_repo, file_exists, hf_hub_download, model_info, snapshot_download, upload_folder,
    )
    from huggingface_hub.errors import EntryNotFoundError

    folder, repo = sys.argv[1], "user/tiny"
    out = {"url": create_repo(repo), "url_again": create_repo(repo, exist_ok=True)}
    out["first"] = upload_folder(folder_path=folder, repo_id=repo, commit_message="v1").oid
    info = model_info(repo)
    out["sha"], out["siblings"] = info.sha, sorted(s.rfilename for s in info.siblings)
    out["exists"] = [
        file_exists(repo, "config.json"), file_exists(repo, "missing.bin"), file_exists("user/none", "x")
    ]
    out["download"] = hf_hub_download(repo, "model.safetensors")
    out["snapshot"] = snapshot_download(repo)
    try:
        hf_hub_download(repo, "missing.bin")
    except EntryNotFoundError:
        out["missing_raises"] = True
    HfApi().upload_file(path_or_fileobj=b'{"v": 2}', path_in_repo="config.json", repo_id=repo)
    out["old_config"] = hf_hub_download(repo, "config.json", revision=out["first"])
    out["new_config"] = hf_hub_download(repo, "config.json")
    print(json.dumps(out))
    """
)


def _write_model(folder):
    from safetensors.numpy import save_file

    folder.mkdir()
    save_file({"weight": np.arange(24, dtype=np.float32).reshape(4, 6)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "v": 1}))
    return folder


def test_upload_and_download_roundtrip(local_hub, tmp_path):
    folder = _write_model(tmp_path / "model")
    out = json.loads(local_hub.run_python(ROUNDTRIP, folder).stdout.splitlines()[-1])

    assert out["url"] == out["url_again"] == f"{local_hub.url}/user/tiny"
    assert out["sha"] == out["first"] and len(out["sha"]) == 40
    assert out["siblings"] == ["config.json", "model.safetensors"]
    assert out["exists"] == [True, False, False]
    assert out["missing_raises"]
    original = {p.name: p.read_bytes() for p in folder.iterdir()}
    with open(out["download"], "rb") as f:
        assert f.read() == original["model.safetensors"]
    for name, data in original.items():
        with open(f"{out['snapshot']}/{name}", "rb") as f:
            assert f.read() == data
    with open(out["old_config"], "rb") as f:
        assert f.read() == original["config.json"]
    with open(out["new_config"], "rb") as f:
        assert f.read() == b'{"v": 2}'
    assert local_hub.files("user/tiny")["model.safetensors"] == original["model.safetensors"]
    assert local_hub.files("user/tiny", revision=out["first"])["config.json"] == original["config.json"]


RETRY = textwrap.dedent(
    """
    import json
    from huggingface_hub import HfApi

    api, outcomes = HfApi(), []
    api.create_repo("user/retry")
    for attempt in range(3):
        try:
            api.upload_file(path_or_fileobj=b"payload", path_in_repo="weights.bin", repo_id="user/retry")
            outcomes.append("ok")
            break
        except Exception as e:
            response = getattr(e, "response", None)
            outcomes.append([type(e).__name__, getattr(response, "status_code", None)])
    print(json.dumps(outcomes))
    """
)


@pytest.mark.parametrize("mode", ["status", "drop"])
def test_commit_fault_surfaces_and_retry_succeeds(local_hub, mode):
    if mode == "status":
        local_hub.fail_next(1, status=500, route="commit")
    else:
        local_hub.drop_next(1, route="commit")
    outcomes = json.loads(local_hub.run_python(RETRY).stdout.splitlines()[-1])

    assert outcomes[-1] == "ok" and len(outcomes) == 2
    if mode == "status":
        assert outcomes[0] == ["HfHubHTTPError", 500]
    else:
        assert outcomes[0][0] in ("RemoteProtocolError", "ReadError", "ConnectError", "WriteError")
    assert local_hub.count("commit") == 2
    statuses = [status for _, route, _, status in local_hub.requests if route == "commit"]
    # One failed commit and one that succeeded, in either order: the handler thread of a dropped
    # connection may log it after the retry's request has been answered.
    assert sorted(statuses, key=str) == sorted([500 if mode == "status" else None, 200], key=str)
    assert local_hub.files("user/retry") == {"weights.bin": b"payload"}


def test_error_codes_and_fault_routes(local_hub):
    def get(path, method="GET"):
        request = urllib.request.Request(local_hub.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, _ = get("/api/models/user/none")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    local_hub.create_repo("model", "user/a")
    local_hub.commit(local_hub.repos[("model", "user/a")], "main", [{"key": "file", "value": {
        "path": "dir/x.txt", "content": "aGk=", "encoding": "base64"}}])
    assert get("/api/models/user/a/revision/nobranch")[1]["X-Error-Code"] == "RevisionNotFound"
    assert get("/user/a/resolve/main/none.txt", "HEAD")[1]["X-Error-Code"] == "EntryNotFound"
    status, headers, body = get("/user/a/resolve/main/dir/x.txt", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "2", b"")
    tree = json.loads(get("/api/models/user/a/tree/main")[2])
    assert [(e["type"], e["path"]) for e in tree] == [("directory", "dir")]
    local_hub.fail_next(2, status=503, route="any")
    assert get("/user/a/resolve/main/dir/x.txt")[0] == 503
    assert get("/api/whoami-v2")[0] == 503
    assert get("/user/a/resolve/main/dir/x.txt")[2] == b"hi"


TRANSFORMERS_TIMM = textwrap.dedent(
    """
    import timm, torch
    from transformers import ViTConfig, ViTForImageClassification

    x = torch.randn(1, 3, 32, 32)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=3)
    model = ViTForImageClassification(config).eval()
    model.push_to_hub("user/vit-tiny")
    loaded = ViTForImageClassification.from_pretrained("user/vit-tiny").eval()
    assert torch.allclose(model(x).logits, loaded(x).logits)

    net = timm.create_model("resnet10t", num_classes=4).eval()
    timm.models.push_to_hf_hub(net, "user/resnet10t-tiny")
    again = timm.create_model("hf-hub:user/resnet10t-tiny", pretrained=True).eval()
    assert torch.allclose(net(x), again(x))
    print("ok")
    """
)


def test_transformers_and_timm_push_and_load(local_hub):
    assert local_hub.run_python(TRANSFORMERS_TIMM, timeout=300).stdout.strip().endswith("ok")
    assert "model.safetensors" in local_hub.files("user/vit-tiny")
    assert "model.safetensors" in local_hub.files("user/resnet10t-tiny")
