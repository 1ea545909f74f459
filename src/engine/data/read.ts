// Reading a dataset file: a JSON array or JSON Lines (detected by content, not by extension), gzip-compressed or not
// (detected by its magic bytes), every record checked to have a known shape, with the line each record starts on so
// errors point into the file.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { badInput } from '../runtime/errors';
import { checkFileSize, INPUT_LIMITS, mb } from '../runtime/inputs';
import { detectFormat, SHAPES, tryParse, unknownShape, type RecordFormat } from './shapes';

export interface ShapeCount { format: RecordFormat; count: number; /** 1-based line of its first record. */ firstLine: number }

export interface Dataset {
  file: string;
  /** Hex SHA-256 of the file's bytes (compressed, if it is), so a report names exactly the file it was computed on. */
  sha256: string;
  /** Set when the file was decompressed on reading. */
  compression?: 'gzip';
  /** The most common record format in the file (records may mix formats). */
  format: RecordFormat;
  /** How many records have each shape, most common first. */
  shapes: ShapeCount[];
  /** Things the user should know before the data is used (a file that mixes shapes), one sentence each. */
  warnings: string[];
  count: number;
  /** The parsed records, in file order. */
  raw: unknown[];
  /** lines[i] is the 1-based line where record i starts. */
  lines: number[];
}

/**
 * Compressed and binary formats, by the magic bytes that start them: a dataset saved as one of these would otherwise
 * reach the JSON parser and fail with "Unexpected token".
 */
const UNREADABLE: { magic: number[]; what: string; fix: string }[] = [
  { magic: [0x28, 0xb5, 0x2f, 0xfd], what: 'zstd-compressed', fix: 'decompress it first (zstd -d FILE)' },
  { magic: [0x42, 0x5a, 0x68], what: 'bzip2-compressed', fix: 'decompress it first (bunzip2 -k FILE)' },
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], what: 'xz-compressed', fix: 'decompress it first (xz -dk FILE)' },
  { magic: [0x50, 0x4b, 0x03, 0x04], what: 'a zip archive', fix: 'extract the JSON or JSON Lines file from it first' },
  { magic: [0x50, 0x41, 0x52, 0x31], what: 'a Parquet file', fix: 'convert it to JSON Lines first (e.g. pandas.read_parquet(FILE).to_json(OUT, orient="records", lines=True))' },
];

const startsWith = (bytes: Buffer, magic: number[]) => bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);

/** The file's text: decompressed when it is gzip (by its magic bytes, whatever its name), refused when it is binary. */
function datasetText(bytes: Buffer, file: string): { text: string; compression?: 'gzip' } {
  let data = bytes;
  let compression: 'gzip' | undefined;
  if (startsWith(bytes, [0x1f, 0x8b])) {
    try {
      // A small file can inflate to any size (a gzip bomb): stop one byte past the limit.
      data = zlib.gunzipSync(bytes, { maxOutputLength: INPUT_LIMITS.datasetBytes + 1 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw badInput(`the dataset inflates to more than ${mb(INPUT_LIMITS.datasetBytes)}, the most DomLoRA reads; split it into smaller files`, file);
      }
      throw badInput(`the dataset is gzip-compressed but cannot be decompressed (${err instanceof Error ? err.message : String(err)}); ` +
        'is the file complete?', file);
    }
    compression = 'gzip';
    if (data.length > INPUT_LIMITS.datasetBytes) {
      throw badInput(`the dataset inflates to more than ${mb(INPUT_LIMITS.datasetBytes)}, the most DomLoRA reads; split it into smaller files`, file);
    }
  }
  for (const u of UNREADABLE) {
    if (startsWith(data, u.magic)) throw badInput(`the dataset is ${u.what}, not JSON or JSON Lines: ${u.fix.replace('FILE', file)}`, file);
  }
  // Editors on Windows like to start UTF-8 files with a byte-order mark, which JSON.parse rejects.
  return { text: data.toString('utf8').replace(/^\uFEFF/, ''), ...(compression ? { compression } : {}) };
}

/** Reads a dataset file, parses it (by content, not by extension) and checks every record has a known shape. */
export function readDataset(file: string): Dataset {
  checkFileSize(file, INPUT_LIMITS.datasetBytes, 'a dataset (split it into smaller files)', 'cannot read the dataset');
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw badInput(`cannot read the dataset: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  const { text, compression } = datasetText(bytes, file);
  const empty = 'the dataset is empty: expected a JSON array of records or JSON Lines (one record per line)';
  if (text.trim() === '') throw badInput(empty, file);

  const { raw, lines, starts } = text.trimStart().startsWith('[') ? parseJsonArray(text, file) : parseJsonLines(text, file);
  if (raw.length === 0) throw badInput(empty, file);
  if (starts) checkArrayRecordSizes(text, starts, lines, file);

  // Map iteration follows first appearance, so a tie goes to the format seen first.
  const counts = new Map<RecordFormat, ShapeCount>();
  raw.forEach((record, i) => {
    const format = detectFormat(record);
    if (!format) throw unknownShape(record, { index: i, line: lines[i] ?? 0, file });
    const c = counts.get(format);
    if (c) c.count++;
    else counts.set(format, { format, count: 1, firstLine: lines[i] ?? 0 });
  });
  const shapes = [...counts.values()].sort((a, b) => b.count - a.count);
  const warnings = shapes.length > 1 ? [mixedShapes(shapes)] : [];
  return { file, sha256, ...(compression ? { compression } : {}), format: shapes[0]!.format, shapes, warnings, count: raw.length, raw, lines };
}

/**
 * A file whose records have different shapes is often a mistake (two files concatenated, a few records written by
 * hand): each record is still read by its own shape, but plain text supervises every token while the others
 * supervise only the answers, so the user should know.
 */
function mixedShapes(shapes: ShapeCount[]): string {
  const list = shapes.map((s) => `${s.count} ${s.format} ${SHAPES[s.format].keys} (first at line ${s.firstLine})`).join(', ');
  const text = shapes.some((s) => s.format === 'text')
    ? '; the plain-text records are supervised on every token, the others only on their answers' : '';
  return `the file mixes record shapes: ${list}. Each record is read by its own shape${text}`;
}

/** The UTF-8 size of `text` from `start` to `end`, computed only when it could exceed `limit`. */
function overLimit(text: string, start: number, end: number, limit: number): boolean {
  const chars = end - start;
  if (chars * 3 <= limit) return false; // a UTF-16 unit is at most 3 bytes of UTF-8
  return chars > limit || Buffer.byteLength(text.slice(start, end), 'utf8') > limit;
}

/**
 * Every record within INPUT_LIMITS.recordBytes: one huge record would take the tokenizer (and the chat template)
 * minutes and gigabytes. JSON Lines are checked line by line before parsing; a JSON array here, by the spans of its
 * top-level elements (each from its start to the next one's).
 */
function checkArrayRecordSizes(text: string, starts: number[], lines: number[], file: string): void {
  for (let i = 0; i < starts.length; i++) {
    const end = i + 1 < starts.length ? starts[i + 1]! : text.length;
    if (overLimit(text, starts[i]!, end, INPUT_LIMITS.recordBytes)) throw recordTooLarge(lines[i] ?? 0, file);
  }
}

function recordTooLarge(line: number, file: string) {
  return badInput(`line ${line}: the record is larger than ${mb(INPUT_LIMITS.recordBytes)}, the most DomLoRA reads for one record; `
    + 'split it or leave it out', file);
}

function parseJsonArray(text: string, file: string): { raw: unknown[]; lines: number[]; starts: number[] } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    // V8 reports a character offset for some errors ("... in JSON at position 123") and none for others
    // ("Unexpected token '}'"); either way the user needs a line to open.
    const at = /position (\d+)/.exec(message);
    const where = at ? `line ${lineAt(text, Number(at[1]))}` : arrayErrorLine(text);
    // V8 quotes the text around the error, raw newlines included; keep the message on one line.
    throw badInput(`${where}: invalid JSON: ${message.replace(/\s+/g, ' ')}`, file);
  }
  if (!Array.isArray(value)) throw badInput('expected a JSON array of records', file);
  return { raw: value, ...arrayElements(text) };
}

function parseJsonLines(text: string, file: string): { raw: unknown[]; lines: number[]; starts?: undefined } {
  const raw: unknown[] = [];
  const lines: number[] = [];
  const rows = text.split('\n');
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i] as string;
    if (row.trim() === '') continue;
    if (overLimit(row, 0, row.length, INPUT_LIMITS.recordBytes)) throw recordTooLarge(i + 1, file);
    try {
      raw.push(JSON.parse(row));
      lines.push(i + 1);
    } catch (err) {
      // A single pretty-printed object is not JSON Lines but is still an unambiguous one-record dataset.
      if (raw.length === 0) {
        const whole = tryParse(text);
        if (whole !== undefined && !Array.isArray(whole)) {
          if (overLimit(text, 0, text.length, INPUT_LIMITS.recordBytes)) throw recordTooLarge(i + 1, file);
          return { raw: [whole], lines: [i + 1] };
        }
      }
      throw badInput(`line ${i + 1}: invalid JSON: ${err instanceof Error ? err.message : String(err)}`, file);
    }
  }
  return { raw, lines };
}

function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * The line of a syntax error in text that starts as a JSON array, when the parser did not say where: the array is
 * cut into its top-level elements (the scan below) and the first element that does not parse on its own is the one
 * at fault. Its start line is reported, refined by the position within it when the parser gives one.
 */
function arrayErrorLine(text: string): string {
  let line = 1;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  let startLine = 1;
  let afterComma = false;
  const elementError = (end: number): string | undefined => {
    const element = text.slice(start, end);
    try {
      JSON.parse(element);
      return undefined;
    } catch (err) {
      const at = /position (\d+)/.exec(err instanceof Error ? err.message : '');
      return at ? `line ${startLine + lineAt(element, Number(at[1])) - 1}` : `in the record starting at line ${startLine}`;
    }
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') line++;
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"' || c === '\n') inString = false;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') continue;
    if (depth === 0 && i > text.search(/\S/)) return `line ${line}`; // something after the closing bracket
    if (depth === 1 && start < 0 && c !== ',' && c !== ']') { start = i; startLine = line; }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') {
      depth--;
      if (depth === 0) {
        if (start >= 0) {
          const bad = elementError(i);
          if (bad !== undefined) return bad;
        } else if (afterComma) return `line ${line}`; // a trailing comma
      }
    } else if (c === ',' && depth === 1) {
      if (start < 0) return `line ${line}`; // an empty element: a doubled or leading comma
      const bad = elementError(i);
      if (bad !== undefined) return bad;
      start = -1;
      afterComma = true;
    }
  }
  return `line ${line}`; // the text ended inside the array
}

/**
 * The line (and the offset) where each element of a top-level JSON array starts. One pass over text already known
 * to be valid JSON, tracking only strings (whose brackets do not count) and nesting depth: far cheaper than a parser
 * with positions, and it lets errors about record 812 say "line 4061".
 */
function arrayElements(text: string): { lines: number[]; starts: number[] } {
  const lines: number[] = [];
  const starts: number[] = [];
  let line = 1;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let expectingElement = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') { line++; continue; }
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') continue;
    if (depth === 1 && expectingElement && c !== ']') {
      lines.push(line);
      starts.push(i);
      expectingElement = false;
    }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') {
      depth++;
      if (depth === 1) expectingElement = true;
    } else if (c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 1) expectingElement = true;
  }
  return { lines, starts };
}

