/**
 * The tray icon, drawn in code: a smart card (with its chip) and a round status badge whose
 * colour AND glyph tell the state (a check, three dots, a circular arrow, an arrow leaving, an
 * exclamation mark, a bar), so the state does not rest on colour alone.
 *
 * Panels are light or dark, so every shape has a dark outline and, outside it, a light halo:
 * on a light panel the outline carries the shape, on a dark one the halo does.
 *
 * Drawn at ICON_SIZE px with SUPERSAMPLING² samples per pixel (antialiasing) on a 64-unit
 * canvas; the panel scales it down to its height (22–32 px typically), so the strokes are thick
 * enough to survive that. See docs/tray.md for the pictures.
 */
import { encodePng } from './png.js';
import type { TrayIconState } from './tray-state.js';

/** Pixel size of the PNG handed to the tray. */
export const ICON_SIZE = 64;
/** Samples per pixel along each axis. */
const SUPERSAMPLING = 4;
/** Drawing units per side (shapes below are in these units). */
const UNITS = 64;

export type Rgba = readonly [number, number, number, number];
/** A shape: the signed distance (in units) from a point to its edge, negative inside. */
type Shape = (x: number, y: number) => number;
interface Layer {
  readonly shape: Shape;
  readonly colour: Rgba;
}

const OUTLINE: Rgba = [0x1c, 0x21, 0x28, 255];
const HALO: Rgba = [255, 255, 255, 235];
const GLYPH: Rgba = [255, 255, 255, 255];
const CHIP: Rgba = [0xe6, 0xb8, 0x3c, 255];
const CHIP_LINES: Rgba = [0x8a, 0x66, 0x12, 255];
const CARD_LIVE: Rgba = [0x3f, 0x6f, 0xb0, 255];
const CARD_IDLE: Rgba = [0xa4, 0xab, 0xb4, 255];
const CARD_TEXT: Rgba = [255, 255, 255, 170];

/** Badge colour per state (white glyphs read on each: contrast ≥ 3:1). */
export const TRAY_BADGE_COLOURS: Readonly<Record<TrayIconState, Rgba>> = {
  'signed-out': [0x6b, 0x72, 0x7c, 255],
  connecting: [0x1f, 0x6f, 0xc8, 255],
  connected: [0x1a, 0x8f, 0x43, 255],
  reconnecting: [0xb8, 0x6a, 0x00, 255],
  'taken-over': [0x75, 0x48, 0xbf, 255],
  error: [0xc8, 0x2a, 0x25, 255],
};

// ---- Shapes (signed distance functions) -------------------------------------------------------

/** Math.hypot is exact but several times slower; these distances need no care for overflow. */
function length(x: number, y: number): number {
  return Math.sqrt(x * x + y * y);
}

function roundRect(x0: number, y0: number, x1: number, y1: number, r: number): Shape {
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const hx = (x1 - x0) / 2 - r;
  const hy = (y1 - y0) / 2 - r;
  return (x, y) => {
    const qx = Math.abs(x - cx) - hx;
    const qy = Math.abs(y - cy) - hy;
    return length(Math.max(qx, 0), Math.max(qy, 0)) + Math.min(Math.max(qx, qy), 0) - r;
  };
}

function circle(cx: number, cy: number, r: number): Shape {
  return (x, y) => length(x - cx, y - cy) - r;
}

/** A line from a to b with round ends, `width` thick. */
function stroke(ax: number, ay: number, bx: number, by: number, width: number): Shape {
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  return (x, y) => {
    const t = Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len2));
    return length(x - (ax + t * dx), y - (ay + t * dy)) - width / 2;
  };
}

/** A ring around (cx, cy) between radii, leaving out angles from `gapFrom` to `gapTo` (radians, y down). */
function arc(cx: number, cy: number, r: number, width: number, gapFrom: number, gapTo: number): Shape {
  return (x, y) => {
    let a = Math.atan2(y - cy, x - cx);
    if (a < 0) a += 2 * Math.PI;
    if (a >= gapFrom && a <= gapTo) return 1;
    return Math.abs(length(x - cx, y - cy) - r) - width / 2;
  };
}

/** A filled triangle (inside test only; its edge is antialiased by the supersampling). */
function triangle(pts: readonly [number, number, number, number, number, number]): Shape {
  const [ax, ay, bx, by, cx, cy] = pts;
  const side = (px: number, py: number, qx: number, qy: number, x: number, y: number) =>
    (qx - px) * (y - py) - (qy - py) * (x - px);
  return (x, y) => {
    const d1 = side(ax, ay, bx, by, x, y);
    const d2 = side(bx, by, cx, cy, x, y);
    const d3 = side(cx, cy, ax, ay, x, y);
    const inside = (d1 >= 0 && d2 >= 0 && d3 >= 0) || (d1 <= 0 && d2 <= 0 && d3 <= 0);
    return inside ? -1 : 1;
  };
}

function union(...shapes: Shape[]): Shape {
  return (x, y) => {
    let d = Infinity;
    for (const shape of shapes) d = Math.min(d, shape(x, y));
    return d;
  };
}
const grow =
  (shape: Shape, by: number): Shape =>
  (x, y) =>
    shape(x, y) - by;

// ---- The picture ------------------------------------------------------------------------------

const CARD = roundRect(3, 9, 51, 45, 6);
const CHIP_BOX = roundRect(10, 17, 23, 28, 2);
const BADGE_X = 45;
const BADGE_Y = 45;
const BADGE_R = 14;

function glyph(state: TrayIconState): Shape {
  const x = BADGE_X;
  const y = BADGE_Y;
  switch (state) {
    case 'connected':
      return union(stroke(x - 6.5, y, x - 2, y + 4.8, 4), stroke(x - 2, y + 4.8, x + 6.5, y - 5, 4));
    case 'connecting':
      // An hourglass: waiting for the server.
      return union(
        triangle([x - 6, y - 7.5, x + 6, y - 7.5, x, y]),
        triangle([x - 6, y + 7.5, x + 6, y + 7.5, x, y]),
        stroke(x - 6, y - 7.5, x + 6, y - 7.5, 2),
        stroke(x - 6, y + 7.5, x + 6, y + 7.5, 2),
      );
    case 'reconnecting':
      // A circular arrow: a ring open at the upper right, with a head at the open end.
      return union(
        arc(x, y, 6.3, 3.6, 1.5 * Math.PI + 0.35, 2 * Math.PI),
        triangle([x + 2.2, y - 3.6, x + 10.6, y - 3.6, x + 6.4, y + 2.6]),
      );
    case 'taken-over':
      // An arrow leaving towards the upper right.
      return union(
        stroke(x - 5.5, y + 5.5, x + 4.5, y - 4.5, 4),
        stroke(x - 1.5, y - 6, x + 6, y - 6, 4),
        stroke(x + 6, y - 6, x + 6, y + 1.5, 4),
      );
    case 'error':
      return union(stroke(x, y - 7.5, x, y + 1.5, 4.4), circle(x, y + 6.8, 2.6));
    case 'signed-out':
      return stroke(x - 6.5, y, x + 6.5, y, 4.4);
  }
}

function layers(state: TrayIconState): Layer[] {
  const live = state !== 'signed-out';
  const badge = circle(BADGE_X, BADGE_Y, BADGE_R);
  return [
    // The card: halo, outline, body, chip, two lines of "text".
    { shape: grow(CARD, 2), colour: HALO },
    { shape: CARD, colour: OUTLINE },
    { shape: grow(CARD, -2.4), colour: live ? CARD_LIVE : CARD_IDLE },
    { shape: grow(CHIP_BOX, 0.8), colour: OUTLINE },
    { shape: CHIP_BOX, colour: CHIP },
    {
      shape: union(stroke(10.5, 22.5, 22.5, 22.5, 1), stroke(16.5, 17.5, 16.5, 27.5, 1)),
      colour: CHIP_LINES,
    },
    { shape: stroke(10, 35, 26, 35, 2.4), colour: CARD_TEXT },
    // The badge: outline, halo (which also cuts it free of the card), disc, glyph.
    { shape: grow(badge, 3.6), colour: OUTLINE },
    { shape: grow(badge, 2.2), colour: HALO },
    { shape: badge, colour: TRAY_BADGE_COLOURS[state] },
    { shape: glyph(state), colour: GLYPH },
  ];
}

/** The RGBA pixels of one state's icon at `size` px. */
export function renderTrayIcon(state: TrayIconState, size: number = ICON_SIZE): Uint8Array {
  const stack = layers(state);
  const out = new Uint8Array(size * size * 4);
  const scale = UNITS / size;
  const samples = SUPERSAMPLING * SUPERSAMPLING;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      // Premultiplied sums over the samples.
      let r = 0;
      let g = 0;
      let b = 0;
      let a = 0;
      for (let sy = 0; sy < SUPERSAMPLING; sy++) {
        for (let sx = 0; sx < SUPERSAMPLING; sx++) {
          const x = (px + (sx + 0.5) / SUPERSAMPLING) * scale;
          const y = (py + (sy + 0.5) / SUPERSAMPLING) * scale;
          // Painter's order, "over" compositing, premultiplied.
          let cr = 0;
          let cg = 0;
          let cb = 0;
          let ca = 0;
          for (const { shape, colour } of stack) {
            if (shape(x, y) > 0) continue;
            const la = colour[3] / 255;
            cr = colour[0] * la + cr * (1 - la);
            cg = colour[1] * la + cg * (1 - la);
            cb = colour[2] * la + cb * (1 - la);
            ca = la + ca * (1 - la);
          }
          r += cr;
          g += cg;
          b += cb;
          a += ca;
        }
      }
      const i = (py * size + px) * 4;
      if (a > 0) {
        out[i] = Math.round(r / a);
        out[i + 1] = Math.round(g / a);
        out[i + 2] = Math.round(b / a);
      }
      out[i + 3] = Math.round((a / samples) * 255);
    }
  }
  return out;
}

/** One state's icon as PNG. */
export function trayIconPng(state: TrayIconState, size: number = ICON_SIZE): Buffer {
  return encodePng(size, size, renderTrayIcon(state, size));
}
