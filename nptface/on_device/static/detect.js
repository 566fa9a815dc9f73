// The demo's copy of nptface.on_device.face_detection: BlazeFace (full range) on onnxruntime-web,
// with the same letterbox, anchors, decoding and weighted non-maximum suppression as Python, so the
// page finds the landmarks the CLI finds (tests/on_device/test_align_js.py and test_browser.py
// check it). The thresholds and the input size come from the bundle's manifest (its "detector"
// entry, written from the Python constants); the two numbers below are the model's own structure.
//
// Coordinates are pixels of the photo with pixel (i, j)'s centre at (i, j), as in Python.

import { resizeRgb } from "./preprocess.js";

const ANCHOR_STRIDE = 4; // one anchor per 4x4 cell of the input (face_detection.ANCHOR_GRID = 192 / 4)
const RAW_SCORE_CLIP = 80; // face_detection.RAW_SCORE_CLIP: keeps the sigmoid finite
const POINTS = 8; // box corners, then six keypoints

// Python's round(): halves go to the even neighbour.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest !== 0.5) return rest < 0.5 ? floor : floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

// The RGB image scaled to fit size x size (aspect kept, Pillow's bilinear), centred on black.
export function letterbox(rgb, width, height, size) {
  const scale = size / Math.max(width, height);
  const w = Math.max(roundHalfEven(width * scale), 1);
  const h = Math.max(roundHalfEven(height * scale), 1);
  const [padX, padY] = [Math.floor((size - w) / 2), Math.floor((size - h) / 2)];
  const resized = resizeRgb(rgb, width, height, w, h);
  const square = new Uint8ClampedArray(size * size * 3);
  for (let y = 0; y < h; y++) square.set(resized.subarray(y * w * 3, (y + 1) * w * 3), ((y + padY) * size + padX) * 3);
  return { square, box: { scaleX: w / width, scaleY: h / height, padX, padY } };
}

// Scores (N) and points (N x 8 x 2, flat) in [0, 1] input units from the model's raw outputs.
export function decode(rawBoxes, rawScores, size) {
  const grid = size / ANCHOR_STRIDE;
  const count = rawScores.length;
  const scores = new Float64Array(count);
  const points = new Float64Array(count * POINTS * 2);
  for (let i = 0; i < count; i++) {
    const [ax, ay] = [((i % grid) + 0.5) / grid, (Math.floor(i / grid) + 0.5) / grid];
    const raw = (k) => rawBoxes[i * 16 + k] / size;
    const [cx, cy, hw, hh] = [raw(0) + ax, raw(1) + ay, raw(2) / 2, raw(3) / 2];
    const p = points.subarray(i * 16, (i + 1) * 16);
    p.set([cx - hw, cy - hh, cx + hw, cy + hh]);
    for (let k = 4; k < 16; k += 2) [p[k], p[k + 1]] = [raw(k) + ax, raw(k + 1) + ay];
    const logit = Math.min(Math.max(rawScores[i], -RAW_SCORE_CLIP), RAW_SCORE_CLIP);
    scores[i] = 1 / (1 + Math.exp(-logit));
  }
  return { scores, points };
}

function iou(a, b) {
  const inter = Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]), 0) *
    Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]), 0);
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

// MediaPipe's weighted NMS: each kept detection is the score-weighted mean of those it overlaps.
// Returns [{ score, points }], points a Float64Array of 16 numbers.
export function weightedNms(scores, points, minScore, iouThreshold) {
  let left = [];
  for (let i = 0; i < scores.length; i++) {
    const p = points.subarray(i * 16, (i + 1) * 16);
    if (scores[i] >= minScore && p[2] > p[0] && p[3] > p[1]) left.push({ score: scores[i], points: p });
  }
  left.sort((a, b) => b.score - a.score); // stable, as numpy's argsort(kind="stable")
  const merged = [];
  while (left.length) {
    const overlapping = left.filter((d) => iou(left[0].points, d.points) > iouThreshold);
    const mean = new Float64Array(16);
    let total = 0;
    for (const d of overlapping) {
      for (let k = 0; k < 16; k++) mean[k] += d.points[k] * d.score;
      total += d.score;
    }
    merged.push({ score: left[0].score, points: mean.map((v) => v / total) });
    left = left.filter((d) => !overlapping.includes(d));
  }
  return merged;
}

// The photo centred on a canvas twice its size, filled with its mean colour (truncated, as int()).
function widened(rgb, width, height) {
  const sums = [0, 0, 0];
  for (let p = 0; p < width * height; p++) for (let c = 0; c < 3; c++) sums[c] += rgb[3 * p + c];
  const mean = sums.map((s) => Math.trunc(s / (width * height)));
  const [w, h, ox, oy] = [2 * width, 2 * height, Math.floor(width / 2), Math.floor(height / 2)];
  const canvas = new Uint8ClampedArray(w * h * 3);
  for (let p = 0; p < w * h; p++) canvas.set(mean, 3 * p);
  for (let y = 0; y < height; y++) canvas.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), ((y + oy) * w + ox) * 3);
  return { canvas, w, h, ox, oy };
}

export class FaceDetector {
  // spec: the manifest's "detector" entry (input_size, min_score, nms_iou); run: Float32Array NCHW
  // input -> { boxes, scores } raw outputs.
  constructor(spec, run) {
    this.size = spec.input_size;
    this.minScore = spec.min_score;
    this.iou = spec.nms_iou;
    this.run = run;
  }

  // A detector on an onnxruntime-web session made from the model's bytes.
  static async create(ort, bytes, spec) {
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"] });
    const size = spec.input_size;
    const run = async (input) => {
      const outputs = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, size, size]) });
      // the regressors (16 per anchor) and the logits (1 per anchor), told apart by their width
      const [boxes, scores] = session.outputNames.map((name) => outputs[name])
        .sort((a, b) => b.dims[b.dims.length - 1] - a.dims[a.dims.length - 1]);
      return { boxes: boxes.data, scores: scores.data };
    };
    return new FaceDetector(spec, run);
  }

  // Faces in an RGB uint8 photo, largest first: [{ box: [x0, y0, x1, y1], score, keypoints: [[x, y] x 6] }].
  // As in Python, a photo where nothing is found is searched again on a canvas twice its size
  // (the model misses many faces that fill the whole frame).
  async detect(rgb, width, height) {
    const faces = await this.detectOnce(rgb, width, height);
    if (faces.length) return faces;
    const { canvas, w, h, ox, oy } = widened(rgb, width, height);
    return (await this.detectOnce(canvas, w, h)).map((face) => ({
      box: [face.box[0] - ox, face.box[1] - oy, face.box[2] - ox, face.box[3] - oy],
      score: face.score,
      keypoints: face.keypoints.map(([x, y]) => [x - ox, y - oy]),
    }));
  }

  async detectOnce(rgb, width, height) {
    const size = this.size;
    const { square, box } = letterbox(rgb, width, height, size);
    const input = new Float32Array(3 * size * size); // NCHW in [-1, 1], as MediaPipe feeds BlazeFace
    const plane = size * size;
    for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) input[c * plane + p] = (square[3 * p + c] - 127.5) / 127.5;
    const { boxes, scores } = await this.run(input);
    const decoded = decode(boxes, scores, size);
    const faces = weightedNms(decoded.scores, decoded.points, this.minScore, this.iou).map(({ score, points }) => {
      const pixels = [];
      for (let k = 0; k < 16; k += 2) {
        pixels.push([(points[k] * size - box.padX) / box.scaleX - 0.5, (points[k + 1] * size - box.padY) / box.scaleY - 0.5]);
      }
      return { box: [...pixels[0], ...pixels[1]], score, keypoints: pixels.slice(2) };
    });
    const area = (f) => Math.max(f.box[2] - f.box[0], 0) * Math.max(f.box[3] - f.box[1], 0);
    return faces.sort((a, b) => area(b) - area(a));
  }
}
