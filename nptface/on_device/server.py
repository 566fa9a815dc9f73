"""``nptface demo serve``: hands the page, its WASM runtime and the bundle's files to a browser.

No inference happens here, and nothing is received: the server answers GET/HEAD for a fixed set
of files (the app, the vendored onnxruntime-web build, the bundle's manifest, model card and
ONNX models) and nothing else, bound to 127.0.0.1 by default. A Content-Security-Policy of
``default-src 'self'`` (plus ``'wasm-unsafe-eval'`` to compile the runtime) makes the browser
refuse any request to another origin. The page checks every file's sha256 against the manifest
itself — the device, not the server, decides whether to trust the model — so a tampered bundle
is still served and then refused, with a message, in the page. A connection that sends nothing
for ``idle_timeout`` seconds is closed, so idle or stalled clients cannot hold threads forever.
With a TLS context (:mod:`nptface.on_device.tls`) the same files are served over HTTPS; each
handshake runs in its connection's thread, under the same timeout, so a slow or plain-HTTP client
stalls no one else.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import ssl
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nptface.core.image_policy import LIMITS
from nptface.edge_export.bundle import MANIFEST, BundleError, load_bundle, verify_files
from nptface.on_device.runtime import default_variant

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
# onnxruntime-web's WASM-only build: the ES module, the Emscripten glue it imports, the binary.
VENDOR_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".md": "text/markdown; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
}


IDLE_TIMEOUT_S = 30.0


class DemoSetupError(FileNotFoundError):
    """The vendored browser runtime is missing: copied from npm by ``./dev setup``, inside wheels built by ``./dev wheel``."""


def missing_vendor_files(vendor: Path = VENDOR) -> list[str]:
    return [name for name in VENDOR_FILES if not (vendor / name).is_file()]


@dataclass(frozen=True)
class Routes:
    """URL path -> file on disk, fixed when the server starts; everything else is 404."""

    files: dict[str, Path]
    config: bytes

    def resolve(self, url_path: str) -> Path | None:
        return self.files.get(url_path)


def build_routes(bundle_dir: str | Path, static: Path | None = None) -> Routes:
    bundle_dir = Path(bundle_dir)
    static = static or STATIC
    missing = missing_vendor_files(static / "vendor")
    if missing:
        raise DemoSetupError(
            f"{static / 'vendor'}: onnxruntime-web files {missing} are missing. From a clone of nptface, run "
            "./dev setup (it runs npm ci and copies them there); with pip, install a wheel built by ./dev wheel, "
            "which contains them"
        )
    bundle = load_bundle(bundle_dir, verify=False)
    try:
        verify_files(bundle.root, bundle.manifest["files"])
    except BundleError as error:
        logger.warning("serving a bundle that does not verify (the page will refuse it): %s", error)
    files = {"/": static / "index.html", f"/bundle/{MANIFEST}": bundle.root / MANIFEST}
    files |= {f"/static/{p.relative_to(static).as_posix()}": p for p in static.rglob("*") if p.is_file()}
    # Only what the page reads: the model card, the ONNX variants and the face detector's ONNX (not the
    # reference, Core ML, ...).
    wanted = {"README.md"} | {v["file"] for v in bundle.manifest["variants"] if v["format"] == "onnx"}
    if "detector" in bundle.manifest:
        wanted.add(bundle.manifest["detector"]["files"]["onnx"])
    files |= {
        f"/bundle/{name}": bundle.root / name
        for name in bundle.manifest["files"]
        if name in wanted and (bundle.root / name).resolve().is_relative_to(bundle.root.resolve())
    }
    # The page reads manifest.json as written; an old bundle's variant may be renamed on load (numerics.upgrade_variant),
    # so the default is named as the file names it: the page then runs the same model file as the CLI.
    written = json.loads((bundle.root / MANIFEST).read_text())["variants"]
    default_file = bundle.variants[default_variant(bundle, "onnxruntime")]["file"]
    config = {
        "limits": LIMITS.to_dict(),
        "default_variant": next(v["name"] for v in written if v["file"] == default_file),
        "default_operating_point": bundle.default_operating_point,
        "bundle_url": "/bundle/",
        "manifest": MANIFEST,
    }
    return Routes(files, json.dumps(config).encode())


def _handler(routes: Routes, idle_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nptface-demo"
        sys_version = ""
        timeout = idle_timeout  # socket timeout: an idle keep-alive or half-sent request is dropped

        def setup(self) -> None:
            super().setup()  # sets the timeout, which bounds the handshake too
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._send(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._send(body=True)

        def _send(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path == "/config.json":
                data, kind = routes.config, "application/json"
            else:
                file = routes.resolve(path)
                if file is None or not file.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND, "not a file of this demo")
                    return
                data = file.read_bytes()
                kind = TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A failed handshake (say, http:// to the https port) or a dropped connection: one line, no traceback.
        logger.info("connection from %s ended: %s", client_address[0], sys.exc_info()[1])


def make_server(
    bundle_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    idle_timeout: float = IDLE_TIMEOUT_S,
    tls: ssl.SSLContext | None = None,
) -> DemoServer:
    """A bound (not yet serving) server, HTTPS with ``tls``; port 0 picks a free port (``server.server_address``)."""
    server = DemoServer((host, port), _handler(build_routes(bundle_dir), idle_timeout))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="nptface-demo", daemon=True)
    thread.start()
    return thread
