"""Fixtures of the real-browser tests (``make browser-test``); the plain ``pytest tests`` skips them.

These tests need Debian's Chromium at /usr/bin/chromium and Playwright (the ``browser``
extra), and a built book in ``_build/html``; ``make browser-test`` installs and builds what
is missing, then runs them with ``BOOK_BROWSER_TEST=1``. Without that variable nothing in
this folder is collected, so the default test run neither needs a browser nor waits for one.

Playwright drives the system Chromium (``executable_path``): it never downloads a browser.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("BOOK_BROWSER_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]

from browser_support import (CHROMIUM, CHROMIUM_ARGS, HTML, REPO_ROOT, SCREENSHOTS,  # noqa: E402
                             free_port, wait_for_http)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser-test` installs Debian's chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def book_url():
    """The built book served by ``python -m http.server`` on a free localhost port."""
    if not (HTML / "index.html").is_file():
        pytest.fail("no built book in _build/html: run `make browser-test` (it runs `make book`)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(HTML)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/index.html", 30, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """_build/screenshots/, emptied of the previous run's pictures."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in [*SCREENSHOTS.glob("*.png"), *SCREENSHOTS.glob("*.jpg")]:
        old.unlink()
    return SCREENSHOTS


LAB_CHAPTER = "chapters/01_skin_disease_and_melanoma.ipynb"   # run in JupyterLab
LAB_READ = "chapters/09_evaluating_melanoma_detection.ipynb"   # read in JupyterLab
LAB_SETTINGS = {
    # Every cell in the page (no virtual scrolling), so that all prompts can be read.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No "get Jupyter news?" question on a closed network.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


@pytest.fixture(scope="session", autouse=True)
def jupyterlab(tmp_path_factory):
    """JupyterLab on a free localhost port, no token, in a temporary copy of chapters 1 and 9.

    Started before the first test so that it boots while the book's pages are checked; the
    repository's notebook is never touched. The kernel finds the data through the installed
    ``helpers`` package.
    """
    root = tmp_path_factory.mktemp("lab")
    (root / "chapters").mkdir()
    for chapter in (LAB_CHAPTER, LAB_READ):
        shutil.copy(REPO_ROOT / chapter, root / chapter)
    settings = tmp_path_factory.mktemp("lab-settings")
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port = free_port()
    log = open(root.parent / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={settings / 'workspaces'}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", root, proc
    finally:
        proc.terminate()   # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
