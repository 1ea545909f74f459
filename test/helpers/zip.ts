// Reads a .zip (a .vsix) with nothing but zlib: its entries from the central directory, and their contents.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

export interface ZipEntry { name: string; size: number; compressedSize: number; method: number; localOffset: number; extraLength: number }

export function zipEntries(file: string): ZipEntry[] {
  const buf = fs.readFileSync(file);
  // The end-of-central-directory record sits in the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65_557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error(`${file} is not a zip file (no end-of-central-directory record)`);
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const entries: ZipEntry[] = [];
  for (let i = 0; i < count; i++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error(`${file}: bad central directory entry ${i}`);
    const method = buf.readUInt16LE(p + 10);
    const compressedSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLength = buf.readUInt16LE(p + 28);
    const extraLength = buf.readUInt16LE(p + 30);
    const commentLength = buf.readUInt16LE(p + 32);
    const localOffset = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLength);
    entries.push({ name, size, compressedSize, method, localOffset, extraLength });
    p += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

export function readEntry(file: string, entry: ZipEntry): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const header = Buffer.alloc(30);
    fs.readSync(fd, header, 0, 30, entry.localOffset);
    if (header.readUInt32LE(0) !== 0x04034b50) throw new Error(`${file}: bad local header for ${entry.name}`);
    const start = entry.localOffset + 30 + header.readUInt16LE(26) + header.readUInt16LE(28);
    const data = Buffer.alloc(entry.compressedSize);
    fs.readSync(fd, data, 0, entry.compressedSize, start);
    if (entry.method === 0) return data;
    if (entry.method === 8) return zlib.inflateRawSync(data);
    throw new Error(`${file}: ${entry.name} uses compression method ${entry.method}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Extracts every entry under `dir`, as VS Code does when it installs a .vsix. */
export function extractZip(file: string, dir: string): void {
  for (const e of zipEntries(file)) {
    if (e.name.endsWith('/')) continue;
    const target = path.join(dir, e.name);
    if (!path.resolve(target).startsWith(path.resolve(dir) + path.sep)) throw new Error(`${file}: entry ${e.name} escapes the folder`);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, readEntry(file, e));
  }
}
