"""Pytest fixture for the in-memory test Hub (`hub_server.LocalHub`).

Bind it in a test module (pytest finds fixtures in module globals; the assignment, unlike
`from hub_fixtures import local_hub`, does not trip ruff's F401/F811)::

    import hub_fixtures

    local_hub = hub_fixtures.local_hub

    def test_push(local_hub):
        local_hub.run_python("from huggingface_hub import create_repo; create_repo('user/m')")
        assert local_hub.files("user/m") == {}

The fixture yields a started `LocalHub`: `local_hub.url` is the endpoint and `local_hub.env` the
environment for client subprocesses (`HF_ENDPOINT`, `HF_HUB_OFFLINE=0`, `HF_HOME` in the test's
tmp_path, a dummy `HF_TOKEN`). `huggingface_hub` reads these when first imported, so run the client in a
subprocess (`local_hub.run_python(code)` or `subprocess.run(..., env=local_hub.env)`), not in the
pytest process.
"""

import pytest
from hub_server import LocalHub


@pytest.fixture
def local_hub(tmp_path):
    """A started in-memory Hub for one test, with its client `HF_HOME` under `tmp_path`."""
    with LocalHub(home=tmp_path / "hf_home") as hub:
        yield hub
