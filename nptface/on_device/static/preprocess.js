// The demo's copy of nptface.core.preprocess: RGB, Pillow's BILINEAR resize, (x - mean) / std.
//
// Pillow's resize is not the textbook 4-tap bilinear: when shrinking it widens the triangle
// filter by the scale factor (an antialiasing convolution) and it works in 22-bit fixed point,
// clipping to uint8 after each of its two passes. This file
// follows Pillow's Resample.c step by step, so a decoded image gives the same crop here as
// in Python (tests/on_device/test_preprocess_js.py checks it against Pillow).

const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;

function triangle(x) {
  const a = Math.abs(x);
  return a < 1 ? 1 - a : 0;
}

// Per output pixel: the first input index, the number of taps, and fixed-point weights.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // the bilinear filter's support is 1
  const kSize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * kSize);
  const weights = new Float64Array(kSize);
  const ss = 1 / filterScale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = triangle((x + xmin - center + 0.5) * ss);
      total += weights[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = total !== 0 ? weights[x] / total : weights[x];
      kk[xx * kSize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, kSize };
}

function clip8(value) {
  if (value >= ONE * 256) return 255;
  if (value <= 0) return 0;
  return Math.floor(value / ONE);
}

// One separable pass over an RGB uint8 image (width x height), along x or y.
function resamplePass(src, width, height, outSize, horizontal) {
  const inSize = horizontal ? width : height;
  const { bounds, kk, kSize } = coefficients(inSize, outSize);
  const outW = horizontal ? outSize : width;
  const outH = horizontal ? height : outSize;
  const out = new Uint8ClampedArray(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const o = horizontal ? x : y;
      const first = bounds[2 * o];
      const taps = bounds[2 * o + 1];
      let r = ONE / 2;
      let g = ONE / 2;
      let b = ONE / 2;
      for (let t = 0; t < taps; t++) {
        const k = kk[o * kSize + t];
        const i = horizontal ? (y * width + first + t) * 3 : ((first + t) * width + x) * 3;
        r += src[i] * k;
        g += src[i + 1] * k;
        b += src[i + 2] * k;
      }
      const j = (y * outW + x) * 3;
      out[j] = clip8(r);
      out[j + 1] = clip8(g);
      out[j + 2] = clip8(b);
    }
  }
  return out;
}

// RGBA pixels (as from getImageData) -> RGB uint8, alpha dropped, as Pillow's convert("RGB").
export function rgbaToRgb(rgba, width, height) {
  const rgb = new Uint8ClampedArray(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    rgb[3 * p] = rgba[4 * p];
    rgb[3 * p + 1] = rgba[4 * p + 1];
    rgb[3 * p + 2] = rgba[4 * p + 2];
  }
  return rgb;
}

// RGB uint8 (width x height) -> RGB uint8 (outWidth x outHeight), as Pillow's resize(BILINEAR).
export function resizeRgb(rgb, width, height, outWidth, outHeight) {
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
  // pixels as the width; the order changes the intermediate rounding, so it is followed here.
  const verticalFirst = height - outHeight > 0 && height - outHeight > (width - outWidth) * 2;
  let out = rgb;
  if (verticalFirst) {
    if (height !== outHeight) out = resamplePass(out, width, height, outHeight, false);
    if (width !== outWidth) out = resamplePass(out, width, outHeight, outWidth, true);
  } else {
    if (width !== outWidth) out = resamplePass(out, width, height, outWidth, true);
    if (height !== outHeight) out = resamplePass(out, outWidth, height, outHeight, false);
  }
  return out;
}

// RGBA pixels (as from getImageData) -> RGB uint8 (size x size x 3), as to_rgb_array does.
export function toRgbCrop(rgba, width, height, size) {
  return resizeRgb(rgbaToRgb(rgba, width, height), width, height, size, size);
}

// RGB uint8 (size x size x 3) -> float32 NCHW (1, 3, size, size) scaled with the manifest's mean/std.
export function toInputTensor(rgb, size, mean, std) {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = (rgb[3 * p + c] - mean) / std;
  }
  return out;
}
