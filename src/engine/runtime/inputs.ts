// Limits on what DomLoRA reads from files it did not write: a model folder or a dataset from a cloned repository may
// be made to exhaust memory or time (a 10 GB tokenizer.json, a vocabulary of a billion entries, a gzip bomb, one
// record of a gigabyte). Each limit sits well above what real files hold, and an exceeded one is a bad-input error
// naming the file and the limit, before the file is parsed. (Safetensors headers have their own bound, in
// hf/safetensors.ts; chat templates theirs, in hf/template.ts.)
import * as fs from 'node:fs';
import { badInput } from './errors';

const MiB = 1024 * 1024;

export const INPUT_LIMITS = {
  /** tokenizer.json: the largest real ones (Gemma 3's 262k vocabulary) are about 35 MB. */
  tokenizerJsonBytes: 128 * MiB,
  /** tokenizer_config.json: about 1 MB for Gemma 3, whose added_tokens_decoder lists 6,000 tokens. */
  tokenizerConfigBytes: 64 * MiB,
  /** special_tokens_map.json, chat_template.jinja, chat_template.json: a few kB in real folders. */
  smallFileBytes: 4 * MiB,
  /** Entries of a tokenizer's vocabulary (and merges, and ids): real vocabularies stop near 262,144. */
  vocabEntries: 4 * 1024 * 1024,
  /** Added tokens: real tokenizers add at most a few thousand. */
  addedTokens: 1024 * 1024,
  /** Characters of a chat template: real ones are under 100 kB. */
  chatTemplateChars: 1 * MiB,
  /** A dataset, after decompression: the longest text JavaScript holds is about 512 MiB. */
  datasetBytes: 512 * MiB,
  /** One record of a dataset: a million-token conversation is a few MB. */
  recordBytes: 16 * MiB,
} as const;

/** `12.5 MB` */
export function mb(bytes: number): string {
  return `${(bytes / MiB).toFixed(bytes < 10 * MiB ? 1 : 0)} MiB`;
}

/**
 * Throws a bad-input error naming `file` when it is larger than `max` bytes (`what` says what the file is), or when
 * it cannot be read (the message then starts with `unreadable`).
 */
export function checkFileSize(file: string, max: number, what: string, unreadable = 'cannot read'): void {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch (err) {
    throw badInput(`${unreadable}: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  if (size > max) throw badInput(`is ${mb(size)}, over the ${mb(max)} DomLoRA reads for ${what}: is it the right file?`, file);
}

/** The file's text, refused before it is read when it is larger than `max` bytes. */
export function readBoundedText(file: string, max: number, what: string): string {
  checkFileSize(file, max, what);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw badInput(`cannot read: ${err instanceof Error ? err.message : String(err)}`, file);
  }
}
