"""The course as a learner meets it: JupyterLab in a real (headless) Chromium, Run All through the menu.

Runs as its own step (`make check-browser`, .ci/run). It needs Debian's `chromium` (`apt-get install chromium`) and
the `playwright` package (its own browser download is not used). Without them the test is skipped with the reason;
with `CI=true` it fails instead. JupyterLab serves the student edition, built into a folder of its own as
`make student` builds it, so nothing in the checkout changes and the edition a class gets is the one tested: each
notebook's lesson must run to its first exercise, which stops at its stub. Screenshots go to build/screenshots/.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from coursetools.editions import SOLUTION_TAG, build, handout_html

from conftest import NOTEBOOKS, ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = ROOT / "build" / "screenshots"
TRAINING_NOTEBOOK = "05_finetune_vs_feature_extraction.ipynb"
# Run All in the student edition, beside 00 and 05: notebooks that read stored results (08, 09) and the capstone (12)
# The student notebooks that read stored results or real photos (05, the training notebook, runs in its own test).
# 12 (86 s of training) is left to nbval and the stub run: the browser adds nothing there that 05 does not check.
RUN_ALL = [p.name for p in NOTEBOOKS if p.name[:2] in {"08", "09"}]
RAISES_TAGS = {"raises-exception", "nbval-raises-exception"}
# generous waits: a loaded CI machine can be slow to start kernels (the test's own time is what the budget counts)
TIMEOUT_MS = int(float(os.environ.get("BROWSER_TIMEOUT_S", "240")) * 1000)
# the text tqdm's widget degrades to, and a bar still at 0 % after its cell has run
WIDGET_AS_TEXT = re.compile(r"HBox\(|FloatProgress\(")
STALE_BAR = re.compile(r"\b0%\|")
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show (JupyterLab hides the other tabs)


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[course]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/chromium)"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser_available():
    reason = _unavailable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test, but {reason}")
    if reason:
        pytest.skip(f"browser test skipped: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on a copy of the notebooks, started as `make lab` does (same course settings)."""

    def __init__(self, tmp: Path):
        self.dir, self.token, self.port = tmp / "student", "transferlab-browser-test", _free_port()
        build("student", NOTEBOOKS, self.dir, commit="browser-test")  # what `make student` writes to build/student
        env = dict(
            os.environ,
            JUPYTER_CONFIG_PATH=str(ROOT / "jupyter-config"),
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.dir}",
        ]
        if os.geteuid() == 0:
            cmd.insert(4, "--allow-root")
        self.log = (tmp / "jupyterlab.log").open("w")
        self.server = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:
            try:
                self.api("status")
                break
            except OSError:
                assert self.server.poll() is None, (tmp / "jupyterlab.log").read_text()[-2000:]
                assert time.monotonic() < deadline, f"JupyterLab did not answer within {TIMEOUT_MS // 1000} s"
                time.sleep(0.5)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self, keep: str = "") -> None:
        for session in self.api("sessions"):
            if session["path"] != keep:
                self.api(f"sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        print(f"Chromium {context.browser.version if context.browser else '?'}")
        yield page
        context.close()


# --- driving the UI ---------------------------------------------------------------------------------------------


def _open(page, lab: Lab, name: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    _wait_until_idle(page, name)


def _wait_until_idle(page, name: str) -> None:
    """Until ``name`` is the current tab, its kernel (the course's kernelspec) has started and is idle."""
    page.wait_for_function(
        """(name) => {
            const tab = document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current');
            const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
            const kernel = panel && panel.querySelector('.jp-KernelName');
            const status = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
            return tab && tab.innerText.trim() === name && kernel && kernel.innerText.trim() === 'Python 3 (ipykernel)'
                && status && status.dataset.status === 'idle';
        }""",
        arg=name,
    )


def _run_all(page, name: str) -> None:
    """Run ▸ Run All Cells, then wait until the kernel is idle and every code cell has run, or the run stopped at
    the first exercise's stub (Run All stops at an error, and the student edition's first stub is one)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    try:
        page.wait_for_function(
            """() => {
                const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
                const ran = p => /^\\[\\d+\\]:$/.test(p.textContent.trim());
                const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
                const status = panel.querySelector('.jp-Notebook-ExecutionIndicator').dataset.status;
                const stub = Array.from(panel.querySelectorAll('.jp-CodeCell'))
                    .find(c => c.querySelector('.jp-InputArea').textContent.includes('raise NotImplementedError()'));
                const busy = prompts.some(p => p.textContent.trim() === '[*]:');
                return prompts.length > 0 && status === 'idle' && !busy
                    && (prompts.every(ran) || (stub && ran(stub.querySelector('.jp-InputPrompt'))));
            }""",
            timeout=TIMEOUT_MS,
        )
    except Exception:
        _screenshot(page, name, "_timeout")
        prompts = page.eval_on_selector_all(
            f"{PANEL} .jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())"
        )
        status = page.eval_on_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator", "e => e.dataset.status")
        pending = [(i, p) for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
        errors = [t[-300:] for t in _output_texts(page) if re.search(r"\w+(Error|Exception)\b", t)]
        pytest.fail(
            f"Run All did not finish in {TIMEOUT_MS // 1000} s: kernel {status!r}, code cells without an "
            f"execution count (index, prompt): {pending[:10]} of {len(prompts)}; outputs that name an "
            f"error (an untagged one stops Run All): {errors[-2:]}; screenshot in {SCREENSHOTS}"
        )


def _save_and_read(page, lab: Lab, name: str) -> nbformat.NotebookNode:
    """File ▸ Save Notebook, then read what the UI wrote (outputs, tags) from the served copy."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Save Notebook$")).click()
    page.wait_for_function(
        """() => !document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current.jp-mod-dirty')"""
    )
    return nbformat.read(lab.dir / name, as_version=4)


def _screenshot(page, name: str, suffix: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{Path(name).stem}{suffix}.png"
    page.screenshot(path=str(path))
    return path


def _output_texts(page) -> list[str]:
    return page.eval_on_selector_all(f"{PANEL} .jp-OutputArea-output", "els => els.map(e => e.textContent)")


def _broken_images(page) -> tuple[int, list[str]]:
    """(number of output images, descriptions of those that did not render), each scrolled into view first."""
    images = page.locator(f"{PANEL} .jp-OutputArea-output img")
    broken = []
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        width = image.evaluate("img => img.decode().then(() => img.naturalWidth, () => 0)")
        if not width:
            broken.append(f"image {i} ({image.get_attribute('src')[:40]}...) has natural width 0")
    return images.count(), broken


def _errors_in(nb: nbformat.NotebookNode) -> list[str]:
    """Errors of a student edition after Run All: none before the first exercise, which must stop at its stub.

    Run All stops at the first error, so the first solution cell's NotImplementedError ends the run there.
    """
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            if not (errors and errors[0].ename == "NotImplementedError"):
                found.append(f"cell {i}: the first exercise did not stop at its stub (ran: {cell.execution_count})")
            return found
        if not set(cell.metadata.get("tags", [])) & RAISES_TAGS:
            found += [f"cell {i}: {o.ename}: {o.evalue}" for o in errors]
        if cell.execution_count is None:
            found.append(f"cell {i} never ran")
    return [*found, "no exercise found"]


def _toasts(page) -> list[str]:
    return page.eval_on_selector_all(".Toastify__toast, .jp-Notification-Toast", "els => els.map(e => e.innerText)")


# --- the tests --------------------------------------------------------------------------------------------------


def test_notebook_00_runs_and_its_map_opens_the_notebooks(page, lab):
    name = NOTEBOOKS[0].name
    _open(page, lab, name)
    page.wait_for_timeout(2000)  # the news question, when not switched off, shows up about now
    _screenshot(page, name, "_open")
    news = [t for t in _toasts(page) if "news" in t.lower()]
    assert not news, f"JupyterLab's news pop-up is showing: {news}"
    _run_all(page, name)
    ran = _save_and_read(page, lab, name)
    assert not _errors_in(ran), _errors_in(ran)
    count, broken = _broken_images(page)
    assert count >= 1 and not broken, (count, broken)
    _screenshot(page, name, "")

    # JupyterLab resolves a markdown link's href (to /files/NN_x.ipynb?...): read the notebook's name from it
    hrefs = page.eval_on_selector_all(f"{PANEL} .jp-MarkdownCell a[href*='.ipynb']", "els => els.map(e => e.href)")
    targets = sorted({m.group(1) for m in map(re.compile(r"/(\d\d_[^/?#]+\.ipynb)").search, hrefs) if m})
    assert targets == [p.name for p in NOTEBOOKS], f"course map links {targets} ({hrefs[:3]}...)"
    for target in targets:
        if target == name:
            continue
        _open_from_map(page, name, target)
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
        page.wait_for_function(
            "(name) => document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current')"
            "?.innerText.trim() === name",
            arg=name,
        )
    lab.shut_down_kernels()


def _open_from_map(page, home: str, target: str) -> None:
    link = page.locator(f"{PANEL} .jp-MarkdownCell a[href*='/{target}']").first
    link.scroll_into_view_if_needed()
    link.click()
    page.wait_for_function(
        "(name) => document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current')"
        "?.innerText.trim() === name",
        arg=target,
    )
    title = page.locator(f"{PANEL} .jp-MarkdownCell h1").first.text_content()
    assert title.startswith(target[:2]), f"the map's link {target!r} opened a notebook titled {title!r}"


def test_training_notebook_runs_and_shows_its_progress_bar_as_a_widget(page, lab):
    name = TRAINING_NOTEBOOK
    _open(page, lab, name)
    bar_cell = page.locator(f"{PANEL} .jp-CodeCell", has_text="history = fit(").first
    bar_cell.scroll_into_view_if_needed()
    _screenshot(page, name, "_open")
    stale = [t for t in _output_texts(page) if STALE_BAR.search(t)]  # asserted last, after the run

    _run_all(page, name)
    ran = _save_and_read(page, lab, name)
    assert not _errors_in(ran), _errors_in(ran)
    saved_bars = [
        o.data["text/plain"]
        for c in ran.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert saved_bars and not [t for t in saved_bars if STALE_BAR.search(t)], f"saved bars read {saved_bars}"
    texts = _output_texts(page)
    assert not [t for t in texts if WIDGET_AS_TEXT.search(t)], "a progress bar rendered as text, not as a widget"
    bars = page.locator(f"{PANEL} .jp-OutputArea-output .widget-hprogress")
    assert bars.count() >= 1, "no progress-bar widget rendered"
    bar_cell.scroll_into_view_if_needed()
    assert "100%" in bar_cell.locator(".jupyter-widgets").first.text_content()
    count, broken = _broken_images(page)
    assert count >= 1 and not broken, (count, broken)
    bar_cell.scroll_into_view_if_needed()
    _screenshot(page, name, "")
    lab.shut_down_kernels()
    assert not stale, f"on open, a stored progress bar showed a state training never ended in: {stale}"


@pytest.mark.parametrize("name", RUN_ALL)
def test_student_edition_runs_to_its_first_exercise(page, lab, name):
    _open(page, lab, name)
    _run_all(page, name)
    ran = _save_and_read(page, lab, name)
    assert not _errors_in(ran), _errors_in(ran)
    count, broken = _broken_images(page)
    assert count >= 1 and not broken, (count, broken)
    _screenshot(page, name, "")
    lab.shut_down_kernels()


def test_a_handout_shows_its_images(page, tmp_path):
    path = NOTEBOOKS[0].parent / TRAINING_NOTEBOOK
    html = tmp_path / "handouts" / (path.stem + ".html")
    html.parent.mkdir()
    html.write_text(handout_html(nbformat.read(path, as_version=4), path.parent, html.parent), encoding="utf-8")
    page.goto(html.as_uri())
    images = page.locator("img")
    assert images.count() >= 1
    widths = [
        images.nth(i).evaluate("img => img.decode().then(() => img.naturalWidth, () => 0)")
        for i in range(images.count())
    ]
    assert all(widths), f"images that did not render (natural width 0): {[i for i, w in enumerate(widths) if not w]}"
    _screenshot(page, path.name, "_handout")
