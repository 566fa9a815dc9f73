"""``nptface demo serve --tls``: HTTPS with a self-signed certificate a client can pin by its fingerprint."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import urllib.request

import pytest

from nptface.cli import main
from nptface.on_device import server as demo_server
from nptface.on_device.tls import fingerprint, self_signed_certificate, served_names, server_context

pytest.importorskip("cryptography", reason="cryptography makes the self-signed certificate (the export extra)")


@pytest.fixture
def fake_vendor(tmp_path, monkeypatch):
    static = tmp_path / "static"
    (static / "vendor").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>demo</title>")
    for name in demo_server.VENDOR_FILES:
        (static / "vendor" / name).write_bytes(b"placeholder")
    monkeypatch.setattr(demo_server, "STATIC", static)
    return static


def test_the_self_signed_certificate_names_localhost_is_private_and_is_reused(tmp_path):
    cert, key = self_signed_certificate(tmp_path, served_names("127.0.0.1"))
    assert key.stat().st_mode & 0o077 == 0, "the private key is readable by its owner only"
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert fingerprint(cert) == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert self_signed_certificate(tmp_path, ["localhost", "127.0.0.1"]) == (cert, key)
    assert ssl.PEM_cert_to_DER_cert(cert.read_text()) == der, "a certificate that still fits is reused"
    self_signed_certificate(tmp_path, ["localhost", "192.0.2.7"])  # a new address: a new certificate
    assert ssl.PEM_cert_to_DER_cert(cert.read_text()) != der


def test_the_page_is_served_over_tls_to_a_client_that_trusts_the_certificate(fp32_bundle, fake_vendor, tmp_path):
    cert, key = self_signed_certificate(tmp_path, served_names("127.0.0.1"))
    server = demo_server.make_server(fp32_bundle, "127.0.0.1", 0, tls=server_context(cert, key))
    thread = demo_server.serve_in_thread(server)
    port = server.server_address[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))  # checks the host name too
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=10, context=trusting) as response:
            assert response.status == 200 and b"<title>demo</title>" in response.read()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        with urllib.request.urlopen(f"https://localhost:{port}/config.json", timeout=10, context=trusting) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=10, context=ssl.create_default_context())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:  # http:// to the https port
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" not in plain.recv(1024)
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=10, context=trusting) as response:
            assert response.status == 200, "a failed handshake does not stop the server"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_demo_serve_tls_prints_the_https_address_and_the_fingerprint(fp32_bundle, fake_vendor, tmp_path, capsys):
    """The command itself, stopped by Ctrl+C (a KeyboardInterrupt raised in serve_forever)."""
    started = threading.Event()

    def serve_then_stop(self, poll_interval=0.5):
        started.set()
        raise KeyboardInterrupt

    original = demo_server.DemoServer.serve_forever
    demo_server.DemoServer.serve_forever = serve_then_stop
    try:
        argv = ["demo", "serve", "--bundle", str(fp32_bundle), "--port", "0", "--tls", "--tls-dir", str(tmp_path)]
        assert main(argv) == 0
    finally:
        demo_server.DemoServer.serve_forever = original
    out = capsys.readouterr().out
    assert started.is_set() and "open https://127.0.0.1:" in out
    assert f"SHA-256 fingerprint {fingerprint(tmp_path / 'demo-cert.pem')}" in out


def test_tls_options_that_do_not_fit_are_refused(fp32_bundle, tmp_path, capsys):
    assert main(["demo", "serve", "--bundle", str(fp32_bundle), "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "give --tls-cert and --tls-key together" in capsys.readouterr().err
    missing = ["--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")]
    assert main(["demo", "serve", "--bundle", str(fp32_bundle), *missing]) == 2
    assert "no such certificate or key file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a PEM certificate"):
        (tmp_path / "c.pem").write_text("nope")
        (tmp_path / "k.pem").write_text("nope")
        server_context(tmp_path / "c.pem", tmp_path / "k.pem")
