// Fine-tuning datasets: reading them (a JSON array or JSON Lines, each record in one of the shapes users have),
// and turning each record into token ids plus a loss mask. The mask is what makes PAGE and training measure the
// right thing: for instruction and chat data only the response tokens are prediction targets, never the prompt.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { badInput, type DomLoraError } from '../runtime/errors';
import { permutation } from '../runtime/rng';
import type { ChatMessage, ModelTokenizer } from '../hf/tokenizer';

export type RecordFormat = 'alpaca' | 'qa' | 'prompt-completion' | 'messages' | 'sharegpt' | 'text' | 'tokenized';

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

export interface Dataset {
  file: string;
  /** Hex SHA-256 of the file's bytes, so a report names exactly the data it was computed on. */
  sha256: string;
  /** The most common record format in the file (records may mix formats). */
  format: RecordFormat;
  count: number;
  /** The parsed records, in file order. */
  raw: unknown[];
  /** lines[i] is the 1-based line where record i starts. */
  lines: number[];
}

export interface TokenizeResult {
  records: TokenizedRecord[];
  skipped: number;
  /** Why records were skipped, one line each; only the first MAX_SKIP_REASONS are kept (`skipped` counts all). */
  skippedReasons: string[];
}

const MAX_SKIP_REASONS = 50;

const SHAPES_HELP = 'alpaca {instruction, input?, output}, qa {question, answer}, prompt-completion {prompt, completion}, ' +
  'messages {messages: [{role, content}]}, sharegpt {conversations: [{from, value}]} or {conversation: [{input, output}]}, ' +
  'text {text}, tokenized {input_ids, loss_mask | labels}';

// ---- Reading ----------------------------------------------------------------------------------------------------

/** Reads a dataset file, parses it (by content, not by extension) and checks every record has a known shape. */
export function readDataset(file: string): Dataset {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw badInput(`cannot read the dataset: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  // Editors on Windows like to start UTF-8 files with a byte-order mark, which JSON.parse rejects.
  const text = bytes.toString('utf8').replace(/^\uFEFF/, '');
  const empty = 'the dataset is empty: expected a JSON array of records or JSON Lines (one record per line)';
  if (text.trim() === '') throw badInput(empty, file);

  const { raw, lines } = text.trimStart().startsWith('[') ? parseJsonArray(text, file) : parseJsonLines(text, file);
  if (raw.length === 0) throw badInput(empty, file);

  const counts = new Map<RecordFormat, number>();
  raw.forEach((record, i) => {
    const format = detectFormat(record);
    if (!format) throw unknownShape(record, { index: i, line: lines[i] ?? 0, file });
    counts.set(format, (counts.get(format) ?? 0) + 1);
  });
  // Map iteration follows first appearance, so a tie goes to the format seen first.
  let format: RecordFormat = 'text';
  let best = 0;
  for (const [f, n] of counts) if (n > best) { format = f; best = n; }
  return { file, sha256, format, count: raw.length, raw, lines };
}

function parseJsonArray(text: string, file: string): { raw: unknown[]; lines: number[] } {
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
  return { raw: value, lines: arrayElementLines(text) };
}

function parseJsonLines(text: string, file: string): { raw: unknown[]; lines: number[] } {
  const raw: unknown[] = [];
  const lines: number[] = [];
  const rows = text.split('\n');
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i] as string;
    if (row.trim() === '') continue;
    try {
      raw.push(JSON.parse(row));
      lines.push(i + 1);
    } catch (err) {
      // A single pretty-printed object is not JSON Lines but is still an unambiguous one-record dataset.
      if (raw.length === 0) {
        const whole = tryParse(text);
        if (whole !== undefined && !Array.isArray(whole)) return { raw: [whole], lines: [i + 1] };
      }
      throw badInput(`line ${i + 1}: invalid JSON: ${err instanceof Error ? err.message : String(err)}`, file);
    }
  }
  return { raw, lines };
}

function tryParse(text: string): unknown {
  try { return JSON.parse(text); } catch { return undefined; }
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
 * The line where each element of a top-level JSON array starts. One pass over text already known to be valid
 * JSON, tracking only strings (whose brackets do not count) and nesting depth: far cheaper than a parser with
 * positions, and it lets errors about record 812 say "line 4061".
 */
function arrayElementLines(text: string): number[] {
  const lines: number[] = [];
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
      expectingElement = false;
    }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') {
      depth++;
      if (depth === 1) expectingElement = true;
    } else if (c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 1) expectingElement = true;
  }
  return lines;
}

// ---- Shapes -----------------------------------------------------------------------------------------------------

type Rec = Record<string, unknown>;

function isObject(value: unknown): value is Rec {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The format of one record, from its keys. The order matters where shapes overlap: pre-tokenized ids win over
 * any text kept beside them, and `messages` wins over UltraChat's extra `prompt` key.
 */
export function detectFormat(record: unknown): RecordFormat | undefined {
  if (!isObject(record)) return undefined;
  if (Array.isArray(record.input_ids)) return 'tokenized';
  if (Array.isArray(record.messages)) return 'messages';
  if (Array.isArray(record.conversations) || Array.isArray(record.conversation)) return 'sharegpt';
  if (record.prompt !== undefined && record.completion !== undefined) return 'prompt-completion';
  if (typeof record.instruction === 'string' && record.output !== undefined) return 'alpaca';
  if (record.question !== undefined && record.answer !== undefined) return 'qa';
  if (typeof record.text === 'string') return 'text';
  return undefined;
}

interface Where { index: number; line: number; file: string }

function unknownShape(record: unknown, where: Where): DomLoraError {
  const keys = isObject(record)
    ? (Object.keys(record).join(', ') || '(none)')
    : `(none: it is ${Array.isArray(record) ? 'an array' : record === null ? 'null' : `a ${typeof record}`}, not an object)`;
  return badInput(`${locate(where)}: record has none of the known shapes (${SHAPES_HELP}); its keys are ${keys}`, where.file);
}

function locate(where: Where): string {
  return `line ${where.line} (record ${where.index})`;
}

// ---- Records as conversations -----------------------------------------------------------------------------------

/** One turn; `train` marks the turns whose tokens are prediction targets. */
interface Turn { role: 'system' | 'user' | 'assistant' | 'tool'; content: string; train: boolean }

/**
 * What a non-text record means: a conversation, and, for the single-turn formats, the plain prompt/response pair
 * used when the tokenizer has no chat template (so Alpaca data looks like Alpaca, not like a chat transcript).
 */
interface Conversation {
  turns: Turn[];
  tools?: unknown[];
  plain?: { prompt: string; response: string };
}

/**
 * Role names as datasets spell them (OpenAI `role` and ShareGPT `from`) mapped to ours. function_call is the
 * model's own output, so it is supervised; an observation is what a tool sent back, so it is prompt.
 */
const ROLE_NAMES: Record<string, Turn['role']> = {
  human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', system: 'system',
  function_call: 'assistant', observation: 'tool', tool: 'tool',
};

function fieldText(value: unknown, name: string, where: Where, optional = false): string {
  if (typeof value === 'string') return value;
  // Numeric answers ("answer": 72) are common in hand-made QA files and mean their decimal text.
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (optional && (value === undefined || value === null)) return '';
  throw badInput(`${locate(where)}: \`${name}\` must be a string`, where.file);
}

/** OpenAI message content: a string, null (a pure tool call), or a list of parts of which we keep the text. */
function messageContent(message: Rec, where: Where, at: string): string {
  const content = message.content;
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) {
    return message.tool_calls !== undefined ? JSON.stringify(message.tool_calls) : '';
  }
  if (Array.isArray(content)) {
    return content.map((part) => (isObject(part) && typeof part.text === 'string' ? part.text : '')).join('');
  }
  throw badInput(`${locate(where)}: ${at}.content must be a string or a list of text parts`, where.file);
}

function messageTurns(messages: unknown[], where: Where, at: string, train: boolean): Turn[] {
  return messages.map((m, i) => {
    if (!isObject(m) || typeof m.role !== 'string') {
      throw badInput(`${locate(where)}: ${at}[${i}] must be an object with a string role`, where.file);
    }
    const role = ROLE_NAMES[m.role];
    if (!role) {
      throw badInput(`${locate(where)}: ${at}[${i}].role is "${m.role}"; expected system, user, assistant or tool`, where.file);
    }
    return { role, content: messageContent(m, where, `${at}[${i}]`), train: train && role === 'assistant' };
  });
}

function systemTurn(record: Rec, where: Where): Turn[] {
  const system = fieldText(record.system, 'system', where, true);
  return system ? [{ role: 'system', content: system, train: false }] : [];
}

/** ShareGPT/LLaMA-Factory keep tools as a JSON string; templates want the list. */
function toolList(value: unknown): unknown[] | undefined {
  if (Array.isArray(value)) return value.length ? value : undefined;
  if (typeof value === 'string' && value.trim()) {
    const parsed = tryParse(value);
    if (Array.isArray(parsed)) return parsed.length ? parsed : undefined;
    if (isObject(parsed)) return [parsed];
  }
  return undefined;
}

function toConversation(record: Rec, format: Exclude<RecordFormat, 'text' | 'tokenized'>, where: Where): Conversation {
  switch (format) {
    case 'alpaca': {
      const instruction = fieldText(record.instruction, 'instruction', where);
      const input = fieldText(record.input, 'input', where, true);
      const output = fieldText(record.output, 'output', where);
      const system = fieldText(record.system, 'system', where, true);
      const turns = systemTurn(record, where);
      // history: [[instruction, response], ...] of earlier turns (LLaMA-Factory's alpaca extension).
      const history = record.history ?? [];
      if (!Array.isArray(history)) throw badInput(`${locate(where)}: \`history\` must be a list of [instruction, response] pairs`, where.file);
      history.forEach((pair, i) => {
        if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
          throw badInput(`${locate(where)}: history[${i}] must be a pair [instruction, response] of strings`, where.file);
        }
        turns.push({ role: 'user', content: pair[0], train: false }, { role: 'assistant', content: pair[1], train: true });
      });
      turns.push({ role: 'user', content: input ? `${instruction}\n\n${input}` : instruction, train: false });
      turns.push({ role: 'assistant', content: output, train: true });
      const prompt = (system ? `${system}\n\n` : '') + `### Instruction:\n${instruction}\n\n` +
        (input ? `### Input:\n${input}\n\n` : '') + '### Response:\n';
      return { turns, ...(history.length ? {} : { plain: { prompt, response: output } }) };
    }
    case 'qa': {
      const question = fieldText(record.question, 'question', where);
      const answer = fieldText(record.answer, 'answer', where);
      return {
        turns: [{ role: 'user', content: question, train: false }, { role: 'assistant', content: answer, train: true }],
        plain: { prompt: `Question: ${question}\nAnswer: `, response: answer },
      };
    }
    case 'prompt-completion': {
      const { prompt, completion } = record;
      if (typeof prompt === 'string' && typeof completion === 'string') {
        // TRL's standard form: the completion continues the prompt text directly.
        return {
          turns: [{ role: 'user', content: prompt, train: false }, { role: 'assistant', content: completion, train: true }],
          plain: { prompt, response: completion },
        };
      }
      if (Array.isArray(prompt) && Array.isArray(completion)) {
        // TRL's conversational form: only the completion's assistant turns are targets, even if the prompt has some.
        return {
          turns: [...messageTurns(prompt, where, 'prompt', false), ...messageTurns(completion, where, 'completion', true)],
          ...toolsOf(record),
        };
      }
      throw badInput(`${locate(where)}: prompt and completion must both be strings or both be lists of messages`, where.file);
    }
    case 'messages':
      return { turns: [...systemTurn(record, where), ...messageTurns(record.messages as unknown[], where, 'messages', true)], ...toolsOf(record) };
    case 'sharegpt': {
      if (Array.isArray(record.conversations)) {
        const turns = record.conversations.map((m, i): Turn => {
          const at = `conversations[${i}]`;
          if (!isObject(m) || typeof m.from !== 'string') throw badInput(`${locate(where)}: ${at} must be an object {from, value}`, where.file);
          const role = ROLE_NAMES[m.from];
          if (!role) {
            throw badInput(`${locate(where)}: ${at}.from is "${m.from}"; expected one of ${Object.keys(ROLE_NAMES).join(', ')}`, where.file);
          }
          return { role, content: fieldText(m.value, `${at}.value`, where), train: role === 'assistant' };
        });
        return { turns: [...systemTurn(record, where), ...turns], ...toolsOf(record) };
      }
      // Capybara: conversation: [{input, output}], one user/assistant exchange per entry.
      const turns: Turn[] = [];
      (record.conversation as unknown[]).forEach((pair, i) => {
        const at = `conversation[${i}]`;
        if (!isObject(pair)) throw badInput(`${locate(where)}: ${at} must be an object {input, output}`, where.file);
        turns.push({ role: 'user', content: fieldText(pair.input, `${at}.input`, where), train: false });
        turns.push({ role: 'assistant', content: fieldText(pair.output, `${at}.output`, where), train: true });
      });
      return { turns: [...systemTurn(record, where), ...turns] };
    }
  }
}

function toolsOf(record: Rec): { tools?: unknown[] } {
  const tools = toolList(record.tools);
  return tools ? { tools } : {};
}

// ---- Tokenizing ---------------------------------------------------------------------------------------------------

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

  const result: TokenizeResult = { records: [], skipped: 0, skippedReasons: [] };
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
    result.records.push({
      inputIds: inputIds.slice(0, opts.seqLen), lossMask: lossMask.slice(0, opts.seqLen), index, line: where.line, format,
    });
  }
  return result;
}

/** Fails clearly when tokenization left nothing to train or measure on, with the first reason a record was skipped. */
export function requireUsable(tok: TokenizeResult, seqLen: number, file: string): void {
  if (tok.records.length > 0) return;
  throw badInput(`no usable records: ${tok.skipped} record(s) had no supervised tokens within --seq-len ${seqLen}` +
    (tok.skippedReasons.length ? ` (${tok.skippedReasons[0]})` : ''), file);
}
