"""The chat app in a real browser (Debian chromium through playwright): what a person sees and does.

Tiny weights and the rules brain: turns take a second or two. The screenshot goes to a temporary folder
(printed); with VO_UPDATE_SCREENSHOT=1 it is also copied to docs/screenshot.png for the README.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from served_app import served

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is missing: apt-get install -y chromium"
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
LOAD = "Image2Canny_cpu,ImageCaptioning_cpu,Text2Image_cpu"
NAME = re.compile(r"image/[0-9a-f]{8}\.png")
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from orchestrator import Orchestrator

    orchestrator = Orchestrator(LOAD, weights="tiny", brain="rules",
                                session_root=tmp_path_factory.mktemp("sessions"))  # fmt: skip
    with served(orchestrator) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg", quality=90)
    (folder / "notes.png").write_text("shopping list: milk, eggs, bread\n")  # a text file named .png
    return {"photo": folder / "astronaut.jpg", "fake": folder / "notes.png"}


def open_chat(browser, url: str, height: int = 940):
    context = browser.new_context(viewport={"width": 1360, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#vo-input textarea")
    return page


def send(page, text: str, files: list[Path] = ()) -> None:
    """Type (and attach), press Enter, wait until the turn is over (the textbox is usable again)."""
    turns = page.locator("#vo-chat .message-row").count()
    if files:
        page.set_input_files("#vo-input input[type=file]", [str(f) for f in files])
        page.wait_for_selector("#vo-input img, #vo-input .thumbnail-item", state="attached")
    if text:
        page.fill("#vo-input textarea", text)
    page.press("#vo-input textarea", "Enter")
    page.wait_for_function(f"document.querySelectorAll('#vo-chat .message-row').length > {turns}")
    page.wait_for_function("!document.querySelector('#vo-input textarea').disabled")
    page.wait_for_function("!document.querySelector('#vo-chat .loading-spinner')")


def chat_text(page) -> str:
    return page.inner_text("#vo-chat")


def open_step(page, tool: str) -> str:
    """Open the collapsible step of a tool call (if closed) and return its text."""
    step = page.locator("#vo-chat .thought-group", has_text=tool).first
    title = step.locator(".title").first
    for _ in range(40):
        text = step.inner_text()
        if "Arguments" in text:
            return text
        if "expanded" not in (title.get_attribute("class") or ""):
            title.click()
        page.wait_for_timeout(250)
    raise AssertionError(f"the {tool} step did not open: {text}")


def names(text: str) -> list[str]:
    """The image names in the chat, each once, in order."""
    return list(dict.fromkeys(NAME.findall(text)))


def test_upload_a_photo_ask_for_edges_and_see_the_step_and_the_result(app, browser, photos, tmp_path_factory):
    page = open_chat(browser, app, height=1200)
    send(page, "show me the edges of this image", [photos["photo"]])
    text = chat_text(page)
    assert "image2canny" in text, text
    uploaded, edges = names(text)  # the photo as stored, the edge map made from it
    images = page.locator("#vo-chat img")
    assert images.count() >= 2  # the uploaded photo and the edge map, inline

    step = open_step(page, "image2canny")  # the step's arguments, the model loading, the result
    assert "loading Image2Canny on cpu" in step and uploaded in step and f"is {edges}" in step, step

    source = images.last.get_attribute("src")  # the image behind the chat is the full-size file
    response = page.request.get(source if source.startswith("http") else app + source.lstrip("/"))
    assert response.ok and Image.open(io.BytesIO(response.body())).size == (64, 64)

    card = page.locator('#vo-models [data-card="Image2Canny"]')
    assert card.get_attribute("data-state") == "resident"
    page.eval_on_selector("#vo-chat .bubble-wrap", "e => e.scrollTo(0, e.scrollHeight)")
    shot = tmp_path_factory.mktemp("screenshot") / "screenshot.png"
    page.screenshot(path=str(shot))
    print(f"\nscreenshot: {shot}")
    if os.environ.get("VO_UPDATE_SCREENSHOT") == "1":
        target = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(shot, target)
    page.context.close()


def test_two_browsers_never_see_each_others_images_and_clear_resets_only_one(app, browser, photos):
    alice, bob = open_chat(browser, app), open_chat(browser, app)
    send(alice, "show me the edges of this image", [photos["photo"]])
    alice_image = names(chat_text(alice))[0]

    send(bob, f"/image2canny image={alice_image}")
    assert f"no image named '{alice_image}'" in chat_text(bob)
    assert bob.locator("#vo-chat img").count() == 0

    alice.click("#vo-clear")
    alice.wait_for_function("document.querySelectorAll('#vo-chat .message-row').length == 0")
    assert alice_image in chat_text(bob)  # bob's own history is untouched
    send(alice, f"/image2canny image={alice_image}")
    assert f"no image named '{alice_image}'" in chat_text(alice)  # the cleared session forgot its images
    alice.context.close()
    bob.context.close()


def test_a_text_file_named_png_is_refused_clearly_and_the_chat_goes_on(app, browser, photos):
    page = open_chat(browser, app)
    send(page, "show me the edges of this image", [photos["fake"]])
    text = chat_text(page)
    assert "notes.png" in text and "not an image" in text, text
    send(page, "show me the edges of this image", [photos["photo"]])
    assert len(names(chat_text(page))) == 2 and page.locator("#vo-chat img").count() >= 2
    page.context.close()


def test_chinese_switch_translates_the_page_examples_and_the_reply(app, browser):
    page = open_chat(browser, app)
    page.get_by_text("中文").click()
    page.wait_for_function("document.querySelector('#vo-clear').innerText.includes('清空')")
    page.get_by_text("显示最后一张图片的边缘").click()  # an example fills the textbox
    page.wait_for_function("document.querySelector('#vo-input textarea').value.includes('边缘')")
    send(page, "")
    reply = page.locator("#vo-chat .message-row").last.inner_text()
    assert "image2canny" in reply and re.search(r"[\u4e00-\u9fff]", reply.replace("边缘", "")), reply
    page.context.close()


def test_a_reply_appears_token_by_token_while_the_model_is_still_writing(browser, tmp_path_factory):
    """Issue 19: an openai-compatible server streams; the browser shows the words as they come."""
    import threading

    from scripted_llm import ScriptedLLM, Stream

    from orchestrator import Orchestrator

    gate = threading.Event()
    words = ["The ", "first ", "words ", "came ", "early, ", "the ", "last ", "ones ", "later."]
    with ScriptedLLM([Stream(words, gate=gate, gate_after=3)]) as llm:
        orchestrator = Orchestrator("Image2Canny_cpu", weights="tiny", brain="openai",
                                    brain_options={"base_url": llm.url, "api_key": "k", "max_retries": 0},
                                    session_root=tmp_path_factory.mktemp("stream-sessions"))  # fmt: skip
        with served(orchestrator) as url:
            page = open_chat(browser, url)
            page.fill("#vo-input textarea", "tell me")
            page.press("#vo-input textarea", "Enter")
            page.wait_for_function("document.querySelector('#vo-chat').innerText.includes('The first words')")
            assert "later." not in chat_text(page)  # the server has not even sent it yet
            assert page.locator("#vo-input textarea").is_disabled()  # the turn is still running
            gate.set()
            page.wait_for_function("document.querySelector('#vo-chat').innerText.includes('ones later.')")
            page.wait_for_function("!document.querySelector('#vo-input textarea').disabled")
            assert chat_text(page).count("The first words came early, the last ones later.") == 1
