"""Issue 20: a web page from another origin calls the API in a real browser (CORS), as NextChat served from its own
site does; an origin the server was not told about is refused by the browser."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from served_app import free_port, served_api

from orchestrator import Orchestrator

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is missing: apt-get install -y chromium"
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PAGE = """<!doctype html><html><body><pre id="out">waiting</pre><script>
fetch("%(api)s/chat/completions", {method: "POST",
  headers: {"Authorization": "Bearer sk-browser", "Content-Type": "application/json"},
  body: JSON.stringify({model: "visual-orchestrator", messages: [{role: "user", content: "/help"}]})})
 .then(r => r.json()).then(j => { document.getElementById("out").textContent = "OK " + j.choices[0].message.content; })
 .catch(e => { document.getElementById("out").textContent = "BLOCKED " + e; });
</script></body></html>"""


def serve_page(port: int, html: str) -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed-origin", "other-origin"])
def test_a_page_from_an_allowed_origin_calls_the_api_and_another_is_refused(tmp_path, allowed):
    from playwright.sync_api import sync_playwright

    port = free_port()
    origin = f"http://localhost:{port}"  # another origin than the API's http://127.0.0.1:…
    orch = Orchestrator("Image2Canny_cpu", weights="tiny", brain="rules", session_root=tmp_path)
    cors = (origin,) if allowed else ("http://elsewhere.example",)
    with served_api(orch, api_key="sk-browser", cors_origins=cors) as api, sync_playwright() as playwright:
        server = serve_page(port, PAGE % {"api": api})
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.goto(origin + "/")
            page.wait_for_function("document.getElementById('out').textContent !== 'waiting'", timeout=30_000)
            text = page.inner_text("#out")
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    if allowed:
        assert text.startswith("OK ") and "image2canny" in text, (
            text
        )  # the rules brain's /help, through the API
    else:
        assert text.startswith("BLOCKED "), text
