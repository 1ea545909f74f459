// Turning a record into token ids plus a loss mask. The mask is what makes PAGE and training measure the right thing:
// for instruction and chat data only the response tokens are prediction targets, never the prompt. Chat records are
// rendered with the model's own chat template when it has one.
import { badInput } from '../runtime/errors';
import { permutation } from '../runtime/rng';
import type { ChatMessage, ModelTokenizer } from '../hf/tokenizer';
import type { Dataset } from './read';
import { detectFormat, isObject, locate, segmentsOf, toConversation, unknownShape, type Conversation, type RecordFormat, type Rec, type Turn, type Where } from './shapes';

export interface TokenizedRecord {
  inputIds: number[];
  /** lossMask[t] = 1 when token t is a prediction target (predicted from tokens < t). Same length as inputIds. lossMask[0] is always 0. */
  lossMask: number[];
  /** 0-based record index in the file. */
  index: number;
  /** 1-based line in the file where the record starts. */
  line: number;
  format: RecordFormat;
}

export interface TokenizeResult {
  records: TokenizedRecord[];
  skipped: number;
  /** Why records were skipped, one line each; only the first MAX_SKIP_REASONS are kept (`skipped` counts all). */
  skippedReasons: string[];
  /** Tokens in the kept records, after truncation to the sequence length. */
  tokens: number;
  /** Of those, the prediction targets: what the loss, PAGE and training are computed on. */
  supervisedTokens: number;
  /** The same counts per record shape, in order of first appearance (describeTokens prints them). */
  byFormat: { format: RecordFormat; records: number; tokens: number; supervisedTokens: number }[];
}

const MAX_SKIP_REASONS = 50;

/** A piece of the rendered record: its text, whether its tokens are targets, and whether EOS follows it. */
interface Segment { text: string; train: boolean; eos: boolean }

/** Renders through the model's own chat template, so the adapter is trained on the format it will be used with. */
function chatTemplateSegments(conv: Conversation, tok: ModelTokenizer, where: Where): Segment[] {
  const template = tok.chatTemplate ?? '';
  // Templates that know a 'tool' role render observations as tool results; the rest (Llama-2 style) reject any
  // role but user/assistant/system, so there an observation is a user turn, as it is for the model anyway.
  const toolRole = /["']tool["']/.test(template) ? 'tool' : 'user';
  const messages: ChatMessage[] = conv.turns.map((t) => ({ role: t.role === 'tool' ? toolRole : t.role, content: t.content }));
  const opts = conv.tools ? { tools: conv.tools } : {};
  const render = (n: number, addGenerationPrompt: boolean): string => {
    try {
      return tok.applyChatTemplate(messages.slice(0, n), { ...opts, addGenerationPrompt });
    } catch (err) {
      throw badInput(`${locate(where)}: ${err instanceof Error ? err.message : String(err)}`, where.file);
    }
  };

  // Each target turn is the text that rendering it adds after the generation prompt: that is exactly what the
  // model must produce at inference, end-of-turn marker included. This needs the template to render a
  // conversation's prefix as a prefix of the text, which chat templates are built to do; when one does not (it
  // rewrites earlier turns), the mask would be wrong, so we stop rather than guess.
  const segments: Segment[] = [];
  let done = '';
  conv.turns.forEach((turn, i) => {
    if (!turn.train) return;
    const prompt = render(i, true);
    const full = render(i + 1, false);
    if (!prompt.startsWith(done) || !full.startsWith(prompt)) {
      throw badInput(`${locate(where)}: the chat template does not render turn ${i} as a continuation of the earlier turns, ` +
        'so its response tokens cannot be told apart', where.file);
    }
    if (prompt.length > done.length) segments.push({ text: prompt.slice(done.length), train: false, eos: false });
    segments.push({ text: full.slice(prompt.length), train: true, eos: false });
    done = full;
  });
  return segments;
}

/** The plain rendering for tokenizers without a chat template (base models such as stories260K). */
function plainSegments(conv: Conversation, tok: ModelTokenizer): Segment[] {
  // Without an EOS token a newline is the closest thing to an end-of-response marker the model can learn.
  const end = tok.eosId === undefined ? '\n' : '';
  const eos = tok.eosId !== undefined;
  if (conv.plain) {
    return [{ text: conv.plain.prompt, train: false, eos: false }, { text: conv.plain.response + end, train: true, eos }];
  }
  const labels: Record<Turn['role'], string> = { system: 'System', user: 'User', assistant: 'Assistant', tool: 'Tool' };
  const segments: Segment[] = [];
  let pending = conv.tools ? `Tools: ${JSON.stringify(conv.tools)}\n` : '';
  for (const turn of conv.turns) {
    if (turn.role !== 'assistant') {
      pending += `${labels[turn.role]}: ${turn.content}\n`;
      continue;
    }
    segments.push({ text: `${pending}Assistant: `, train: false, eos: false });
    segments.push({ text: turn.content + end, train: turn.train, eos });
    pending = '';
  }
  return segments;
}

/**
 * Encoding a text in pieces must not double or lose the space at a boundary such as "Answer: " + "4". With a
 * tokenizer that marks word starts itself (SentencePiece), the marker on the next piece is that space, so the
 * previous piece drops its trailing one (or the next piece its leading one). With one that does not (byte-level
 * BPE), a space belongs to the word after it (" 4" is one token), so it moves into the next piece.
 */
function joinSpaces(segments: Segment[], tok: ModelTokenizer): Segment[] {
  const out = segments.map((s) => ({ ...s }));
  for (let k = 1; k < out.length; k++) {
    const prev = out[k - 1] as Segment;
    const next = out[k] as Segment;
    if (prev.eos) continue; // an EOS token sits between the two texts: they do not touch
    if (tok.addsPrefixSpace) {
      if (prev.text.endsWith(' ')) prev.text = prev.text.slice(0, -1);
      else if (next.text.startsWith(' ')) next.text = next.text.slice(1);
    } else if (prev.text.endsWith(' ') && next.text !== '' && !/^\s/.test(next.text)) {
      prev.text = prev.text.slice(0, -1);
      next.text = ` ${next.text}`;
    }
  }
  return out;
}

function segmentsToRecord(rawSegments: Segment[], tok: ModelTokenizer): { inputIds: number[]; lossMask: number[] } {
  const segments = joinSpaces(rawSegments, tok);
  const inputIds: number[] = [];
  const lossMask: number[] = [];
  // Segments are encoded one by one so that every token belongs to exactly one segment. BOS goes first unless the
  // chat template already wrote its text (Llama-2/3 templates do), which would otherwise give a double BOS.
  const first = segments[0]?.text ?? '';
  if (tok.addBos && tok.bosId !== undefined && !(tok.bosToken && first.startsWith(tok.bosToken))) {
    inputIds.push(tok.bosId);
    lossMask.push(0);
  }
  for (const segment of segments) {
    const ids = tok.encode(segment.text, { addSpecial: false });
    if (segment.eos && tok.eosId !== undefined) ids.push(tok.eosId);
    for (const id of ids) {
      inputIds.push(id);
      lossMask.push(segment.train ? 1 : 0);
    }
  }
  return { inputIds, lossMask };
}

function tokenizedInput(record: Rec, tok: ModelTokenizer, where: Where): { inputIds: number[]; lossMask: number[] } {
  const fail = (message: string) => badInput(`${locate(where)}: ${message}`, where.file);
  const inputIds = record.input_ids as unknown[];
  if (inputIds.length === 0) throw fail('input_ids is empty');
  inputIds.forEach((id, t) => {
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= tok.vocabSize) {
      throw fail(`input_ids[${t}] = ${JSON.stringify(id)} is not a token id of this tokenizer (0..${tok.vocabSize - 1})`);
    }
  });
  const ids = inputIds as number[];
  let lossMask: number[];
  if (record.loss_mask !== undefined) {
    const mask = record.loss_mask;
    if (!Array.isArray(mask) || mask.length !== ids.length) throw fail(`loss_mask must be a list as long as input_ids (${ids.length})`);
    lossMask = mask.map((m, t) => {
      if (m !== 0 && m !== 1) throw fail(`loss_mask[${t}] = ${JSON.stringify(m)}; expected 0 or 1`);
      return m;
    });
  } else if (record.labels !== undefined) {
    // Hugging Face labels: labels[t] = input_ids[t] for a target token (the model shifts them), -100 to ignore.
    const labels = record.labels;
    if (!Array.isArray(labels) || labels.length !== ids.length) throw fail(`labels must be a list as long as input_ids (${ids.length})`);
    lossMask = labels.map((l, t) => {
      if (l === -100) return 0;
      if (l === ids[t]) return 1;
      throw fail(`labels[${t}] = ${JSON.stringify(l)}; expected -100 or input_ids[${t}] (${ids[t]})`);
    });
  } else {
    // Bare input_ids are pre-tokenized plain text: every token counts, as for `text`.
    lossMask = ids.map(() => 1);
  }
  return { inputIds: [...ids], lossMask };
}

/** The whole record, before truncation. */
function encodeRecord(raw: unknown, tok: ModelTokenizer, where: Where): { inputIds: number[]; lossMask: number[]; format: RecordFormat } {
  const format = detectFormat(raw);
  if (!format || !isObject(raw)) throw unknownShape(raw, where);
  let encoded: { inputIds: number[]; lossMask: number[] };
  if (format === 'tokenized') {
    encoded = tokenizedInput(raw, tok, where);
  } else if (format === 'text') {
    const inputIds = tok.encode(raw.text as string);
    encoded = { inputIds, lossMask: inputIds.map(() => 1) };
  } else if (format === 'segments') {
    // Template-free by definition: no chat template, the texts as written.
    encoded = segmentsToRecord(segmentsOf(raw, where).map((s) => ({ ...s, eos: false })), tok);
  } else {
    const conv = toConversation(raw, format, where);
    encoded = segmentsToRecord(tok.chatTemplate !== undefined ? chatTemplateSegments(conv, tok, where) : plainSegments(conv, tok), tok);
  }
  // Token 0 has nothing before it to be predicted from.
  if (encoded.lossMask.length) encoded.lossMask[0] = 0;
  return { ...encoded, format };
}

/** Tokenizes one record and truncates it to its first `seqLen` tokens. The mask may end up all zeros. */
export function tokenizeRecord(raw: unknown, tok: ModelTokenizer, seqLen: number,
  where: { index: number; line: number; file: string }): TokenizedRecord {
  checkSeqLen(seqLen);
  const { inputIds, lossMask, format } = encodeRecord(raw, tok, where);
  return {
    inputIds: inputIds.slice(0, seqLen), lossMask: lossMask.slice(0, seqLen), index: where.index, line: where.line, format,
  };
}

function checkSeqLen(seqLen: number): void {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw badInput(`the sequence length must be an integer of at least 2, got ${seqLen}`);
}

/**
 * Tokenizes records in order (or a seeded sample of them when opts.sample === 'random' with opts.seed) until `limit`
 * usable ones; a record with no supervised token after truncation to seqLen is skipped and counted. A random
 * sample is returned in its drawn order, which is the same for the same seed and dataset.
 */
export function tokenizeDataset(ds: Dataset, tok: ModelTokenizer,
  opts: { seqLen: number; limit?: number; sample?: 'first' | 'random'; seed?: number }): TokenizeResult {
  checkSeqLen(opts.seqLen);
  const limit = opts.limit ?? ds.count;
  if (!Number.isInteger(limit) || limit < 1) throw badInput(`the number of samples must be a positive integer, got ${limit}`);
  const order = opts.sample === 'random'
    ? permutation(ds.count, opts.seed ?? 0)
    : Array.from({ length: ds.count }, (_, i) => i);

  const result: TokenizeResult = { records: [], skipped: 0, skippedReasons: [], tokens: 0, supervisedTokens: 0, byFormat: [] };
  for (const index of order) {
    if (result.records.length >= limit) break;
    const where = { index, line: ds.lines[index] ?? 0, file: ds.file };
    const { inputIds, lossMask, format } = encodeRecord(ds.raw[index], tok, where);
    const firstTarget = lossMask.indexOf(1);
    if (firstTarget < 0 || firstTarget >= opts.seqLen) {
      result.skipped++;
      if (result.skippedReasons.length < MAX_SKIP_REASONS) {
        result.skippedReasons.push(firstTarget < 0
          ? `${locate(where)}: no supervised token at all`
          : `${locate(where)}: the response starts at token ${firstTarget}, beyond the sequence length ${opts.seqLen}`);
      }
      continue;
    }
    const rec = { inputIds: inputIds.slice(0, opts.seqLen), lossMask: lossMask.slice(0, opts.seqLen), index, line: where.line, format };
    result.records.push(rec);
    const supervised = rec.lossMask.reduce((a, m) => a + m, 0);
    let counts = result.byFormat.find((c) => c.format === format);
    if (!counts) result.byFormat.push(counts = { format, records: 0, tokens: 0, supervisedTokens: 0 });
    counts.records++;
    counts.tokens += rec.inputIds.length;
    counts.supervisedTokens += supervised;
    result.tokens += rec.inputIds.length;
    result.supervisedTokens += supervised;
  }
  return result;
}

/** Fails clearly when tokenization left nothing to train or measure on, with the first reason a record was skipped. */
export function requireUsable(tok: TokenizeResult, seqLen: number, file: string): void {
  if (tok.records.length > 0) return;
  throw badInput(`no usable records: ${tok.skipped} record(s) had no supervised tokens within --seq-len ${seqLen}` +
    (tok.skippedReasons.length ? ` (${tok.skippedReasons[0]})` : ''), file);
}
