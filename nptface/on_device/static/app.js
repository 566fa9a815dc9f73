// The demo page: loads a bundle, checks every file it uses against the manifest's sha256, and
// enrols, verifies and identifies faces with onnxruntime-web's WebAssembly backend. Nothing is
// sent anywhere: the only requests are for this app's own files (the server's CSP enforces it).
//
// On an insecure origin (plain HTTP from another device) browsers withhold the camera and
// crypto.subtle: the page says so and how to fix it, hashes with its own SHA-256, and keeps
// working from image files. Images are read as the CLI reads them: EXIF orientation applied,
// PGM/PPM decoded here (browsers cannot), the same size limits.
//
// When the bundle ships the face detector (manifest.detector), every image — file or camera
// frame — is a photo: the largest face is found and aligned onto the bundle's template as the CLI
// does (detect.js, align.js); "images are ready face crops" takes images as crops instead, as the
// CLI's --no-align. Bundles without a detector are read as crops, and the page says so.
//
// A camera frame is taken as the video's pixels (no image file in between) and goes through the
// same checks, detection, alignment and model as a file: frames captured for enrolment join the
// chosen files, "verify the camera's face" scores the current frame against the claimed person, and
// "identify the camera's face" ranks the gallery against it, as for an image file.
// One click opens one stream; frames are taken only from a live track, and when the track ends
// (unplugged, permission withdrawn) or "Stop camera" is pressed the camera is released and its buttons off.
//
// One action at a time: while an enrolment, verification, identification, deletion, import, export,
// capture or variant change runs, the page is busy (body[data-busy], main[aria-busy]) and the controls
// that start another, or that it reads, are off, so a double click enrols once and nothing is scored
// against a template being written. An action reads what it uses (name, images, "ready face crops",
// operating point, model variant) once as it starts, so a setting changed meanwhile (by a script:
// disabled controls still take values from one) changes the next action, never the running one. Starting the camera has its own flag instead (its permission prompt may wait on the
// user while files are enrolled), and "Stop camera" is never held by an action.

import * as ort from "./vendor/ort.wasm.min.mjs";
import { decodeNetpbm, isNetpbm } from "./netpbm.js";
import { similarityTransform, warpFace } from "./align.js";
import { FaceDetector } from "./detect.js";
import { rgbaToRgb, toInputTensor, toRgbCrop } from "./preprocess.js";
import { sha256 } from "./sha256.js";
import { extended, openStore } from "./store.js";

// Single-threaded: no SharedArrayBuffer, so no cross-origin isolation headers are needed.
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;

const EXPORT_FORMAT = "nptface-web-gallery";
const CAMERA_START_S = 20; // how long a granted camera may take to show its first frame
const $ = (id) => document.getElementById(id);
const state = {
  config: null, manifest: null, session: null, variant: null, store: null, captured: [], detector: null,
  ready: false, // a model variant is loaded
  started: false, // the page is set up: from then on a variant can be picked, even after a refused one
  busy: false, // an action runs (run())
  camera: false, // this page may ask for the camera
  cameraStarting: false, // "Use camera" is waiting for the stream's first frame
};

class BadInput extends Error {}

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

function showMessage(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

// Notes about the faces found (several in one image) for the last action.
function noteFaces(text) {
  $("faces-note").hidden = !text;
  $("faces-note").textContent = text ? `${$("faces-note").textContent} ${text}`.trim() : "";
}

function setReady(ready) {
  state.ready = ready;
  syncControls();
}

// The camera's video track while it films; null once stopped or ended (unplugged, permission revoked).
function liveTrack() {
  const track = $("camera-video").srcObject?.getVideoTracks()[0];
  return track?.readyState === "live" ? track : null;
}

// The one place that turns controls on and off, from the state: model actions and their settings
// need the model and no running action; capturing needs a filming camera (one that has shown its
// first frame) and no running action; verifying or identifying its face needs both; stopping it
// needs only the camera.
function syncControls() {
  const idle = !state.busy;
  const modelIdle = state.ready && idle;
  for (const id of ["enroll-button", "verify-button", "identify-button", "export-button", "import-file",
    "operating-point", "enroll-name", "enroll-files", "verify-person", "verify-file", "identify-file"]) {
    $(id).disabled = !modelIdle;
  }
  $("ready-crops").disabled = !(state.detector && modelIdle); // without a detector images can only be crops
  $("variant").disabled = !(state.started && idle);
  for (const remove of $("gallery").querySelectorAll("button")) remove.disabled = !idle;
  const live = Boolean(liveTrack());
  const filming = live && !state.cameraStarting;
  $("camera-start").disabled = !state.camera || state.cameraStarting || live;
  $("camera-stop").disabled = !filming;
  $("camera-capture").disabled = !(filming && idle);
  $("verify-camera").disabled = !(filming && modelIdle);
  $("identify-camera").disabled = !(filming && modelIdle);
  document.body.toggleAttribute("data-busy", state.busy);
  document.querySelector("main").setAttribute("aria-busy", String(state.busy));
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function farLabel(key) {
  return key.replace(/e-0*/, "e-");
}

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// A bundle file, refused unless its size and sha256 are those the manifest lists.
async function fetchVerified(name) {
  const entry = state.manifest.files[name];
  if (!entry) throw new Error(`${name} is not a file listed in the bundle's manifest.json`);
  const response = await fetch(state.config.bundle_url + name);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  if (bytes.byteLength !== entry.size) {
    throw new Error(`bundle refused: ${name} is ${bytes.byteLength} bytes, manifest.json says ${entry.size}`);
  }
  const digest = hex(globalThis.crypto?.subtle ? await crypto.subtle.digest("SHA-256", bytes) : sha256(bytes));
  if (digest !== entry.sha256) {
    throw new Error(`bundle refused: ${name} has sha256 ${digest.slice(0, 16)}…, manifest.json says ` +
      `${entry.sha256.slice(0, 16)}… — the file was modified or corrupted`);
  }
  return bytes;
}

async function loadVariant(name) {
  setReady(false);
  const variant = state.manifest.variants.find((v) => v.name === name);
  setStatus("loading", `Loading ${name}…`);
  const bytes = await fetchVerified(variant.file);
  state.session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
  state.variant = name;
  $("status").dataset.variant = name;
  setStatus("ready", `Ready: ${name} (${(bytes.byteLength / 1e6).toFixed(2)} MB, verified), ` +
    `${state.size}x${state.size} input, ${state.manifest.embedding.size}-d embedding`);
  setReady(true);
}

function checkSize(name, width, height) {
  const limits = state.config.limits;
  if (Math.min(width, height) < limits.min_side) {
    throw new BadInput(`${name}: ${width}x${height} px is too small for a face; expected at least ${limits.min_side} px on each side`);
  }
  if (Math.max(width, height) > limits.max_side || width * height > limits.max_pixels) {
    throw new BadInput(`${name}: ${width}x${height} px is too large; expected at most ${limits.max_side} px on a side ` +
      `and ${Math.round(limits.max_pixels / 1e6)} megapixels`);
  }
}

async function decode(file) {
  const limits = state.config.limits;
  if (file.size > limits.max_bytes) throw new BadInput(`${file.name}: ${file.size} bytes; expected at most ${limits.max_bytes} bytes`);
  const head = new Uint8Array(await file.slice(0, 2).arrayBuffer());
  if (isNetpbm(head)) {
    try {
      return decodeNetpbm(new Uint8Array(await file.arrayBuffer()), (w, h) => checkSize(file.name, w, h));
    } catch (error) {
      if (error instanceof BadInput) throw error;
      throw new BadInput(`${file.name}: not a decodable PGM/PPM image: ${error.message}`);
    }
  }
  let bitmap;
  try {
    // "from-image": EXIF orientation applied, as nptface.on_device.images does with exif_transpose.
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new BadInput(`${file.name}: not a decodable image (PNG, JPEG, WebP, BMP, GIF, PGM, PPM)`);
  }
  const { width, height } = bitmap;
  try {
    checkSize(file.name, width, height);
  } catch (error) {
    bitmap.close();
    throw error;
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { pixels: context.getImageData(0, 0, width, height).data, width, height };
}

function showCrop(rgb) {
  const size = state.size;
  const canvas = $("crop");
  canvas.width = size;
  canvas.height = size;
  const image = new ImageData(size, size);
  for (let p = 0; p < size * size; p++) {
    image.data.set([rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2], 255], 4 * p);
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
}

// Starts the face detector the manifest lists; without one (older bundles) images are taken as crops, and the page says so.
async function loadDetector() {
  const spec = state.manifest.detector;
  if (!spec) {
    $("ready-crops").checked = true;
    $("align-note").textContent = "This bundle has no face detector: images are taken as ready face crops " +
      "(re-export it with a current nptface to detect and align faces in photos).";
    return;
  }
  const alignment = spec.alignment;
  if (alignment.size !== state.size || !Array.isArray(alignment.template)) {
    throw new Error(`manifest.json: detector.alignment is for ${alignment.size}x${alignment.size} crops with ` +
      `template ${JSON.stringify(alignment.template)}; expected a list of [x, y] points for the model's ${state.size}x${state.size} input`);
  }
  setStatus("loading", `Loading the face detector (${spec.name})…`);
  state.detector = await FaceDetector.create(ort, await fetchVerified(spec.files.onnx), spec);
  $("align-note").textContent = `Faces are found with ${spec.name} and aligned onto the model's ${alignment.template.length}-point template.`;
}

// The crop the model sees: the aligned largest face of a photo, or the image resized as a ready crop.
async function modelCrop(name, pixels, width, height, crops) {
  if (crops) return { rgb: toRgbCrop(pixels, width, height, state.size), how: "resized" };
  const photo = rgbaToRgb(pixels, width, height);
  const faces = await state.detector.detect(photo, width, height);
  if (!faces.length) {
    throw new BadInput(`${name}: no face found (the detector needs a face at least ~5% of the photo's width; ` +
      `for images that are already face crops, tick "images are ready face crops")`);
  }
  if (faces.length > 1) noteFaces(`${name}: ${faces.length} faces found; using the largest.`);
  const template = state.manifest.detector.alignment.template;
  const matrix = similarityTransform(faces[0].keypoints.slice(0, template.length), template);
  return { rgb: warpFace(photo, width, height, matrix, state.size), how: "face aligned" };
}

// A unit-length embedding of one image file or camera frame ({ name, pixels, width, height }) by
// the action's settings, showing its crop and inference time.
async function embed(image, { crops, session, variant }) {
  const { name } = image;
  const { pixels, width, height } = image instanceof File ? await decode(image) : image;
  const { rgb, how } = await modelCrop(name, pixels, width, height, crops);
  showCrop(rgb);
  const { mean, std } = state.manifest.input.normalization;
  const input = new ort.Tensor("float32", toInputTensor(rgb, state.size, mean, std), [1, 3, state.size, state.size]);
  const start = performance.now();
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const ms = performance.now() - start;
  const raw = outputs[session.outputNames[0]].data;
  const norm = Math.hypot(...raw);
  if (!(norm > 0) || !Number.isFinite(norm)) throw new Error(`${name}: the model produced a zero or non-finite embedding`);
  const item = document.createElement("li");
  item.textContent = `${name}: ${ms.toFixed(1)} ms inference (${variant}, ${width}x${height} -> ${state.size}x${state.size}, ${how})`;
  $("timing").prepend(item);
  return Array.from(raw, (v) => v / norm);
}

function cosine(template, embedding) {
  let dot = 0;
  let norm = 0;
  for (let i = 0; i < template.length; i++) {
    dot += template[i] * embedding[i];
    norm += template[i] * template[i];
  }
  return dot / Math.sqrt(norm); // the embedding is unit length
}

// Operating point name -> { FAR key -> cosine threshold }: the export's, then those of nptface calibrate.
function operatingPoints() {
  const calibrated = Object.entries(state.manifest.operating_points || {}).map(([name, p]) => [name, p.cosine]);
  return Object.fromEntries([["export", state.manifest.thresholds.cosine], ...calibrated]);
}

// What an action reads besides its name and images, read once as it starts (before its first await)
// and passed down: the model it runs, whether images are crops, and the operating point it decides at.
function settings() {
  const [point, key] = JSON.parse($("operating-point").value);
  return {
    session: state.session,
    variant: state.variant,
    crops: !state.detector || $("ready-crops").checked,
    threshold: { point, key, value: operatingPoints()[point][key] },
  };
}

// One option per (operating point, FAR); the default is the CLI's: the server's default point at
// FAR 1e-3, or at its strictest FAR when it has no 1e-3.
function fillOperatingPoints() {
  const select = $("operating-point");
  const points = operatingPoints();
  for (const [point, thresholds] of Object.entries(points)) {
    const group = document.createElement("optgroup");
    const calibration = state.manifest.operating_points?.[point];
    group.label = calibration ? `${point} (calibrated on ${calibration.identities} people, ${calibration.images} images)`
      : `${point} (the bundle's own)`;
    for (const [key, value] of Object.entries(thresholds).sort(([a], [b]) => Number(b) - Number(a))) {
      if (!(Number.isFinite(value) && value >= -1 && value <= 1)) continue; // load_bundle refuses these too
      group.append(new Option(`${point}: FAR ${farLabel(key)} (cosine >= ${value.toFixed(4)})`, JSON.stringify([point, key])));
    }
    select.append(group);
  }
  const point = state.config.default_operating_point in points ? state.config.default_operating_point : "export";
  const keys = Object.keys(points[point]);
  const key = keys.includes("1e-03") ? "1e-03" : keys.sort((a, b) => Number(a) - Number(b))[0];
  select.value = JSON.stringify([point, key]);
}

function model() {
  return state.manifest.source.checkpoint_sha256;
}

async function refreshGallery() {
  const people = await state.store.people(model());
  const list = $("gallery");
  const select = $("verify-person");
  list.replaceChildren();
  select.replaceChildren();
  for (const person of people) {
    const item = document.createElement("li");
    item.dataset.name = person.name;
    item.dataset.count = String(person.count);
    item.textContent = `${person.name} — ${person.count} image${person.count === 1 ? "" : "s"} `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.disabled = state.busy;
    remove.addEventListener("click", () => run(async () => {
      await state.store.remove(model(), person.name);
      await refreshGallery();
    }));
    item.append(remove);
    list.append(item);
    select.append(new Option(person.name, person.name));
  }
  return people;
}

// Runs an action, showing what it refused or failed with (after clearing the last action's notes).
async function report(action) {
  showMessage("");
  noteFaces("");
  try {
    await action();
  } catch (error) {
    showMessage(error instanceof BadInput ? `Refused: ${error.message}. Nothing was stored.` : error.message);
  }
}

// Runs an action as the only one: the page is busy until it ends, failed or not. A click that still
// arrives meanwhile (queued before its button went off) is ignored, not run after it.
async function run(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    syncControls();
    await report(action);
  } finally {
    state.busy = false;
    syncControls();
  }
}

// Captured frames are used by one enrolment, stored or refused: one bad frame must not refuse every later one.
async function enroll() {
  const name = $("enroll-name").value.trim();
  const images = [...$("enroll-files").files, ...state.captured];
  const setup = settings();
  if (!name) throw new BadInput("enter the person's name");
  if (!images.length) throw new BadInput("choose one or more images (or capture frames from the camera)");
  const captured = state.captured.length;
  state.captured = [];
  let record;
  try {
    const embeddings = [];
    for (const image of images) embeddings.push(await embed(image, setup)); // all or nothing: any bad image stores nothing
    record = extended(await state.store.get(model(), name), model(), setup.variant, name, embeddings);
    await state.store.put(record);
    $("camera-count").textContent = "";
  } catch (error) {
    if (captured) $("camera-count").textContent = `the ${captured} captured frame(s) were dropped with the failed enrolment: capture again`;
    throw error;
  }
  await refreshGallery();
  setStatus("ready", `Enrolled ${name}: ${record.count} image${record.count === 1 ? "" : "s"} in the template`);
}

// Verifies an image (a file or a camera frame) given by image(), called once someone is enrolled.
async function verify(image) {
  const name = $("verify-person").value;
  const setup = settings();
  if (!name) throw new BadInput("enroll someone first");
  const embedding = await embed(image(), setup);
  const record = await state.store.get(model(), name);
  const score = cosine(record.template, embedding);
  const { point, key, value } = setup.threshold;
  const result = $("verify-result");
  result.dataset.score = String(score);
  result.dataset.threshold = String(value);
  result.dataset.decision = score >= value ? "match" : "no match";
  result.textContent = `${name}: cosine = ${score.toFixed(4)}  threshold(${point}, FAR=${farLabel(key)}) = ` +
    `${value.toFixed(4)}  -> ${result.dataset.decision}`;
}

// Ranks the gallery against an image (a file or a camera frame) given by image(), taken as the action starts.
async function identify(image) {
  const probe = image();
  const setup = settings();
  const people = await state.store.people(model());
  if (!people.length) throw new BadInput("the gallery is empty; enroll someone first");
  const embedding = await embed(probe, setup);
  const { value } = setup.threshold;
  const ranked = people.map((p) => ({ name: p.name, score: cosine(p.template, embedding) }))
    .sort((a, b) => b.score - a.score).slice(0, 5);
  const body = $("identify-result").tBodies[0];
  body.replaceChildren();
  ranked.forEach((entry, i) => {
    const row = body.insertRow();
    row.dataset.name = entry.name;
    row.dataset.score = String(entry.score);
    for (const text of [String(i + 1), entry.name, entry.score.toFixed(4), entry.score >= value ? "match" : ""]) {
      row.insertCell().textContent = text;
    }
  });
}

async function exportGallery() {
  const people = await state.store.people(model());
  const payload = { format: EXPORT_FORMAT, version: 1, model: model(), exported: new Date().toISOString(),
    people: people.map(({ name, count, template, variant }) => ({ name, count, template, variant })) };
  const url = URL.createObjectURL(new Blob([JSON.stringify(payload)], { type: "application/json" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = "nptface-gallery.json";
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function importGallery() {
  const file = $("import-file").files[0];
  if (!file) return;
  let payload;
  try {
    payload = JSON.parse(await file.text());
  } catch {
    throw new BadInput(`${file.name}: not JSON`);
  }
  if (payload?.format !== EXPORT_FORMAT || payload.version !== 1 || !Array.isArray(payload.people)) {
    throw new BadInput(`${file.name}: expected an ${EXPORT_FORMAT} v1 export`);
  }
  if (payload.model !== model()) {
    throw new BadInput(`${file.name}: made with model ${String(payload.model).slice(0, 12)}…, this page runs ` +
      `${model().slice(0, 12)}…; templates of different models are not comparable`);
  }
  const dim = state.manifest.embedding.size;
  for (const p of payload.people) {
    const valid = typeof p.name === "string" && p.name.trim() && Number.isInteger(p.count) && p.count > 0 &&
      Array.isArray(p.template) && p.template.length === dim && p.template.every(Number.isFinite);
    if (!valid) throw new BadInput(`${file.name}: person ${JSON.stringify(p.name)} is not a name, a positive count and ${dim} finite numbers`);
  }
  for (const p of payload.people) {
    await state.store.put({ model: model(), variant: p.variant, name: p.name, count: p.count, template: p.template,
      updated: new Date().toISOString() });
  }
  await refreshGallery();
  setStatus("ready", `Imported ${payload.people.length} people from ${file.name}`);
}

// Why this page is not a secure context, and what to do: browsers allow the camera and
// crypto.subtle only on https:// or on localhost.
function insecureOriginAdvice() {
  return `This page was opened at ${location.origin}, plain HTTP from another device, which browsers treat as ` +
    "an insecure origin: they switch off the camera here. Enrolling and verifying from image files still works. " +
    `For the camera, restart the server with "nptface demo serve --tls" (or --tls-cert/--tls-key) and open ` +
    `https://${location.host}/, or open http://localhost:${location.port || 80}/ on the machine that runs the server.`;
}

function setUpCamera() {
  $("camera").hidden = false;
  state.camera = Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia);
  syncControls();
  if (!state.camera) {
    $("camera-note").textContent = window.isSecureContext ? "This browser gives pages no camera access." :
      "Camera off: browsers allow it only over https:// or on localhost (see the note above).";
    return;
  }
  $("camera-start").addEventListener("click", () => report(startCamera));
  $("camera-stop").addEventListener("click", () => stopCamera("Camera off."));
  $("camera-capture").addEventListener("click", () => run(() => {
    state.captured.push(cameraFrame(`camera frame ${state.captured.length + 1}`));
    $("camera-count").textContent = `${state.captured.length} frame(s) captured for enrolment`;
  }));
  $("verify-camera").addEventListener("click", () => run(() => verify(() => cameraFrame("camera frame"))));
  $("identify-camera").addEventListener("click", () => run(() => identify(() => cameraFrame("camera frame"))));
}

// Flagged before asking, so a second click (or one during the permission prompt) opens no second
// stream; the flag is dropped however the start ends.
async function startCamera() {
  if (state.cameraStarting || liveTrack()) return;
  state.cameraStarting = true;
  syncControls();
  try {
    await openCamera();
  } finally {
    state.cameraStarting = false;
    syncControls();
  }
}

// Opens the camera and waits for its first frame; a stream that gives no picture is stopped, not
// left holding the camera.
async function openCamera() {
  const video = $("camera-video");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (error) {
    throw new Error(`The camera did not start (${error.name}: ${error.message}). Enrolling and verifying from image files still works.`);
  }
  const track = stream.getVideoTracks()[0];
  let timer;
  const playing = new Promise((resolve, reject) => {
    video.addEventListener("loadeddata", resolve, { once: true });
    timer = setTimeout(() => reject(new Error(`The camera gave no picture within ${CAMERA_START_S} s; it was switched off again.`)),
      CAMERA_START_S * 1000);
  });
  video.srcObject = stream;
  video.hidden = false;
  try {
    await playing; // the first frame is there: its size is known
  } catch (error) {
    stopCamera("");
    throw error;
  } finally {
    clearTimeout(timer);
  }
  track.addEventListener("ended", () => stopCamera("The camera stopped (unplugged, or its permission was withdrawn)."));
  $("camera-note").textContent = `Camera on (${video.videoWidth}x${video.videoHeight}).`;
}

// Releases the camera and says why; its buttons follow (a frozen last frame is never scored).
function stopCamera(note) {
  const video = $("camera-video");
  for (const track of video.srcObject?.getTracks() ?? []) track.stop();
  video.srcObject = null;
  video.hidden = true;
  $("camera-note").textContent = note;
  syncControls();
}

// The image chosen in a file input, or a refusal that says what it is for.
function chosenFile(id, purpose) {
  const file = $(id).files[0];
  if (!file) throw new BadInput(`choose an image to ${purpose}`);
  return file;
}

// The camera's current frame as RGBA pixels, checked against the size limits as an image file is.
function cameraFrame(name) {
  if (!liveTrack()) throw new BadInput(`${name}: the camera is off; press "Use camera" first`);
  const video = $("camera-video");
  const { videoWidth: width, videoHeight: height } = video;
  checkSize(name, width, height);
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  return { name, pixels: context.getImageData(0, 0, width, height).data, width, height };
}

async function start() {
  if (!window.isSecureContext) {
    $("notice").hidden = false;
    $("notice").textContent = insecureOriginAdvice();
  }
  state.config = await fetchJson("/config.json");
  state.manifest = await fetchJson(state.config.bundle_url + state.config.manifest);
  state.size = state.manifest.input.size[0];
  state.store = await openStore();
  const onnx = state.manifest.variants.filter((v) => v.format === "onnx");
  for (const v of onnx) $("variant").append(new Option(`${v.name} (${(v.size_bytes / 1e6).toFixed(2)} MB)`, v.name));
  $("variant").value = state.config.default_variant;
  fillOperatingPoints();
  if (state.manifest.files["README.md"]) $("card").textContent = new TextDecoder().decode(await fetchVerified("README.md"));
  $("variant").addEventListener("change", () => run(async () => {
    try {
      await loadVariant($("variant").value);
    } catch (error) {
      setStatus("error", error.message); // the variant select stays on: another can be picked
      throw error;
    }
  }));
  $("enroll-button").addEventListener("click", () => run(enroll));
  $("verify-button").addEventListener("click", () => run(() => verify(() => chosenFile("verify-file", "verify"))));
  $("identify-button").addEventListener("click", () => run(() => identify(() => chosenFile("identify-file", "identify"))));
  $("export-button").addEventListener("click", () => run(exportGallery));
  $("import-file").addEventListener("change", () => run(importGallery));
  setUpCamera();
  await refreshGallery();
  await loadDetector();
  state.started = true; // from here another variant can be picked, even when the default one is refused
  try {
    await loadVariant(state.config.default_variant);
  } finally {
    syncControls();
  }
}

// For tests and the curious: the faces the page finds in RGBA pixels ({ data, width, height }, as
// an ImageData), largest first, in the photo's pixels.
window.__nptface = {
  detect: async ({ data, width, height }) => {
    if (!state.detector) throw new Error("this bundle has no face detector");
    return state.detector.detect(rgbaToRgb(data, width, height), width, height);
  },
};

start().catch((error) => {
  setReady(false);
  setStatus("error", error.message);
});
