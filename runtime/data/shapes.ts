// Flat-coloured shapes on a plain background: the pictures of the demo data. A shape is a polygon (a circle is a
// 32-gon) with vertices rounded to 0.01 px; the same polygon is filled into the pixels and written as the COCO
// annotation, so masks, boxes and pictures agree exactly.
import type { Rng } from './rng.js';

export const SHAPE_KINDS = ['circle', 'square', 'triangle'] as const;
export type ShapeKind = (typeof SHAPE_KINDS)[number];

export const COLOURS = {
  red: [220, 40, 40],
  green: [40, 190, 70],
  blue: [50, 90, 230],
  yellow: [235, 215, 50],
  white: [240, 240, 240],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

export interface Shape {
  kind: ShapeKind;
  colour: ColourName;
  /** Centre and radius in pixels: the shape fits in the circle of radius r around (cx, cy). */
  cx: number;
  cy: number;
  r: number;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

/** The outline as [x0, y0, x1, y1, ...] (COCO's polygon layout), clockwise on screen. */
export function shapePolygon(s: Shape): number[] {
  const pts: [number, number][] = [];
  if (s.kind === 'circle') {
    for (let i = 0; i < 32; i++) pts.push([s.cx + s.r * Math.cos((2 * Math.PI * i) / 32), s.cy + s.r * Math.sin((2 * Math.PI * i) / 32)]);
  } else if (s.kind === 'square') {
    const h = s.r * 0.85; // about the circle's area
    pts.push([s.cx - h, s.cy - h], [s.cx + h, s.cy - h], [s.cx + h, s.cy + h], [s.cx - h, s.cy + h]);
  } else {
    for (const deg of [-90, 30, 150]) pts.push([s.cx + s.r * Math.cos((deg * Math.PI) / 180), s.cy + s.r * Math.sin((deg * Math.PI) / 180)]);
  }
  return pts.flatMap(([x, y]) => [round2(x), round2(y)]);
}

/** [x, y, w, h] of a polygon: its vertices' extent. */
export function polygonBox(poly: readonly number[]): [number, number, number, number] {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i < poly.length; i += 2) {
    x0 = Math.min(x0, poly[i]);
    x1 = Math.max(x1, poly[i]);
    y0 = Math.min(y0, poly[i + 1]);
    y1 = Math.max(y1, poly[i + 1]);
  }
  return [x0, y0, round2(x1 - x0), round2(y1 - y0)];
}

/** An RGB picture, row-major [H, W, 3]. */
export class Canvas {
  readonly rgb: Uint8Array;
  constructor(readonly width: number, readonly height: number) {
    this.rgb = new Uint8Array(width * height * 3);
  }

  /** A plain grey background with a little noise, so pictures are not all identical away from the shapes. */
  background(rng: Rng): void {
    const level = rng.int(20, 80);
    for (let p = 0; p < this.width * this.height; p++) {
      const v = level + rng.int(-6, 6);
      this.rgb.fill(v, 3 * p, 3 * p + 3);
    }
  }

  /** Fills the pixels whose centres lie inside the polygon (even-odd rule); returns how many. */
  fill(poly: readonly number[], colour: readonly [number, number, number]): number {
    const [bx, by, bw, bh] = polygonBox(poly);
    let count = 0;
    for (let y = Math.max(0, Math.floor(by)); y <= Math.min(this.height - 1, Math.ceil(by + bh)); y++) {
      for (let x = Math.max(0, Math.floor(bx)); x <= Math.min(this.width - 1, Math.ceil(bx + bw)); x++) {
        if (!insidePolygon(poly, x + 0.5, y + 0.5)) continue;
        this.rgb.set(colour, 3 * (y * this.width + x));
        count++;
      }
    }
    return count;
  }

  /** [3, H, W], the HDF5 layout. */
  toCHW(): Uint8Array {
    const plane = this.width * this.height;
    const out = new Uint8Array(3 * plane);
    for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) out[c * plane + p] = this.rgb[3 * p + c];
    return out;
  }

  /** [H, W, 4] with opaque alpha, jpeg-js's layout. */
  toRGBA(): Uint8Array {
    const plane = this.width * this.height;
    const out = new Uint8Array(4 * plane);
    for (let p = 0; p < plane; p++) {
      out.set(this.rgb.subarray(3 * p, 3 * p + 3), 4 * p);
      out[4 * p + 3] = 255;
    }
    return out;
  }
}

export function insidePolygon(poly: readonly number[], x: number, y: number): boolean {
  let inside = false;
  const n = poly.length / 2;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = poly[2 * i], yi = poly[2 * i + 1], xj = poly[2 * j], yj = poly[2 * j + 1];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}
