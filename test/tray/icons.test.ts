/**
 * The tray icons: valid PNGs (read back with a decoder written here from the PNG spec, and with
 * ImageMagick), one distinct picture per state, legible on light and dark
 * panels (an outline and a halo around card and badge).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inflateSync } from 'node:zlib';
import { ICON_SIZE, renderTrayIcon, trayIconPng } from '../../tray/icons.js';
import { crc32, encodePng } from '../../tray/png.js';
import { TRAY_ICON_STATES } from '../../tray/tray-state.js';
import { REPO_ROOT } from '../support/pcscd.js';

const ARTIFACTS = process.env['CARDLINK_TEST_ARTIFACTS'] ?? path.join(REPO_ROOT, 'test-artifacts');

/** Reads back what encodePng writes: chunks with their CRCs, IHDR, the unfiltered scanlines. */
function decodePng(png: Buffer): { width: number; height: number; rgba: Buffer; chunks: string[] } {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  let at = 8;
  const chunks: string[] = [];
  let width = 0;
  let height = 0;
  const idat: Buffer[] = [];
  while (at < png.length) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    assert.equal(
      png.readUInt32BE(at + 8 + length),
      crc32(png.subarray(at + 4, at + 8 + length)),
      `${type} CRC`,
    );
    chunks.push(type);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.deepEqual([...data.subarray(8)], [8, 6, 0, 0, 0], 'RGBA, 8 bit, deflate, no interlace');
    }
    if (type === 'IDAT') idat.push(data);
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 4;
  assert.equal(raw.length, (stride + 1) * height);
  const rgba = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (stride + 1)], 0, 'filter type None');
    raw.copy(rgba, y * stride, y * (stride + 1) + 1, (y + 1) * (stride + 1));
  }
  return { width, height, rgba, chunks };
}

const pixel = (rgba: Uint8Array, size: number, x: number, y: number) => {
  const i = (y * size + x) * 4;
  return [rgba[i]!, rgba[i + 1]!, rgba[i + 2]!, rgba[i + 3]!];
};
const luminance = ([r, g, b]: number[]) => 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;

describe('PNG writer', () => {
  it('CRC-32 has the standard check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  });

  it('round-trips pixels', () => {
    const rgba = new Uint8Array([
      255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 1, 2, 3, 4, 9, 9, 9, 9, 7, 7, 7, 7,
    ]);
    const back = decodePng(encodePng(3, 2, rgba));
    assert.equal(back.width, 3);
    assert.equal(back.height, 2);
    assert.deepEqual([...back.rgba], [...rgba]);
    assert.deepEqual(back.chunks, ['IHDR', 'IDAT', 'IEND']);
  });

  it('refuses a buffer that does not match the size', () => {
    assert.throws(() => encodePng(2, 2, new Uint8Array(15)), /needs 16 bytes, got 15/);
    assert.throws(() => encodePng(0, 2, new Uint8Array(0)), /bad image size/);
  });
});

describe('tray icons', () => {
  const icons = new Map(TRAY_ICON_STATES.map((s) => [s, renderTrayIcon(s)]));

  it('each state is a valid square PNG with transparent corners', () => {
    for (const state of TRAY_ICON_STATES) {
      const { width, height, rgba } = decodePng(trayIconPng(state));
      assert.equal(width, ICON_SIZE);
      assert.equal(height, ICON_SIZE);
      assert.deepEqual([...rgba], [...icons.get(state)!], state);
      for (const [x, y] of [
        [0, 0],
        [ICON_SIZE - 1, 0],
        [0, ICON_SIZE - 1],
      ] as const)
        assert.equal(pixel(rgba, ICON_SIZE, x, y)[3], 0, `${state} corner ${x},${y}`);
    }
  });

  it('no two states look alike: the badges differ in many pixels', () => {
    for (const a of TRAY_ICON_STATES)
      for (const b of TRAY_ICON_STATES) {
        if (a >= b) continue;
        const pa = icons.get(a)!;
        const pb = icons.get(b)!;
        let differing = 0;
        for (let i = 0; i < pa.length; i += 4)
          if (
            Math.abs(pa[i]! - pb[i]!) +
              Math.abs(pa[i + 1]! - pb[i + 1]!) +
              Math.abs(pa[i + 2]! - pb[i + 2]!) >
            60
          )
            differing++;
        assert.ok(differing > 150, `${a} vs ${b}: ${differing} pixels differ`);
      }
  });

  it('the glyphs differ in shape, not only in colour (compared as white masks)', () => {
    const mask = (rgba: Uint8Array) => {
      const m: boolean[] = [];
      for (let i = 0; i < rgba.length; i += 4)
        m.push(rgba[i]! > 240 && rgba[i + 1]! > 240 && rgba[i + 2]! > 240);
      return m;
    };
    for (const a of TRAY_ICON_STATES)
      for (const b of TRAY_ICON_STATES) {
        if (a >= b) continue;
        const ma = mask(icons.get(a)!);
        const mb = mask(icons.get(b)!);
        const differing = ma.filter((v, i) => v !== mb[i]).length;
        assert.ok(differing > 40, `${a} vs ${b}: glyph masks differ in ${differing} pixels`);
      }
  });

  it('every icon has both a dark outline and a light halo, so it reads on light and dark panels', () => {
    for (const state of TRAY_ICON_STATES) {
      const rgba = icons.get(state)!;
      let dark = 0;
      let light = 0;
      for (let i = 0; i < rgba.length; i += 4) {
        if (rgba[i + 3]! < 200) continue;
        const l = luminance([rgba[i]!, rgba[i + 1]!, rgba[i + 2]!]);
        if (l < 50) dark++;
        if (l > 220) light++;
      }
      assert.ok(dark > 200, `${state}: ${dark} dark outline pixels`);
      assert.ok(light > 200, `${state}: ${light} light halo pixels`);
    }
  });

  it('ImageMagick (installed by test/prepare-machine.sh) reads them as 64×64 RGBA PNGs', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cardlink-icons-'));
    try {
      const files = TRAY_ICON_STATES.map((state) => {
        const file = path.join(dir, `${state}.png`);
        writeFileSync(file, trayIconPng(state));
        return file;
      });
      for (const file of files) {
        const out = execFileSync('identify', ['-format', '%m %w %h %[channels]', file], { encoding: 'utf8' });
        assert.match(out, /^PNG 64 64 srgba/, file);
      }
      // The picture in docs/tray.md: the six on a light and a dark panel, large and at 24 px.
      const strip = path.join(dir, 'strip.png');
      execFileSync('convert', [...files, '-background', 'none', '+append', strip]);
      const rows = [
        ['100%', '#f2f2f2'],
        ['100%', '#2b2b2b'],
        ['37.5%', '#f2f2f2'],
        ['37.5%', '#2b2b2b'],
      ].flatMap(([size, panel]) => [
        '(',
        strip,
        '-resize',
        size!,
        '-background',
        panel!,
        '-alpha',
        'remove',
        ')',
      ]);
      mkdirSync(ARTIFACTS, { recursive: true });
      const picture = path.join(ARTIFACTS, 'tray-icons.png');
      execFileSync('convert', [...rows, '-background', 'white', '-append', '+repage', picture]);
      assert.equal(execFileSync('identify', ['-format', '%w %h', picture], { encoding: 'utf8' }), '384 176');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
