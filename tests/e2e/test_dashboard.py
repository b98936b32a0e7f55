"""The operator's dashboard (service/static) in a real headless Chromium, driven by Selenium,
against the real service: a Pipeline with the demo camera (real face photos, CenterFace)
served by uvicorn on 127.0.0.1, with its config in a file under tmp_path.

The browser is Debian's `chromium` with its `chromium-driver`, started from fixed paths:
Selenium Manager is never asked for a driver, so nothing is downloaded. Every wait has a
deadline (WebDriverWait), so a broken page fails its test instead of hanging it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from e2e_support import camera_config, demo_camera, visible_faces, wait_until
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as expect
from selenium.webdriver.support.wait import WebDriverWait

from edge.configfile import load_config, save_config
from edge.detectors.base import Detector
from edge.pipeline import Pipeline

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
PAGE_S = 20  # the page reacting to a click or to the API
FRAMES_S = 90  # a camera's first redacted frames: model load, then detection on a busy machine

# A frame as the page shows it, read back through a canvas (same origin, so not tainted).
IMAGE_AS_PNG = """
const image = arguments[0];
if (!image.naturalWidth) return null;
const canvas = document.createElement("canvas");
canvas.width = image.naturalWidth;
canvas.height = image.naturalHeight;
canvas.getContext("2d").drawImage(image, 0, 0);
return canvas.toDataURL("image/png");
"""


@dataclass
class Dashboard:
    """A running service: its URL and token, the pipeline behind it, its config and audit
    files."""

    url: str
    token: str
    pipeline: Pipeline
    config_path: Path
    audit_path: Path


@pytest.fixture
def browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_api: Callable[..., httpx.Client]
) -> Iterator[WebDriver]:
    """Headless Chromium. It depends on serve_api only so that it closes (and with it every
    open preview) before the servers it talks to stop."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(scripts/install.sh --test-system)"
        )

    def no_downloads(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Selenium Manager was asked for a driver; it must not download")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(PAGE_S)
        driver.set_script_timeout(PAGE_S)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(
    tmp_path: Path,
    running: Callable[[Pipeline], Pipeline],
    serve_api: Callable[..., httpx.Client],
) -> Dashboard:
    """One demo camera (640x360, 10 fps, four faces) behind the API, with a config file."""
    config = camera_config(tmp_path, [demo_camera("demo")])
    config_path = tmp_path / "edgeblur.yaml"
    save_config(config, config_path)
    pipeline = running(Pipeline(config, config_path=config_path))
    client = serve_api(pipeline, config_path=config_path)
    return Dashboard(
        url=str(client.base_url).rstrip("/"),
        token=client.headers["Authorization"].removeprefix("Bearer "),
        pipeline=pipeline,
        config_path=config_path,
        audit_path=tmp_path / "audit.log",  # where serve_api keeps it
    )


def open_previews(dashboard: Dashboard) -> int:
    """Clients the camera's preview serves now, as the pipeline counts them."""
    worker = dashboard.pipeline.worker("demo")
    return worker.preview.subscribers if worker is not None else 0


def wait(browser: WebDriver, seconds: float = PAGE_S) -> WebDriverWait:
    return WebDriverWait(browser, seconds, poll_frequency=0.2, ignored_exceptions=[])


def wait_for_text(browser: WebDriver, element_id: str, text: str) -> str:
    """Waits until the element's text contains `text`; on timeout, says what it shows."""

    def shows(b: WebDriver) -> str:
        current: str = b.find_element(By.ID, element_id).text
        return current if text in current else ""

    try:
        shown: str = wait(browser).until(shows)
    except TimeoutException:
        now = browser.find_element(By.ID, element_id).text
        pytest.fail(f"#{element_id} never said {text!r}; it says {now!r}")
    return shown


def sign_in(browser: WebDriver, url: str, token: str) -> None:
    browser.get(f"{url}/")
    field = wait(browser).until(expect.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def signed_in(browser: WebDriver, dashboard: Dashboard) -> None:
    sign_in(browser, dashboard.url, dashboard.token)
    wait(browser).until(expect.visibility_of_element_located((By.ID, "dashboard")))


def figure(browser: WebDriver, camera_id: str, field: str) -> float:
    """A number as the camera's tile shows it ("1,234" and "10.0" included); -1 for none."""
    selector = f'[data-camera="{camera_id}"] [data-field="{field}"]'
    cells = browser.find_elements(By.CSS_SELECTOR, selector)
    text = "".join(c for c in cells[0].text if c.isdigit() or c == ".") if cells else ""
    try:
        return float(text)
    except ValueError:
        return -1.0


def shown_frame(browser: WebDriver, camera_id: str) -> np.ndarray | None:
    """The frame the camera's tile shows now, as BGR uint8 (None before the first one)."""
    image = browser.find_element(By.CSS_SELECTOR, f'[data-camera="{camera_id}"] img')
    url = browser.execute_script(IMAGE_AS_PNG, image)
    if not url:
        return None
    png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    decoded: np.ndarray | None = cv2.imdecode(png, cv2.IMREAD_COLOR)
    return decoded


def wait_for_new_frame(browser: WebDriver, camera_id: str, seconds: float) -> np.ndarray:
    """Waits until the tile shows a frame, then until it shows a different one: the preview
    is live, not a still."""

    def frame_unlike(previous: np.ndarray | None) -> Callable[[WebDriver], list[np.ndarray]]:
        def check(b: WebDriver) -> list[np.ndarray]:  # a list: WebDriverWait tests truthiness
            frame = shown_frame(b, camera_id)
            new = frame is not None and (previous is None or not np.array_equal(frame, previous))
            return [frame] if new else []

        return check

    [first] = wait(browser, seconds).until(frame_unlike(None), f"{camera_id}: no frame shown")
    [frame] = wait(browser, seconds).until(frame_unlike(first), f"{camera_id}: frame frozen")
    return frame


def editor_document(browser: WebDriver) -> dict[str, Any]:
    text = wait(browser).until(
        lambda b: b.find_element(By.ID, "config-text").get_attribute("value"),
        "the config editor never filled",
    )
    document: dict[str, Any] = json.loads(text)
    return document


def set_editor(browser: WebDriver, text: str) -> None:
    """Replaces the editor's text as typing would (the page hears an input event)."""
    browser.execute_script(
        "const area = document.getElementById('config-text');"
        "area.value = arguments[0];"
        "area.dispatchEvent(new Event('input', {bubbles: true}));",
        text,
    )


def save(browser: WebDriver) -> None:
    browser.find_element(By.ID, "config-save").click()


def line_of(text: str, needle: str) -> int:
    lines = [number for number, line in enumerate(text.split("\n"), 1) if needle in line]
    assert len(lines) == 1, f"{needle!r} is on lines {lines}"
    return lines[0]


def error_items(browser: WebDriver) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, "#config-errors li")


def gutter_line(browser: WebDriver, line: int) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, f'#config-gutter [data-line="{line}"]')


def status_text(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "config-status").text


def test_live_camera_tile_shows_anonymised_frames(
    browser: WebDriver, dashboard: Dashboard, leak_detectors: list[Detector], tmp_path: Path
) -> None:
    signed_in(browser, dashboard)
    assert "only ever shows frames whose faces were masked" in browser.find_element(
        By.CSS_SELECTOR, ".privacy"
    ).text

    tile = '[data-camera="demo"]'
    wait(browser, FRAMES_S).until(
        lambda b: b.execute_script(
            "return document.querySelector(arguments[0]).naturalWidth;", f"{tile} img"
        ),
        "the preview <img> never decoded a frame",
    )
    frame = wait_for_new_frame(browser, "demo", FRAMES_S)
    assert frame.shape == (360, 640, 3)
    for field in ("fps", "frames_out", "faces_redacted"):
        wait(browser).until(
            lambda b, field=field: figure(b, "demo", field) > 0, f"{field} stayed at zero"
        )
    wait_for_text(browser, "readiness", "Ready (1 camera)")
    assert browser.find_element(By.CSS_SELECTOR, f"{tile} .state").text == "running"
    recording = browser.find_element(By.CSS_SELECTOR, f'{tile} [data-field="recording"]')
    assert recording.text == "recording"

    # What the operator sees holds faces (the page counts them redacted), none of them visible.
    assert visible_faces(leak_detectors, frame) == 0
    assert visible_faces(leak_detectors, wait_for_new_frame(browser, "demo", FRAMES_S)) == 0

    screenshot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    # On a phone: one column, nothing wider than the screen.
    browser.set_window_size(390, 844)
    wait(browser).until(
        lambda b: b.execute_script(
            "const page = document.documentElement; return page.scrollWidth <= page.clientWidth;"
        ),
        "the page is wider than a phone's screen",
    )


def test_invalid_config_is_refused_with_errors_at_their_lines(
    browser: WebDriver, dashboard: Dashboard
) -> None:
    signed_in(browser, dashboard)
    document = editor_document(browser)
    before = dashboard.config_path.read_bytes()

    document["redaction"]["mask_scale"] = -1.5  # below its bound (>= 1)
    document["redaction"]["colour"] = "red"  # no such setting
    text = json.dumps(document, indent=2)
    set_editor(browser, text)
    save(browser)

    items = wait(browser).until(lambda b: len(error_items(b)) == 2 and error_items(b))
    found = {item.get_attribute("data-path"): item for item in items}
    assert set(found) == {"redaction.mask_scale", "redaction.colour"}
    for path in found:
        line = line_of(text, f'"{path.split(".")[-1]}"')
        assert found[path].get_attribute("data-line") == str(line)
        assert found[path].text.startswith(f"Line {line} {path}:")
        marker = gutter_line(browser, line)
        assert "bad" in marker.get_attribute("class").split()
        assert path in marker.get_attribute("title")
    assert "greater than or equal to 1" in found["redaction.mask_scale"].text
    assert "Extra inputs are not permitted" in found["redaction.colour"].text
    assert status_text(browser).startswith("Not saved")
    assert browser.find_element(By.ID, "config-text").get_attribute("aria-invalid") == "true"
    # The first error's line is selected, ready to fix.
    selected = browser.execute_script(
        "const a = document.getElementById('config-text');"
        "return a.value.slice(a.selectionStart, a.selectionEnd);"
    )
    assert '"mask_scale": -1.5' in selected

    # Text that is not JSON is caught in the page, at its line, and never sent.
    broken = text.replace('"method": "noise",', '"method": "noise"')
    set_editor(browser, broken)
    save(browser)
    wait_for_text(browser, "config-status", "not valid JSON")
    [item] = error_items(browser)
    assert item.get_attribute("data-line") == str(line_of(broken, '"method": "noise"') + 1)

    assert dashboard.config_path.read_bytes() == before
    assert not dashboard.audit_path.exists()
    assert dashboard.pipeline.config().redaction.mask_scale == 1.3


def test_valid_config_change_is_saved_applied_and_audited(
    browser: WebDriver, dashboard: Dashboard
) -> None:
    signed_in(browser, dashboard)
    wait_for_new_frame(browser, "demo", FRAMES_S)
    document = editor_document(browser)
    assert document["redaction"]["mask_scale"] == 1.3

    document["redaction"]["mask_scale"] = 1.6
    set_editor(browser, json.dumps(document, indent=2))
    save(browser)

    wait_for_text(browser, "config-status", "Saved and applied 1 change(s): redaction.mask_scale.")
    assert load_config(dashboard.config_path).redaction.mask_scale == 1.6
    assert dashboard.pipeline.config().redaction.mask_scale == 1.6
    assert editor_document(browser)["redaction"]["mask_scale"] == 1.6
    assert error_items(browser) == []

    newest = wait(browser).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#audit > li"), "no audit entry shown"
    )[0]
    assert "redaction.mask_scale: 1.3 → 1.6" in newest.text
    assert "PUT from 127.0.0.1 with token hmac:" in newest.text
    assert dashboard.token not in browser.find_element(By.ID, "audit").text
    [entry] = [json.loads(line) for line in dashboard.audit_path.read_text().splitlines()]
    assert entry["changes"] == [{"path": "redaction.mask_scale", "old": 1.3, "new": 1.6}]

    # The camera restarted with the new mask (ending its preview); the tile shows it live
    # again, through one preview: every earlier one was closed, none left behind.
    wait_for_new_frame(browser, "demo", FRAMES_S)
    wait_until(lambda: open_previews(dashboard) == 1, PAGE_S, "exactly one open preview")


def test_wrong_token_is_refused_and_a_revoked_one_signs_out(
    browser: WebDriver, dashboard: Dashboard
) -> None:
    sign_in(browser, dashboard.url, "not-the-token-0123456789")
    wait_for_text(browser, "sign-in-error", "refused this token")
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    assert browser.find_elements(By.CSS_SELECTOR, "[data-camera]") == []

    # Signed in, then the token stops working (say, the service restarted with a new one):
    # the next refresh goes back to sign-in, saying why, and forgets the old token.
    browser.find_element(By.ID, "token").clear()
    signed_in(browser, dashboard)
    assert browser.execute_script("return sessionStorage.getItem('edgeblur.token')") == (
        dashboard.token
    )
    wait_until(lambda: open_previews(dashboard) == 1, FRAMES_S, "the tile's preview to open")
    try:
        browser.execute_script("session.token = 'revoked-token-0123456789';")
    except JavascriptException as error:
        pytest.fail(f"the page's session object is not where the test expects it: {error}")
    wait(browser).until(expect.visibility_of_element_located((By.ID, "sign-in")))
    assert "no longer accepts this token" in browser.find_element(By.ID, "sign-in-error").text
    assert browser.execute_script("return sessionStorage.length") == 0
    assert browser.find_elements(By.CSS_SELECTOR, "[data-camera]") == []
    wait_until(lambda: open_previews(dashboard) == 0, PAGE_S, "the previews to close")


def test_change_without_a_config_file_says_why(
    browser: WebDriver, dashboard: Dashboard, serve_api: Callable[..., httpx.Client]
) -> None:
    # The same pipeline behind a second server started without a config file.
    no_file = serve_api(dashboard.pipeline, config_path=None)
    sign_in(browser, str(no_file.base_url).rstrip("/"), dashboard.token)
    editor_document(browser)
    save(browser)
    wait_for_text(browser, "config-status", "this service runs without a config file")
    assert browser.find_element(By.ID, "config-status").get_attribute("role") == "alert"
    assert browser.find_element(By.ID, "dashboard").is_displayed()
    assert not dashboard.audit_path.exists()
