"""The chat app: ``python gradio_app.py --load "ImageCaptioning_cuda:0,Text2Image_cuda:0"``.

Serves on http://127.0.0.1:7860 (``--host``/``--port``); models load on their first use. The same app
is ``python -m orchestrator ui`` (this file only forwards to it). From Python, the ``/chat`` endpoint works
with ``gradio_client``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    reply, images, tool_calls = client.predict(
        {"text": "show me the edges of this image", "files": [handle_file("photo.jpg")]}, "en", api_name="/chat"
    )
"""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["ui", *sys.argv[1:]]))
