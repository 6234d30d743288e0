"""``skinfuse serve`` through the command line, and the page in a real headless Chromium."""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import skinfuse._app
from skinfuse._cli import main


@pytest.fixture
def served(monkeypatch):
    """Run ``main(args)`` in a thread; yield ``start(args) -> base URL``; stop it after."""
    servers, results, threads = [], [], []
    make_server = skinfuse._app.make_server

    def recording(*args, **kwargs):
        server = make_server(*args, **kwargs)
        servers.append(server)
        return server

    monkeypatch.setattr(skinfuse._app, "make_server", recording)

    def start(args):
        thread = threading.Thread(target=lambda: results.append(main(args)), daemon=True)
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 60
        while not servers and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servers, f"the server did not start (exit status {results})"
        host, port = servers[0].server_address[:2]
        return f"http://{host}:{port}"

    yield start
    for server in servers:
        server.shutdown()
    for thread in threads:
        thread.join(10)
    assert results == [0] * len(threads)


def _post(url, data):
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_binds_to_loopback_and_keeps_serving_after_bad_input(
    app_models, served, lesion_png, capsys
):
    base = served(["serve", str(app_models[0]), "--port", "0", "--quiet"])
    assert base.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        assert b"not a medical device" not in response.read()  # the notice comes from the form
    with urllib.request.urlopen(base + "/api/form", timeout=10) as response:
        form = json.loads(response.read())
    assert "not a medical device" in form["notice"]
    status, body = _post(base + "/api/analyse", b"plain text\n")
    assert status == 400 and "not an image" in body["error"]
    status, body = _post(base + "/api/analyse?age=300", lesion_png())
    assert status == 400 and "out of range" in body["error"]
    status, body = _post(base + "/api/analyse?age=40&sex=female&localization=back", lesion_png())
    assert status == 200
    assert sum(p["probability"] for p in body["probabilities"]) == pytest.approx(1)


def test_serve_refuses_a_missing_model_and_a_bad_port_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.skinfuse")]) == 2
    assert "model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", "m.skinfuse", "--port", "70000"])
    assert exc.value.code == 2
    assert "must be at most 65535" in capsys.readouterr().err


def _chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_page_in_a_headless_browser(app_models, served, lesion_png, tmp_path):
    """Upload a lesion with metadata, read the top class and see the overlay; upload a text
    file named .jpg, read the message; upload a good image again and get a result."""
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    base = served(["serve", str(app_models[0]), "--port", "0", "--quiet"])
    good = tmp_path / "lesion.png"
    good.write_bytes(lesion_png(120, 160))
    text = tmp_path / "notes.jpg"
    text.write_text("this is a text file, not a photograph\n")
    shots = Path(os.environ.get("SKINFUSE_SCREENSHOTS", tmp_path))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(base + "/")
            page.wait_for_selector("#f-localization option[value=back]", state="attached")
            page.set_input_files("#image", str(good))
            page.fill("#f-age", "55")
            page.select_option("#f-sex", "male")
            page.select_option("#f-localization", "back")
            page.click("#go")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            top = page.inner_text("#top")
            assert top == page.inner_text("#bars .bar:first-child .name")
            assert top in {"melanoma", "melanocytic nevi", "basal cell carcinoma",
                           "actinic keratoses and intraepithelial carcinoma / Bowen's disease",
                           "benign keratosis-like lesions", "dermatofibroma",
                           "vascular lesions"}  # fmt: skip
            size = page.evaluate("[document.getElementById('overlay').naturalWidth,"
                                 " document.getElementById('overlay').naturalHeight]")  # fmt: skip
            assert size == [160, 120]
            assert page.is_visible("#refer")
            page.screenshot(path=str(shots / "serve_page.png"), full_page=True)

            page.set_input_files("#image", str(text))
            page.click("#go")
            page.wait_for_function("document.getElementById('error').textContent !== ''")
            assert "not an image" in page.inner_text("#error")
            assert page.is_hidden("#result")

            page.set_input_files("#image", str(good))
            page.click("#go")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.inner_text("#error") == ""
            assert page.inner_text("#top") == top
        finally:
            browser.close()
