// The demo's copy of nptface.core.alignment: the similarity transform of a face's landmarks onto
// the bundle's template, and Pillow's bilinear affine warp that cuts the crop out of the photo.
//
// Points follow the insightface convention of the Python side: pixel (i, j)'s centre is at (i, j).
// The warp follows Pillow's Geometry.c (ImagingGenericTransform with affine_transform and
// bilinear_filter32RGB: samples at output pixel centres, edge rows and columns repeated inside the
// image, black outside, values truncated to uint8), so a crop equals warp_face's up to the last
// bits of the matrix (tests/on_device/test_align_js.py checks both against Python).

// The 2x3 matrix [[a, b, tx], [c, d, ty]] of the rotation, uniform scale and translation that
// minimise the squared distances from the mapped src points to dst (Umeyama 1991, no reflection).
// In two dimensions Umeyama's SVD has a closed form: with the cross-covariance C of the centred
// points, the best rotation has cos, sin proportional to (C00 + C11, C10 - C01), and the sum of the
// signed singular values is the length of that vector.
export function similarityTransform(src, dst) {
  const n = src.length;
  if (n < 2 || dst.length !== n) {
    throw new Error(`similarity transform: ${n} source and ${dst.length} template points; expected the same number, at least 2`);
  }
  const mean = (points, axis) => points.reduce((sum, p) => sum + p[axis], 0) / n;
  const [sx, sy, dx, dy] = [mean(src, 0), mean(src, 1), mean(dst, 0), mean(dst, 1)];
  let variance = 0;
  let [c00, c01, c10, c11] = [0, 0, 0, 0];
  for (let k = 0; k < n; k++) {
    const [ux, uy] = [src[k][0] - sx, src[k][1] - sy];
    const [vx, vy] = [dst[k][0] - dx, dst[k][1] - dy];
    variance += ux * ux + uy * uy;
    c00 += vx * ux;
    c01 += vx * uy;
    c10 += vy * ux;
    c11 += vy * uy;
  }
  const [p, q] = [c00 + c11, c10 - c01];
  const length = Math.hypot(p, q);
  if (variance === 0 || length === 0) throw new Error("the face's landmarks coincide: no transform maps them onto the template");
  const scale = length / variance; // the 1/n of the covariance and of the variance cancel
  const [a, b, c, d] = [(scale * p) / length, (-scale * q) / length, (scale * q) / length, (scale * p) / length];
  return [[a, b, dx - (a * sx + b * sy)], [c, d, dy - (c * sx + d * sy)]];
}

// The inverse of matrix (image -> crop) in Pillow's coordinates, whose pixel centres sit at +0.5:
// for each crop pixel, where to sample the image (the six numbers Image.transform takes).
function pillowInverse(matrix) {
  const [[a, b, tx], [c, d, ty]] = matrix;
  const det = a * d - b * c;
  const [ia, ib, ic, id] = [d / det, -b / det, -c / det, a / det];
  const [itx, ity] = [-(ia * tx + ib * ty), -(ic * tx + id * ty)];
  return [ia, ib, itx + 0.5 - 0.5 * (ia + ib), ic, id, ity + 0.5 - 0.5 * (ic + id)];
}

// The size x size RGB crop of an RGB uint8 image (width x height) under matrix (image -> crop).
export function warpFace(rgb, width, height, matrix, size) {
  const [a0, a1, a2, a3, a4, a5] = pillowInverse(matrix);
  const out = new Uint8ClampedArray(size * size * 3); // black where the crop leaves the image
  const clip = (v, limit) => (v < 0 ? 0 : v < limit ? v : limit - 1);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let xin = a0 * (x + 0.5) + a1 * (y + 0.5) + a2;
      let yin = a3 * (x + 0.5) + a4 * (y + 0.5) + a5;
      if (xin < 0 || xin >= width || yin < 0 || yin >= height) continue;
      xin -= 0.5;
      yin -= 0.5;
      const [ix, iy] = [Math.floor(xin), Math.floor(yin)];
      const [fx, fy] = [xin - ix, yin - iy];
      const [x0, x1] = [clip(ix, width) * 3, clip(ix + 1, width) * 3];
      const row0 = clip(iy, height) * width * 3;
      const row1 = iy + 1 >= 0 && iy + 1 < height ? (iy + 1) * width * 3 : -1;
      for (let band = 0; band < 3; band++) {
        const top = rgb[row0 + x0 + band] + (rgb[row0 + x1 + band] - rgb[row0 + x0 + band]) * fx;
        const bottom = row1 < 0 ? top : rgb[row1 + x0 + band] + (rgb[row1 + x1 + band] - rgb[row1 + x0 + band]) * fx;
        out[(y * size + x) * 3 + band] = Math.trunc(top + (bottom - top) * fy);
      }
    }
  }
  return out;
}
