"""``nptface demo serve``: only the app's and the bundle's files, with a strict CSP; clear setup errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from nptface.on_device import server as demo_server


@pytest.fixture
def fake_vendor(tmp_path, monkeypatch):
    """A static folder with placeholder runtime files, so these tests need no npm."""
    static = tmp_path / "static"
    (static / "vendor").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html>")
    for name in demo_server.VENDOR_FILES:
        (static / "vendor" / name).write_bytes(b"placeholder")
    monkeypatch.setattr(demo_server, "STATIC", static)
    return static


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), b""


def test_serves_listed_bundle_files_only_with_a_strict_csp(fp32_bundle, fake_vendor):
    server = demo_server.make_server(fp32_bundle, "127.0.0.1", 0)
    thread = demo_server.serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, headers, body = _get(base + "/bundle/models/onnx-fp32.onnx")
        assert status == 200 and body == (fp32_bundle / "models" / "onnx-fp32.onnx").read_bytes()
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert "'wasm-unsafe-eval'" in headers["Content-Security-Policy"]
        config = json.loads(_get(base + "/config.json")[2])
        assert config["default_variant"] == "onnx-fp32" and config["limits"]["min_side"] > 0
        assert _get(base + "/static/vendor/ort-wasm-simd-threaded.wasm")[1]["Content-Type"] == "application/wasm"
        for path in (
            "/bundle/../manifest.json",
            "/bundle/%2e%2e/%2e%2e/etc/passwd",
            "/static/../server.py",
            "/etc/passwd",
            "/bundle/reference.npz",
            "/bundle/models/tflite-fp32.tflite",
        ):
            assert _get(base + path)[0] == 404, path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_idle_connection_is_closed_by_the_server(fp32_bundle, fake_vendor):
    import socket

    server = demo_server.make_server(fp32_bundle, "127.0.0.1", 0, idle_timeout=0.2)
    thread = demo_server.serve_in_thread(server)
    try:
        with socket.create_connection(server.server_address[:2], timeout=60) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\n")  # a request that never finishes
            assert idle.recv(1024) == b"", "the server closed the connection"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_missing_runtime_files_say_how_a_clone_and_a_pip_user_get_them(fp32_bundle, fake_vendor):
    (fake_vendor / "vendor" / "ort-wasm-simd-threaded.wasm").unlink()
    pattern = (
        r"ort-wasm-simd-threaded.wasm.*From a clone.*run ./dev setup.*with pip, install a wheel built by ./dev wheel"
    )
    with pytest.raises(demo_server.DemoSetupError, match=pattern):
        demo_server.make_server(fp32_bundle, "127.0.0.1", 0)


def test_the_page_is_told_the_clis_default_by_the_name_its_manifest_uses(fp32_bundle, fake_vendor, tmp_path):
    """An old bundle's int16-activation "onnx-int8" is onnx-w8a16 to the CLI; the page reads manifest.json as written."""
    import shutil

    from nptface.on_device.runtime import open_model

    old = tmp_path / "old"
    shutil.copytree(fp32_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    onnx = next(v for v in manifest["variants"] if v["name"] == "onnx-fp32")
    for key in ("weights", "activations"):
        del onnx[key]
    onnx.update(name="onnx-int8", precision="int8", recipe="static QDQ, MinMax calibration, int16 activations")
    (old / "manifest.json").write_text(json.dumps(manifest))

    cli = open_model(old, "onnxruntime")
    config = json.loads(demo_server.build_routes(old).config)
    assert (cli.variant, config["default_variant"]) == ("onnx-w8a16", "onnx-int8")
    assert cli.bundle.variants[cli.variant]["file"] == onnx["file"], "the same model file"
