"""The README's first command opens the course in JupyterLab: start it headless, list the notebooks, stop it.

Started as `make lab` starts it, with the course's JupyterLab settings (jupyter-config/) on JUPYTER_CONFIG_PATH.
It starts a server, so it runs with the browser test in its own step (`make check-browser`), outside the suite.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import NOTEBOOKS, ROOT

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = free_port(), "transferlab-test"
    # the same invocation as `make lab`, plus what a headless start needs
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "notebooks/00_start_here.ipynb",
    ]
    if os.geteuid() == 0:
        cmd.insert(4, "--allow-root")
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_CONFIG_PATH=str(ROOT / "jupyter-config"),
    )
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/contents/", headers={"Authorization": f"token {token}"}
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as reply:
                    listing = json.load(reply)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        served = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        assert served == [p.name for p in NOTEBOOKS]
        # the page JupyterLab serves carries the course's settings: the news pop-up's plugin is switched off
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as reply:
            page = reply.read().decode()
        config = json.loads(
            re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S).group(1)
        )
        assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"], config
    finally:
        server.terminate()
        server.wait(timeout=20)
