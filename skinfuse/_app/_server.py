"""The page and its two JSON endpoints on the standard library's threading HTTP server.

``GET /`` is the page; ``GET /api/form`` the model's fields and card; ``POST /api/analyse``
takes the image as the request body (the form's fields in the query string) and answers
:func:`~._handler.analyse`'s result, or ``{"error": message}`` with status 400. Nothing is
written to disk: the upload lives in memory for the request only.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from ._handler import MAX_UPLOAD_BYTES, InputError, analyse
from ._page import PAGE

__all__ = ["make_server"]


def make_server(page, host="127.0.0.1", port=0, *, log=None):
    """A :class:`~http.server.ThreadingHTTPServer` serving ``page`` (a ``ModelPage``) on
    ``host``:``port`` (``0``: a free port; ``server.server_address`` says which). ``log``:
    a callable taking one line per request, or ``None`` for silence."""
    lock = threading.Lock()  # one prediction at a time: the model is shared, Grad-CAM hooks it
    form = json.dumps(page.form()).encode()
    html = PAGE.encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "skinfuse"

        def log_message(self, format, *args):
            if log is not None:
                log(f"{self.address_string()} {format % args}")

        def _send(self, status, body: bytes, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            path = urlsplit(self.path).path
            if path == "/":
                self._send(HTTPStatus.OK, html, "text/html; charset=utf-8")
            elif path == "/api/form":
                self._send(HTTPStatus.OK, form, "application/json")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page at {path}"})

        def do_POST(self):
            url = urlsplit(self.path)
            if url.path != "/api/analyse":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint at {url.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_UPLOAD_BYTES:
                self.close_connection = True
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                    "error": f"the file is larger than the {MAX_UPLOAD_BYTES // 2**20} MB the "
                    "page reads: upload a smaller copy"})  # fmt: skip
                return
            data = self.rfile.read(length)
            fields = {k: v for k, v in parse_qsl(url.query, keep_blank_values=True)}
            try:
                with lock:
                    result = analyse(page, data, fields)
            except InputError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            except Exception as exc:  # the server keeps serving; the page says what failed
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                           {"error": f"the model failed on this image: {exc}"})  # fmt: skip
                return
            self._json(HTTPStatus.OK, result)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
