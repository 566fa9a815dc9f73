// Netpbm images (PGM P2/P5, PPM P3/P6), which browsers do not decode, read as Pillow reads them.
//
// The CLI opens these through Pillow, so the page follows Pillow's PpmImagePlugin: values are
// rescaled to 8 bits with round(value / maxval * 255) (Python's round: ties to even), grey images
// with maxval > 255 go through 16 bits and then nptface's 16-to-8-bit rule (value / 257, ties to
// even), raw values above maxval are clipped and plain ones refused. Bitmaps (P1/P4) and float
// maps (Pf/PF) are not face images and are refused. The size is checked before pixels are read.

const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);
const KINDS = { 0x32: { channels: 1, raw: false }, 0x33: { channels: 3, raw: false },
  0x35: { channels: 1, raw: true }, 0x36: { channels: 3, raw: true } };

export function isNetpbm(bytes) {
  return bytes.length >= 2 && bytes[0] === 0x50 && bytes[1] in KINDS;
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// The header's next decimal token (comments run from '#' to the end of the line) and where it ends.
function token(bytes, start) {
  let i = start;
  for (;;) {
    while (i < bytes.length && WHITESPACE.has(bytes[i])) i++;
    if (bytes[i] !== 0x23) break;
    while (i < bytes.length && bytes[i] !== 0x0a && bytes[i] !== 0x0d) i++;
  }
  let end = i;
  while (end < bytes.length && bytes[end] >= 0x30 && bytes[end] <= 0x39) end++;
  if (end === i || end - i > 10 || (end < bytes.length && !WHITESPACE.has(bytes[end]))) {
    throw new Error("not a valid PGM/PPM header");
  }
  return { value: Number(new TextDecoder().decode(bytes.subarray(i, end))), end };
}

// The value of each sample in 0..255, from its stored value in 0..maxval.
function eightBit(channels, maxval) {
  if (maxval === 255) return (v) => v;
  if (channels === 3 || maxval < 256) return (v) => Math.min(255, roundHalfEven((v / maxval) * 255));
  return (v) => roundHalfEven(Math.min(65535, roundHalfEven((v / maxval) * 65535)) / 257);
}

// { width, height, pixels: RGBA Uint8ClampedArray }; checkSize(width, height) runs before any pixel is read.
export function decodeNetpbm(bytes, checkSize) {
  const kind = KINDS[bytes[1]];
  const width = token(bytes, 2);
  const height = token(bytes, width.end);
  const maxval = token(bytes, height.end);
  if (!(width.value > 0 && height.value > 0)) throw new Error("not a valid PGM/PPM header (zero size)");
  if (!(maxval.value > 0 && maxval.value < 65536)) throw new Error(`maxval ${maxval.value}: expected 1..65535`);
  checkSize(width.value, height.value);
  const count = width.value * height.value * kind.channels;
  const toByte = eightBit(kind.channels, maxval.value);
  const samples = new Uint8ClampedArray(count);
  if (kind.raw) {
    const wide = maxval.value > 255;
    const start = maxval.end + 1; // exactly one whitespace byte ends a raw header
    if (bytes.length < start + count * (wide ? 2 : 1)) throw new Error("the pixel data is truncated");
    for (let s = 0; s < count; s++) {
      const v = wide ? (bytes[start + 2 * s] << 8) | bytes[start + 2 * s + 1] : bytes[start + s];
      samples[s] = toByte(v); // toByte clips values above maxval, as Pillow's raw decoder does
    }
  } else {
    let at = maxval.end;
    for (let s = 0; s < count; s++) {
      let next;
      try {
        next = token(bytes, at);
      } catch {
        throw new Error("the pixel data is truncated or not decimal numbers");
      }
      if (next.value > maxval.value) throw new Error(`sample ${next.value} exceeds maxval ${maxval.value}`);
      samples[s] = toByte(next.value);
      at = next.end;
    }
  }
  const pixels = new Uint8ClampedArray(width.value * height.value * 4);
  for (let p = 0; p < width.value * height.value; p++) {
    const c = kind.channels === 3 ? 3 * p : p;
    const [r, g, b] = kind.channels === 3 ? [samples[c], samples[c + 1], samples[c + 2]] : [samples[c], samples[c], samples[c]];
    pixels.set([r, g, b, 255], 4 * p);
  }
  return { width: width.value, height: height.value, pixels };
}
