"""End to end in headless Chromium: the page enrols, verifies and identifies like the CLI, offline.

Debian's ``/usr/bin/chromium`` driven by Playwright (its own browser download does not work here;
``.ci/run`` installs the Debian package). Skips with the reason when Chromium, Playwright or the
vendored onnxruntime-web files (``./dev setup``) are missing. Every request the page makes is
recorded and must go to the demo's own origin. The screenshot path is printed (``-s`` shows it).
One action runs at a time: while it runs the page is busy, a second click is ignored, and a setting
changed meanwhile (by a script) does not change what it does.

With the face detector in the bundle the page finds and aligns faces in photos itself; on real
faces (ORL pasted into larger pictures, CelebA photos; skipped without ``../shared``) its landmarks,
crops and scores are checked against ``nptface.on_device.face_detection`` and ``nptface verify``.
The camera is Chromium's fake capture device filming a Y4M video of an ORL face: the page enrols
and verifies from it, on localhost and over TLS, with the scores Python gives for the same frame.
Without ``../shared`` a synthetic face fills the video and a bundle without the detector takes the
frame as the crop: the same scores, verifying or identifying, one stream per click, the camera's
buttons off once it ends.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nptface.on_device.server import make_server, missing_vendor_files, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"),
    pytest.mark.skipif(bool(missing_vendor_files()), reason="onnxruntime-web files missing: run ./dev setup"),
]


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver for the module's browsers (its sync API runs one per thread)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        yield playwright


def _launch(playwright, *args: str):
    # launch() gives every browser a fresh temporary profile (user data dir).
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *args])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser(playwright):
    yield from _launch(playwright)


def _serve(bundle: Path, host: str = "127.0.0.1", tls=None) -> Iterator[str]:
    server = make_server(bundle, host, 0, tls=tls)
    thread = serve_in_thread(server)
    try:
        yield f"{'https' if tls else 'http'}://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _open(browser, origin: str, requests: list[str], init_script: str | None = None, **context):
    page = browser.new_context(**context).new_page()
    if init_script:
        page.add_init_script(init_script)
    page.set_default_timeout(TIMEOUT_MS)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(origin + "/")
    page.wait_for_selector("#status:not([data-state=loading])")
    return page


def _verify(page, name: str, image: Path) -> tuple[float, str]:
    page.evaluate("() => document.getElementById('verify-result').removeAttribute('data-score')")
    page.select_option("#verify-person", name)
    page.set_input_files("#verify-file", str(image))
    page.click("#verify-button")
    result = page.wait_for_selector("#verify-result[data-score]")
    return float(result.get_attribute("data-score")), result.get_attribute("data-decision")


def _ranking(page) -> list[tuple[str, float, str]]:
    """The identification the page shows: (person, cosine, "match" or "") per row, best first."""
    rows = page.eval_on_selector_all(
        "#identify-result tbody tr",
        "rows => rows.map(r => [r.dataset.name, Number(r.dataset.score), r.cells[3].textContent])",
    )
    return [tuple(row) for row in rows]


def _identify(page, button: str) -> list[tuple[str, float, str]]:
    """The ranking (person, cosine, "match" or "") the page shows after ``button`` identifies its image."""
    page.evaluate("() => document.getElementById('identify-result').tBodies[0].replaceChildren()")
    page.click(button)
    page.wait_for_selector("#identify-result tbody tr[data-name]")  # all rows are written at once
    return _ranking(page)


def _crop(page) -> np.ndarray:
    rgba = page.evaluate("""() => { const c = document.getElementById('crop');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    side = int(round((len(rgba) // 4) ** 0.5))
    return np.array(rgba, np.uint8).reshape(side, side, 4)[..., :3]


def _assert_same_origin(requests: list[str], origin: str) -> None:
    assert requests, "the page made no requests at all"
    foreign = [url for url in requests if not (url.startswith(origin + "/") or url.startswith(("blob:", "data:")))]
    assert not foreign, f"requests to other origins: {foreign}"


def test_page_enrolls_verifies_and_identifies_like_the_cli(browser, fp32_bundle, faces, tmp_path):
    from PIL import Image

    from nptface.edge_export.bundle import load_bundle
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.images import load_face
    from nptface.on_device.runtime import open_model

    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.get_attribute("#status", "data-variant") == "onnx-fp32"
        page.check("#ready-crops")  # the synthetic files are crops (--no-align)
        for name, person in (("ann", "a"), ("bob", "b")):
            page.fill("#enroll-name", name)
            page.set_input_files("#enroll-files", [str(p) for p in faces[person][:2]])
            page.click("#enroll-button")
            page.wait_for_selector(f"#gallery li[data-name={name}][data-count='2']")

        genuine, genuine_decision = _verify(page, "ann", faces["a"][2])
        size = load_bundle(fp32_bundle).input_size
        crop, expected_crop = _crop(page), load_face(faces["a"][2], size)  # what the model saw vs Python: exact
        assert np.array_equal(crop, expected_crop), f"{int((crop != expected_crop).sum())} values differ"
        impostor, impostor_decision = _verify(page, "ann", faces["b"][2])

        page.set_input_files("#identify-file", str(faces["b"][2]))
        page.click("#identify-button")
        page.wait_for_selector("#identify-result tbody tr[data-name]")
        ranking = page.eval_on_selector_all(
            "#identify-result tbody tr", "rows => rows.map(r => [r.dataset.name, Number(r.dataset.score)])"
        )

        # Bad input: a clear message, nothing stored.
        not_image = tmp_path / "holiday.png"
        not_image.write_text("this is not an image")
        page.fill("#enroll-name", "eve")
        page.set_input_files("#enroll-files", [str(faces["a"][0]), str(not_image)])
        page.click("#enroll-button")
        page.wait_for_selector("#message:not([hidden])")
        assert "holiday.png: not a decodable image" in page.text_content("#message")
        assert "Nothing was stored" in page.text_content("#message")
        tiny = tmp_path / "tiny.png"
        Image.new("RGB", (8, 8)).save(tiny)
        page.set_input_files("#enroll-files", str(tiny))
        page.click("#enroll-button")
        page.wait_for_selector("#message:has-text('too small')")  # a CSS wait: the CSP forbids eval'd predicates
        assert page.query_selector("#gallery li[data-name=eve]") is None

        # Export, then import into a fresh browser profile: the same people and counts come back.
        with page.expect_download() as download:
            page.click("#export-button")
        exported = tmp_path / "gallery.json"
        download.value.save_as(exported)
        fresh = _open(browser, origin, requests)
        fresh.check("#ready-crops")
        fresh.set_input_files("#import-file", str(exported))
        fresh.wait_for_selector("#gallery li[data-name=bob][data-count='2']")
        assert fresh.eval_on_selector_all("#gallery li", "items => items.map(i => i.dataset.name)") == ["ann", "bob"]
        foreign = json.loads(exported.read_text()) | {"model": "0" * 64}
        (tmp_path / "foreign.json").write_text(json.dumps(foreign))
        fresh.set_input_files("#import-file", str(tmp_path / "foreign.json"))
        fresh.wait_for_selector("#message:has-text('not comparable')")

        screenshot = tmp_path / "demo-page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
    finally:
        serving.close()

    model = open_model(fp32_bundle, "onnxruntime", "onnx-fp32")  # what `nptface verify` runs
    gallery = Gallery(model.model_sha256, str(fp32_bundle), model.variant)
    gallery.enroll("ann", model.embed_files(faces["a"][:2]))
    gallery.enroll("bob", model.embed_files(faces["b"][:2]))
    cli_genuine = gallery.score("ann", model.embed_files([faces["a"][2]])[0])
    cli_impostor = gallery.score("ann", model.embed_files([faces["b"][2]])[0])
    cli_ranking = gallery.top(model.embed_files([faces["b"][2]])[0])
    assert genuine == pytest.approx(cli_genuine, abs=1e-3)
    assert impostor == pytest.approx(cli_impostor, abs=1e-3)
    assert (genuine_decision, impostor_decision) == ("match", "no match")
    assert [name for name, _ in ranking] == [m.name for m in cli_ranking]
    np.testing.assert_allclose([s for _, s in ranking], [m.score for m in cli_ranking], atol=1e-3)
    _assert_same_origin(requests, origin)


def test_a_tampered_bundle_is_refused_in_the_page(browser, fp32_bundle, tampered_copy):
    copy = tampered_copy(fp32_bundle, "models/onnx-fp32.onnx")
    requests: list[str] = []
    serving = _serve(copy)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "error"
        status = page.text_content("#status")
        assert "bundle refused: models/onnx-fp32.onnx has sha256" in status and "modified or corrupted" in status
        assert page.is_disabled("#enroll-button") and page.is_disabled("#verify-button")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


# Every control that starts an action (the gallery's Delete buttons included); "Use camera" and
# "Stop camera" are not held by actions.
ACTION_CONTROLS = [
    "#enroll-button",
    "#verify-button",
    "#identify-button",
    "#export-button",
    "#import-file",
    "#variant",
    "#camera-capture",
    "#verify-camera",
    "#identify-camera",
    "#gallery button",
]
DISABLED = "(selectors) => selectors.map((s) => Array.from(document.querySelectorAll(s), (e) => e.disabled))"
# What actions read: off while one runs, and read once as it starts.
SETTINGS = [
    "#ready-crops",
    "#operating-point",
    "#enroll-name",
    "#enroll-files",
    "#verify-person",
    "#verify-file",
    "#identify-file",
]
# Clicks Enroll, reads the page while the enrolment runs, then clicks again with the button forced
# back on: a click that reaches the page anyway (queued before the button went off) must be ignored.
DOUBLE_ENROL = f"""([selectors, settingSelectors]) => {{
    const disabled = {DISABLED};
    const button = document.getElementById('enroll-button');
    button.click();
    const during = {{ busy: document.body.hasAttribute('data-busy'),
                     ariaBusy: document.querySelector('main').getAttribute('aria-busy'),
                     disabled: disabled(selectors), cameraStart: document.getElementById('camera-start').disabled }};
    button.disabled = false;
    button.click();
    during.settings = disabled(settingSelectors);
    return during;
}}"""


def test_one_action_at_a_time_a_double_click_enrols_once(browser, fp32_bundle, faces, tmp_path):
    """While an action runs the page says it is busy and every control that starts another is off.

    A second click on Enroll is ignored: ann's template holds her two images once. Failed or not,
    an action hands the controls back as they were: without a camera its buttons stay off.
    """
    not_image = tmp_path / "holiday.png"
    not_image.write_text("this is not an image")
    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        page.check("#ready-crops")
        page.fill("#enroll-name", "bob")
        page.set_input_files("#enroll-files", str(faces["b"][0]))
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=bob][data-count='1']")
        page.wait_for_selector("body:not([data-busy])")
        idle = page.evaluate(DISABLED, ACTION_CONTROLS)
        assert page.evaluate(DISABLED, SETTINGS) == [[False]] * len(SETTINGS)
        assert idle == [[False]] * 6 + [[True]] * 3 + [[False]]  # the camera is off: its three buttons too
        embedded = page.locator("#timing li").count()

        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(p) for p in faces["a"][:2]])
        during = page.evaluate(DOUBLE_ENROL, [ACTION_CONTROLS, SETTINGS])
        assert (during["busy"], during["ariaBusy"]) == (True, "true")
        assert during["disabled"] == [[True]] * len(ACTION_CONTROLS)
        assert during["settings"] == [[True]] * len(SETTINGS)
        assert during["cameraStart"] is False  # the camera may be started meanwhile: its prompt waits on the user
        page.wait_for_selector("body:not([data-busy])")
        assert page.get_attribute("main", "aria-busy") == "false"
        gallery = page.eval_on_selector_all("#gallery li", "items => items.map(i => [i.dataset.name, i.dataset.count])")
        assert gallery == [["ann", "2"], ["bob", "1"]]
        assert page.locator("#timing li").count() == embedded + 2  # two images embedded, once
        assert "Enrolled ann: 2 images" in page.text_content("#status") and page.is_hidden("#message")
        assert page.evaluate(DISABLED, ACTION_CONTROLS) == [*idle[:-1], [False, False]]  # and ann's Delete
        assert page.evaluate(DISABLED, SETTINGS) == [[False]] * len(SETTINGS)

        # A refused enrolment releases the page too.
        page.fill("#enroll-name", "eve")
        page.set_input_files("#enroll-files", str(not_image))
        page.click("#enroll-button")
        page.wait_for_selector("#message:has-text('holiday.png: not a decodable image')")
        page.wait_for_selector("body:not([data-busy])")
        assert page.evaluate(DISABLED, ACTION_CONTROLS) == [*idle[:-1], [False, False]]
        assert page.query_selector("#gallery li[data-name=eve]") is None
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


# Clicks a button and, while the action it started runs (its handler ran up to its first await),
# changes what it reads, as a script could (disabled controls still take values from a script).
CHANGE_SETTINGS_MIDWAY = """([button, point]) => {
    document.getElementById(button).click();
    const busy = document.body.hasAttribute('data-busy');
    document.getElementById('ready-crops').checked = false;
    document.getElementById('operating-point').value = point;
    document.getElementById('enroll-name').value = 'mallory';
    document.getElementById('verify-person').value = 'bob';
    return busy;
}"""


def test_an_action_uses_the_settings_it_started_with(browser, fp32_bundle, faces):
    """Enrol, verify and identify read the name, the images, "ready face crops" and the operating point
    once, as they start: changing them while the action runs changes the next action, not this one.

    Each action starts with the images as crops at FAR 1e-3 and meanwhile gets "photos" and another
    threshold: its scores, decisions and template are still ``nptface verify``'s for crops at 1e-3.
    """
    from nptface.edge_export.bundle import load_bundle
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.runtime import open_model

    bundle = load_bundle(fp32_bundle)
    start = bundle.threshold(1e-3, "export")
    other = next(k for k, v in bundle.operating_points["export"].items() if v != start)  # a different threshold
    at_start, midway = (json.dumps(["export", key], separators=(",", ":")) for key in ("1e-03", other))  # as the page's
    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert json.loads(page.input_value("#operating-point")) == ["export", "1e-03"]

        def start_as_crops_at_1e3(button: str) -> None:
            page.check("#ready-crops")
            page.select_option("#operating-point", at_start)
            assert page.evaluate(CHANGE_SETTINGS_MIDWAY, [button, midway]) is True  # changed while it ran
            page.wait_for_selector("body:not([data-busy])")
            assert page.is_hidden("#message"), page.text_content("#message")

        page.fill("#enroll-name", "bob")
        page.set_input_files("#enroll-files", str(faces["b"][0]))
        start_as_crops_at_1e3("enroll-button")
        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(p) for p in faces["a"][:2]])
        start_as_crops_at_1e3("enroll-button")
        gallery = page.eval_on_selector_all("#gallery li", "items => items.map(i => [i.dataset.name, i.dataset.count])")
        assert gallery == [["ann", "2"], ["bob", "1"]]

        page.select_option("#verify-person", "ann")
        page.set_input_files("#verify-file", str(faces["a"][2]))
        start_as_crops_at_1e3("verify-button")
        result = page.query_selector("#verify-result")
        verified = {key: result.get_attribute(f"data-{key}") for key in ("score", "threshold", "decision")}
        assert result.text_content().startswith("ann: ") and "FAR=1e-3" in result.text_content()

        page.set_input_files("#identify-file", str(faces["a"][2]))
        start_as_crops_at_1e3("identify-button")
        ranking = _ranking(page)
    finally:
        serving.close()

    model = open_model(fp32_bundle, "onnxruntime", "onnx-fp32")  # `nptface verify`: files are crops
    cli = Gallery(model.model_sha256, str(fp32_bundle), model.variant)
    cli.enroll("bob", model.embed_files([faces["b"][0]]))
    cli.enroll("ann", model.embed_files(faces["a"][:2]))
    probe = model.embed_files([faces["a"][2]])[0]
    cli_score = cli.score("ann", probe)
    assert float(verified["score"]) == pytest.approx(cli_score, abs=1e-3)
    assert float(verified["threshold"]) == pytest.approx(start)
    assert verified["decision"] == ("match" if cli_score >= start else "no match")
    expected = [(m.name, m.score, "match" if m.score >= start else "") for m in cli.top(probe)]
    assert [name for name, _, _ in ranking] == [name for name, _, _ in expected]
    np.testing.assert_allclose([s for _, s, _ in ranking], [s for _, s, _ in expected], atol=1e-3)
    assert [d for _, _, d in ranking] == [d for _, _, d in expected]
    _assert_same_origin(requests, origin)


def test_the_int8_qdq_model_runs_in_the_page_like_on_onnxruntime(browser, int8_bundle, faces):
    """onnxruntime-web's WASM backend runs the static QDQ int8 model, by default, with the CPU runtime's scores."""
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.runtime import open_model

    requests: list[str] = []
    serving = _serve(int8_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.get_attribute("#status", "data-variant") == "onnx-int8"
        page.check("#ready-crops")
        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(p) for p in faces["a"][:2]])
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        scores = [_verify(page, "ann", faces[person][2]) for person in "ab"]
    finally:
        serving.close()
    model = open_model(int8_bundle, "onnxruntime")  # the CLI's default: int8 when shipped
    assert model.variant == "onnx-int8"
    gallery = Gallery(model.model_sha256, str(int8_bundle), model.variant)
    gallery.enroll("ann", model.embed_files(faces["a"][:2]))
    threshold = model.bundle.threshold(1e-3)
    for (score, decision), person in zip(scores, "ab", strict=True):
        cli = gallery.score("ann", model.embed_files([faces[person][2]])[0])
        assert score == pytest.approx(cli, abs=1e-3), person
        assert decision == ("match" if cli >= threshold else "no match")
    _assert_same_origin(requests, origin)


def test_a_refused_variant_leaves_the_page_not_ready_but_free_to_pick_another(browser, int8_bundle, tampered_copy):
    """Picking a tampered variant is an action that fails: the model actions stay off, the variant select does not."""
    copy = tampered_copy(int8_bundle, "models/onnx-fp32.onnx")
    requests: list[str] = []
    serving = _serve(copy)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-variant") == "onnx-int8", page.text_content("#status")
        page.select_option("#variant", "onnx-fp32")
        page.wait_for_selector("#status[data-state=error]")
        page.wait_for_selector("body:not([data-busy])")
        assert "bundle refused: models/onnx-fp32.onnx has sha256" in page.text_content("#status")
        assert page.is_disabled("#enroll-button") and page.is_disabled("#verify-button")
        assert page.is_enabled("#variant")
        page.select_option("#variant", "onnx-int8")
        page.wait_for_selector("#status[data-state=ready]")
        assert page.is_enabled("#enroll-button") and page.is_enabled("#variant")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


def test_a_refused_default_variant_leaves_another_to_pick(browser, int8_bundle, tampered_copy):
    copy = tampered_copy(int8_bundle, "models/onnx-int8.onnx")
    requests: list[str] = []
    serving = _serve(copy)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "error"
        assert "bundle refused: models/onnx-int8.onnx has sha256" in page.text_content("#status")
        assert page.is_disabled("#enroll-button") and page.is_enabled("#variant")
        page.select_option("#variant", "onnx-fp32")
        page.wait_for_selector("#status[data-state=ready]")
        assert page.get_attribute("#status", "data-variant") == "onnx-fp32" and page.is_enabled("#enroll-button")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


def _calibrated_copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle`` with an operating point 'mine' calibrated on 12 x 3 synthetic faces (FAR 1e-1, 1e-2)."""
    from nptface.cli import main
    from nptface.core.datasets import SyntheticFaceDataset, write_image_folder
    from nptface.core.synthetic import HELDOUT_IDS

    copy = tmp_path / "calibrated"
    shutil.copytree(bundle, copy)
    data = write_image_folder(
        SyntheticFaceDataset(HELDOUT_IDS[:12], 3, "studio", seed=3, image_size=48), tmp_path / "mine", progress=False
    )
    assert main(["calibrate", "--bundle", str(copy), "--data", str(data), "--fars", "1e-1,1e-2"]) == 0
    return copy


def _lan_address() -> str:
    from nptface.on_device.tls import primary_address

    address = primary_address()
    if address is None or address.startswith("127."):
        pytest.skip("this machine has no non-loopback address to serve an insecure origin on")
    return address


def test_on_an_insecure_origin_the_page_explains_and_still_works_from_files(browser, fp32_bundle, faces, tmp_path):
    """Plain HTTP on the machine's network address is what a phone sees: no crypto.subtle, no camera.

    The page says why and what to do, checks the model with its own SHA-256, and enrols and
    verifies from files; it offers the calibrated operating point and decides with it by default.
    """
    from nptface.edge_export.bundle import load_bundle

    bundle = _calibrated_copy(fp32_bundle, tmp_path)
    requests: list[str] = []
    serving = _serve(bundle, _lan_address())
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.evaluate("() => [window.isSecureContext, typeof crypto.subtle]") == [False, "undefined"]
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        notice = page.text_content("#notice")
        assert page.is_visible("#notice") and "insecure origin" in notice
        assert "nptface demo serve --tls" in notice and "http://localhost:" in notice
        assert page.is_disabled("#camera-start") and "https://" in page.text_content("#camera-note")

        options = page.eval_on_selector_all("#operating-point option", "os => os.map(o => JSON.parse(o.value))")
        assert ["mine", "1e-02"] in options and ["export", "1e-03"] in options
        assert json.loads(page.input_value("#operating-point")) == ["mine", "1e-02"]  # the CLI's default

        page.check("#ready-crops")
        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(p) for p in faces["a"][:2]])
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        _verify(page, "ann", faces["a"][2])
        threshold = float(page.get_attribute("#verify-result", "data-threshold"))
        assert threshold == pytest.approx(load_bundle(bundle).threshold(1e-2, "mine"))
        assert "threshold(mine, FAR=1e-2)" in page.text_content("#verify-result")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


def test_over_tls_on_the_network_address_the_page_is_a_secure_context_with_a_camera(browser, fp32_bundle, tmp_path):
    from nptface.on_device.tls import self_signed_certificate, server_context

    host = _lan_address()
    cert, key = self_signed_certificate(tmp_path, ["localhost", host])
    requests: list[str] = []
    serving = _serve(fp32_bundle, host, server_context(cert, key))
    origin = next(serving)
    try:
        # The user accepts the self-signed certificate after comparing fingerprints; here: ignore_https_errors.
        page = _open(browser, origin, requests, ignore_https_errors=True)
        assert page.evaluate("() => window.isSecureContext") is True
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.is_hidden("#notice") and page.is_enabled("#camera-start")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


def test_pgm_files_and_exif_rotated_photos_reach_the_model_as_in_the_cli(browser, fp32_bundle, faces, tmp_path):
    from PIL import Image

    from nptface.edge_export.bundle import load_bundle
    from nptface.on_device.images import load_face

    size = load_bundle(fp32_bundle).input_size
    grey = tmp_path / "ann.pgm"
    Image.open(faces["a"][1]).convert("L").save(grey)  # P5, as ORL's faces
    upright = Image.open(faces["a"][0]).convert("RGB").resize((60, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    portrait = tmp_path / "portrait.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(portrait, quality=100, exif=exif)
    sideways = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, quality=100)  # the same pixels, no tag

    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        page.check("#ready-crops")
        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(grey), str(faces["a"][2])])
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        _verify(page, "ann", grey)
        pgm_crop = _crop(page)
        _verify(page, "ann", portrait)
        portrait_crop = _crop(page)
    finally:
        serving.close()
    assert np.array_equal(pgm_crop, load_face(grey, size))  # decoded here in JS, bit for bit Pillow's
    rotated, unrotated = load_face(portrait, size).astype(int), load_face(sideways, size).astype(int)
    assert np.abs(portrait_crop.astype(int) - rotated).mean() < 2  # JPEG decoders may differ by a level or so
    assert (
        np.abs(portrait_crop.astype(int) - unrotated).mean() > 10 * np.abs(portrait_crop.astype(int) - rotated).mean()
    )
    _assert_same_origin(requests, origin)


# Face detection and alignment in the page, against nptface.on_device.face_detection and the CLI.

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
real_faces = pytest.mark.skipif(
    not (SHARED / "orl_faces").is_dir() or not (SHARED / "celeba_wild").is_dir(),
    reason="the real face sets in ../shared/data (orl_faces, celeba_wild) are absent",
)


def _orl(person: int, image: int):
    from PIL import Image

    return Image.open(SHARED / "orl_faces" / f"s{person}" / f"{image}.pgm").convert("RGB")


def _pasted(path: Path, background: tuple[int, int, int], *faces, size: tuple[int, int] = (360, 300)) -> Path:
    """A PNG photo: ORL faces (image, scale, (x, y)) pasted onto a flat background."""
    from PIL import Image

    photo = Image.new("RGB", size, background)
    for face, scale, at in faces:
        photo.paste(face.resize((round(92 * scale), round(112 * scale)), Image.Resampling.BICUBIC), at)
    photo.save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """PNG photos (so no JPEG decoder differs): ORL faces pasted into larger pictures, and two CelebA photos."""
    from nptface.on_device.images import load_photo

    root = tmp_path_factory.mktemp("photos")
    files = {
        "ann-1": _pasted(root / "ann-1.png", (70, 90, 100), (_orl(1, 1), 1.6, (40, 60))),
        "ann-2": _pasted(root / "ann-2.png", (160, 150, 120), (_orl(1, 2), 1.3, (200, 80))),
        # the claimed person, large, and somebody else, small: the largest face is the one verified
        "ann-and-bob": _pasted(
            root / "ann-and-bob.png", (40, 40, 60), (_orl(1, 3), 1.8, (20, 40)), (_orl(2, 2), 1.0, (250, 150))
        ),
        "bob": _pasted(root / "bob.png", (120, 100, 90), (_orl(2, 1), 1.5, (150, 50))),
    }
    for index, path in enumerate(sorted((SHARED / "celeba_wild").glob("*/*"))[::577][:2]):
        files[f"celeba-{index}"] = root / f"celeba-{index}.png"
        load_photo(path).save(files[f"celeba-{index}"])
    return files


def _page_faces(page, path: Path) -> list[dict]:
    """The faces the page's debug hook finds in the photo at ``path`` (decoded by Pillow, as the CLI reads it)."""
    import base64

    from nptface.on_device.images import load_photo

    photo = load_photo(path).convert("RGBA")
    return page.evaluate(
        """async ([pixels, width, height]) => window.__nptface.detect(
            { data: Uint8ClampedArray.from(atob(pixels), (c) => c.charCodeAt(0)), width, height })""",
        [base64.b64encode(photo.tobytes()).decode(), photo.width, photo.height],
    )


@real_faces
def test_the_page_finds_the_landmarks_python_finds(browser, fp32_bundle, photos, detector):
    from nptface.on_device.images import load_photo

    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert not page.is_checked("#ready-crops") and "aligned onto" in page.text_content("#align-note")
        found = {name: _page_faces(page, path) for name, path in photos.items()}
    finally:
        serving.close()
    worst = 0.0
    for name, path in photos.items():
        python = detector.detect(load_photo(path))
        assert len(found[name]) == len(python) >= 1, name
        assert len(python) == (2 if name == "ann-and-bob" else 1), name  # the photos are what they claim
        for js, face in zip(found[name], python, strict=True):
            gap = np.abs(np.array(js["keypoints"]) - face.keypoints).max()
            assert gap < 2.0, f"{name}: landmarks {gap:.3f} px from Python's"
            assert js["score"] == pytest.approx(face.score, abs=1e-3)
            worst = max(worst, gap)
    print(f"largest landmark gap, page vs Python: {worst:.5f} px")
    _assert_same_origin(requests, origin)


@real_faces
def test_the_page_aligns_photos_and_scores_them_like_the_cli(browser, fp32_bundle, photos, tmp_path):
    from PIL import Image

    from nptface.on_device.face_crops import FaceCropper
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.images import load_photo
    from nptface.on_device.runtime import open_model

    model = open_model(fp32_bundle, "onnxruntime", "onnx-fp32", align=True)  # `nptface verify --align`
    rng = np.random.default_rng(0)
    clutter = tmp_path / "clutter.png"
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((240, 180)).save(clutter)
    requests: list[str] = []
    serving = _serve(fp32_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        page.fill("#enroll-name", "ann")
        page.set_input_files("#enroll-files", [str(photos["ann-1"]), str(photos["ann-2"])])
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        genuine, _ = _verify(page, "ann", photos["ann-and-bob"])
        assert "ann-and-bob.png: 2 faces found; using the largest" in page.text_content("#faces-note")
        crop = _crop(page)
        impostor, _ = _verify(page, "ann", photos["bob"])
        assert page.is_hidden("#faces-note")

        # No face: refused by name, nothing stored; as a ready crop (--no-align) the same image is taken.
        page.fill("#enroll-name", "eve")
        page.set_input_files("#enroll-files", str(clutter))
        page.click("#enroll-button")
        page.wait_for_selector("#message:has-text('clutter.png: no face found')")
        assert page.query_selector("#gallery li[data-name=eve]") is None
        page.check("#ready-crops")
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=eve][data-count='1']")
    finally:
        serving.close()
    gallery = Gallery(model.model_sha256, str(fp32_bundle), model.variant)
    gallery.enroll("ann", model.embed_files([photos["ann-1"], photos["ann-2"]]))
    cli_genuine = gallery.score("ann", model.embed_files([photos["ann-and-bob"]])[0])
    cli_impostor = gallery.score("ann", model.embed_files([photos["bob"]])[0])
    expected = np.asarray(
        FaceCropper(model.cropper.detector, model.bundle.input_size).crop(load_photo(photos["ann-and-bob"])).image
    )
    levels = np.abs(crop.astype(int) - expected.astype(int))
    print(
        f"aligned crop, page vs Python: {int((levels > 0).sum())} of {levels.size} values differ, max {levels.max()};"
        f" scores differ by {abs(genuine - cli_genuine):.1e} (genuine), {abs(impostor - cli_impostor):.1e} (impostor)"
    )
    assert levels.max() <= 1  # the same warp; the landmarks differ in their last digits (WASM vs native)
    assert genuine == pytest.approx(cli_genuine, abs=1e-3)
    assert impostor == pytest.approx(cli_impostor, abs=1e-3)
    _assert_same_origin(requests, origin)


@pytest.fixture(scope="module")
def crops_bundle(fp32_bundle, tmp_path_factory) -> Path:
    """The fp32 bundle as an export made before bundles carried the detector: images are crops."""
    from nptface.edge_export.bundle import MANIFEST, write_manifest

    bundle = tmp_path_factory.mktemp("crops") / "old"
    shutil.copytree(fp32_bundle, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    if manifest.pop("detector", None):
        shutil.rmtree(bundle / "detector")
        write_manifest(bundle, manifest)
    return bundle


def test_a_bundle_without_the_detector_takes_images_as_crops_and_says_so(browser, crops_bundle):
    requests: list[str] = []
    serving = _serve(crops_bundle)
    origin = next(serving)
    try:
        page = _open(browser, origin, requests)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.is_checked("#ready-crops") and page.is_disabled("#ready-crops")
        assert "no face detector" in page.text_content("#align-note")
    finally:
        serving.close()
    _assert_same_origin(requests, origin)


# The camera: Chromium's fake capture device plays a Y4M video of a real face, looping it.


def _write_y4m(path: Path, grey: np.ndarray, frames: int = 3) -> Path:
    """A YUV4MPEG2 4:2:0 video of ``frames`` copies of a greyscale picture (even sides).

    The grey levels are written as limited-range luma (16..235, neutral chroma), as Chromium reads
    camera frames, so the page sees the picture's own levels back (to a level or so of rounding).
    """
    height, width = grey.shape
    luma = np.round(16 + grey.astype(np.float64) * 219 / 255).astype(np.uint8)
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    with path.open("wb") as video:
        video.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            video.write(b"FRAME\n" + luma.tobytes() + chroma + chroma)
    return path


@pytest.fixture(scope="module")
def camera_scene(tmp_path_factory) -> np.ndarray:
    """What the fake camera films: ORL person 1 (an image the photos do not use) on a grey 320x240 frame."""
    from PIL import Image

    root = tmp_path_factory.mktemp("camera")
    scene = _pasted(root / "scene.png", (110, 110, 110), (_orl(1, 4), 1.6, (90, 30)), size=(320, 240))
    return np.asarray(Image.open(scene).convert("L"))


def _launch_filming(playwright, video: Path):
    """A Chromium whose fake camera plays ``video`` (Y4M), granted to pages without a prompt."""
    yield from _launch(
        playwright,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )


@pytest.fixture(scope="module")
def camera_browser(playwright, camera_scene, tmp_path_factory):
    """A Chromium whose camera is the Y4M video of ``camera_scene``, granted to pages without asking."""
    yield from _launch_filming(
        playwright, _write_y4m(tmp_path_factory.mktemp("camera-video") / "scene.y4m", camera_scene)
    )


def _camera_frame(page) -> np.ndarray:
    """The camera's current frame as RGB, drawn from the page's video element as the page draws it."""
    frame = page.evaluate("""() => { const video = document.getElementById('camera-video');
        const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
        const context = canvas.getContext('2d');
        context.drawImage(video, 0, 0);
        return { height: canvas.height, width: canvas.width,
                 data: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data) }; }""")
    return np.array(frame["data"], np.uint8).reshape(frame["height"], frame["width"], 4)[..., :3]


def _verify_camera(page, name: str) -> tuple[float, str]:
    page.evaluate("() => document.getElementById('verify-result').removeAttribute('data-score')")
    page.select_option("#verify-person", name)
    page.click("#verify-camera")
    result = page.wait_for_selector("#verify-result[data-score]")
    return float(result.get_attribute("data-score")), result.get_attribute("data-decision")


@real_faces
@pytest.mark.parametrize("where", ["localhost", "tls"])
def test_the_page_enrols_and_verifies_from_the_camera_like_the_cli(
    camera_browser, camera_scene, fp32_bundle, photos, tmp_path, where
):
    """Enrol ann from two camera frames and bob from a photo; the camera's face is ann's, not bob's.

    The page detects and aligns the face in the frame as in a photo: its crop and scores are those
    ``nptface verify --align`` gives for the same frame saved as an image.
    """
    from PIL import Image

    from nptface.on_device.face_crops import FaceCropper
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.images import load_photo
    from nptface.on_device.runtime import open_model

    if where == "tls":
        from nptface.on_device.tls import self_signed_certificate, server_context

        host = _lan_address()
        cert, key = self_signed_certificate(tmp_path, ["localhost", host])
        serving, context = _serve(fp32_bundle, host, server_context(cert, key)), {"ignore_https_errors": True}
    else:
        serving, context = _serve(fp32_bundle), {}
    requests: list[str] = []
    origin = next(serving)
    try:
        page = _open(camera_browser, origin, requests, **context)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.evaluate("() => window.isSecureContext") is True
        assert page.is_disabled("#camera-capture") and page.is_disabled("#verify-camera")
        page.click("#camera-start")
        page.wait_for_selector("#verify-camera:enabled")
        assert "Camera on (320x240)" in page.text_content("#camera-note"), page.text_content("#message")
        frame = _camera_frame(page)

        page.fill("#enroll-name", "ann")
        page.click("#camera-capture")
        page.click("#camera-capture")
        page.wait_for_selector("#camera-count:has-text('2 frame(s) captured')")
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        page.fill("#enroll-name", "bob")
        page.set_input_files("#enroll-files", str(photos["bob"]))
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=bob][data-count='1']")
        page.fill("#enroll-name", "ann-photos")
        page.set_input_files("#enroll-files", [str(photos["ann-1"]), str(photos["ann-2"])])
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name='ann-photos'][data-count='2']")

        same, same_decision = _verify_camera(page, "ann")
        crop = _crop(page)
        genuine, genuine_decision = _verify_camera(page, "ann-photos")
        impostor, impostor_decision = _verify_camera(page, "bob")
        latest = page.text_content("#timing li")  # newest first: the last verification's
        assert latest.startswith("camera frame:") and "320x240" in latest and "face aligned" in latest, latest
    finally:
        serving.close()

    written = np.repeat(camera_scene[..., None], 3, axis=2).astype(int)
    assert np.abs(frame.astype(int) - written).max() <= 2, "the page does not see the frame the video holds"
    still = tmp_path / "frame.png"
    Image.fromarray(frame).save(still)
    model = open_model(fp32_bundle, "onnxruntime", "onnx-fp32", align=True)  # `nptface verify --align`
    gallery = Gallery(model.model_sha256, str(fp32_bundle), model.variant)
    gallery.enroll("ann", model.embed_files([still, still]))
    gallery.enroll("bob", model.embed_files([photos["bob"]]))
    gallery.enroll("ann-photos", model.embed_files([photos["ann-1"], photos["ann-2"]]))
    probe = model.embed_files([still])[0]
    cli_same, cli_genuine, cli_impostor = (gallery.score(name, probe) for name in ("ann", "ann-photos", "bob"))
    expected = np.asarray(FaceCropper(model.cropper.detector, model.bundle.input_size).crop(load_photo(still)).image)
    levels = np.abs(crop.astype(int) - expected.astype(int))
    print(
        f"camera ({where}): enrolled from it {same:.4f} (Python {cli_same:.4f}), genuine {genuine:.4f}"
        f" (Python {cli_genuine:.4f}), impostor {impostor:.4f}"
        f" (Python {cli_impostor:.4f}); aligned crop: max level difference {levels.max()}"
    )
    assert levels.max() <= 1
    for score, cli in ((same, cli_same), (genuine, cli_genuine), (impostor, cli_impostor)):
        assert score == pytest.approx(cli, abs=1e-3)
    threshold = model.bundle.threshold(1e-3)
    assert (same_decision, impostor_decision) == ("match", "no match")  # the enrolled frames are the camera's
    assert genuine_decision == ("match" if cli_genuine >= threshold else "no match")  # another photo: the model's call
    _assert_same_origin(requests, origin)


# The camera without ../shared: a synthetic face fills the video, taken as the crop.

COUNT_CAMERA_REQUESTS = """(() => {
    const media = navigator.mediaDevices;
    if (!media?.getUserMedia) return;
    const original = media.getUserMedia.bind(media);
    window.__cameraRequests = 0;
    media.getUserMedia = (...args) => { window.__cameraRequests += 1; return original(...args); };
})();"""


@pytest.fixture(scope="module")
def synthetic_scene(faces) -> np.ndarray:
    """What the fake camera films: synthetic person a, grey, filling a 96x96 frame (the crop itself)."""
    from PIL import Image

    return np.asarray(Image.open(faces["a"][0]).convert("L").resize((96, 96), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def synthetic_camera_browser(playwright, synthetic_scene, tmp_path_factory):
    """A Chromium whose camera is the Y4M video of ``synthetic_scene``, granted to pages without asking."""
    yield from _launch_filming(
        playwright, _write_y4m(tmp_path_factory.mktemp("synthetic-video") / "face.y4m", synthetic_scene)
    )


def test_the_camera_opens_once_enrols_and_verifies_as_a_crop_and_switches_off_when_it_ends(
    synthetic_camera_browser, synthetic_scene, crops_bundle, faces, tmp_path
):
    """Without a detector the frame is the crop: the page's scores are ``nptface verify``'s for it,
    and identifying the camera's face ranks the gallery as identifying the frame from a file does.

    Two clicks on "Use camera" open one stream; frames captured for a refused enrolment are
    dropped with it; when the camera's track ends, or "Stop camera" is pressed, nothing can be
    captured or verified from the frozen last frame.
    """
    from PIL import Image

    from nptface.on_device.gallery import Gallery
    from nptface.on_device.images import load_face
    from nptface.on_device.runtime import open_model

    not_image = tmp_path / "holiday.png"
    not_image.write_text("this is not an image")
    requests: list[str] = []
    serving = _serve(crops_bundle)
    origin = next(serving)
    try:
        page = _open(synthetic_camera_browser, origin, requests, init_script=COUNT_CAMERA_REQUESTS)
        assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
        assert page.is_checked("#ready-crops") and page.is_disabled("#ready-crops")
        assert page.is_disabled("#camera-capture") and page.is_disabled("#verify-camera")
        page.evaluate("() => { const start = document.getElementById('camera-start'); start.click(); start.click(); }")
        page.wait_for_selector("#verify-camera:enabled")
        assert "Camera on (96x96)" in page.text_content("#camera-note"), page.text_content("#message")
        assert page.evaluate("() => window.__cameraRequests") == 1
        assert page.is_disabled("#camera-start") and page.is_enabled("#camera-stop")
        frame = _camera_frame(page)

        # A refused enrolment drops the frame captured for it; the next one starts afresh.
        page.fill("#enroll-name", "ann")
        page.click("#camera-capture")
        page.wait_for_selector("#camera-count:has-text('1 frame(s) captured')")
        page.set_input_files("#enroll-files", str(not_image))
        page.click("#enroll-button")
        page.wait_for_selector("#message:has-text('holiday.png: not a decodable image')")
        assert "1 captured frame(s) were dropped" in page.text_content("#camera-count")
        page.set_input_files("#enroll-files", [])
        page.click("#camera-capture")
        page.click("#camera-capture")
        page.wait_for_selector("#camera-count:has-text('2 frame(s) captured')")
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=ann][data-count='2']")
        assert page.text_content("#camera-count") == ""
        page.fill("#enroll-name", "bob")
        page.set_input_files("#enroll-files", str(faces["b"][0]))
        page.click("#enroll-button")
        page.wait_for_selector("#gallery li[data-name=bob][data-count='1']")

        same, same_decision = _verify_camera(page, "ann")
        crop = _crop(page)
        impostor, impostor_decision = _verify_camera(page, "bob")
        latest = page.text_content("#timing li")
        assert latest.startswith("camera frame:") and "96x96" in latest and "resized" in latest, latest

        # Identifying the camera's face ranks the gallery as identifying the same frame from a file does.
        camera_ranking = _identify(page, "#identify-camera")
        assert np.array_equal(_crop(page), crop)
        latest = page.text_content("#timing li")
        assert latest.startswith("camera frame:") and "96x96" in latest and "resized" in latest, latest
        still = tmp_path / "frame.png"
        Image.fromarray(frame).save(still)
        page.set_input_files("#identify-file", str(still))
        file_ranking = _identify(page, "#identify-button")
        assert page.text_content("#timing li").startswith("frame.png:")

        # An action holds capturing, verifying and identifying the camera's face, never "Stop camera".
        held = page.evaluate("""() => { document.getElementById('verify-camera').click();
            return ['camera-capture', 'verify-camera', 'identify-camera', 'camera-stop']
                .map((id) => document.getElementById(id).disabled);
        }""")
        assert held == [True, True, True, False]
        page.wait_for_selector("body:not([data-busy])")
        assert page.is_enabled("#camera-capture") and page.is_enabled("#verify-camera")
        assert page.is_enabled("#identify-camera")

        # The track ends (unplugged, permission revoked): stop() alone fires no 'ended', so it is dispatched.
        page.evaluate("""() => { const track = document.getElementById('camera-video').srcObject.getVideoTracks()[0];
            track.stop(); track.dispatchEvent(new Event('ended')); }""")
        page.wait_for_selector("#verify-camera:disabled")
        assert page.is_disabled("#camera-capture") and page.is_disabled("#camera-stop")
        assert page.is_disabled("#identify-camera")
        assert "camera stopped" in page.text_content("#camera-note")
        assert page.evaluate("() => document.getElementById('camera-video').srcObject") is None
        page.click("#camera-start")  # on again, then off with the button: the stream is released
        page.wait_for_selector("#verify-camera:enabled")
        page.click("#camera-stop")
        page.wait_for_selector("#camera-capture:disabled")
        assert page.is_disabled("#verify-camera") and page.is_enabled("#camera-start")
        assert page.evaluate("() => [window.__cameraRequests, document.getElementById('camera-video').srcObject]") == [
            2,
            None,
        ]
    finally:
        serving.close()

    written = np.repeat(synthetic_scene[..., None], 3, axis=2).astype(int)
    assert np.abs(frame.astype(int) - written).max() <= 2, "the page does not see the frame the video holds"
    model = open_model(crops_bundle, "onnxruntime", "onnx-fp32")  # `nptface verify`: files are crops
    assert np.array_equal(crop, load_face(still, model.bundle.input_size))
    gallery = Gallery(model.model_sha256, str(crops_bundle), model.variant)
    gallery.enroll("ann", model.embed_files([still, still]))
    gallery.enroll("bob", model.embed_files([faces["b"][0]]))
    probe = model.embed_files([still])[0]
    cli_same, cli_impostor = gallery.score("ann", probe), gallery.score("bob", probe)
    print(
        f"camera as a crop: enrolled from it {same:.4f} (Python {cli_same:.4f}), impostor {impostor:.4f} (Python {cli_impostor:.4f})"
    )
    assert same == pytest.approx(cli_same, abs=1e-3)
    assert impostor == pytest.approx(cli_impostor, abs=1e-3)
    threshold = model.bundle.threshold(1e-3)
    assert same_decision == "match"
    assert impostor_decision == ("match" if cli_impostor >= threshold else "no match")
    cli_ranking = [(m.name, m.score, "match" if m.score >= threshold else "") for m in gallery.top(probe)]
    for ranking in (camera_ranking, file_ranking):
        assert [(name, decision) for name, _, decision in ranking] == [(name, d) for name, _, d in cli_ranking]
        np.testing.assert_allclose([s for _, s, _ in ranking], [s for _, s, _ in cli_ranking], atol=1e-3)
    np.testing.assert_allclose([s for _, s, _ in camera_ranking], [s for _, s, _ in file_ranking], atol=1e-6)
    _assert_same_origin(requests, origin)
