"""python -m devtools.mockprovider: the mock provider served on its own."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from llmchat.tests.test_serving import free_port
from llmchat.tests.test_settings import BASE_DIR


def test_it_refuses_unknown_faults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.mockprovider", "--fault-rate", "meteor=0.5"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Unknown fault 'meteor'" in result.stderr


def test_it_serves_every_protocol_without_django() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.mockprovider", "--port", str(port)],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin"},  # no settings: it needs none
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer sk-x"}
        )
        for _ in range(100):
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    models = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the mock provider did not start")
        assert models["object"] == "list"
        assert models["data"][0]["id"] == "gpt-mock"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
