// The shapes of fine-tuning records users have (Alpaca, question/answer, prompt/completion, OpenAI messages,
// ShareGPT, plain text, pre-tokenized), recognised by their keys, and what each non-text record means: a conversation
// whose assistant turns are the prediction targets.
import { badInput, type DomLoraError } from '../runtime/errors';

export type RecordFormat = 'alpaca' | 'qa' | 'prompt-completion' | 'messages' | 'sharegpt' | 'text' | 'tokenized';

export const SHAPES_HELP = 'alpaca {instruction, input?, output}, qa {question, answer}, prompt-completion {prompt, completion}, ' +
  'messages {messages: [{role, content}]}, sharegpt {conversations: [{from, value}]} or {conversation: [{input, output}]}, ' +
  'text {text}, tokenized {input_ids, loss_mask | labels}';

export function tryParse(text: string): unknown {
  try { return JSON.parse(text); } catch { return undefined; }
}

export type Rec = Record<string, unknown>;

export function isObject(value: unknown): value is Rec {
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

export interface Where { index: number; line: number; file: string }

export function unknownShape(record: unknown, where: Where): DomLoraError {
  const keys = isObject(record)
    ? (Object.keys(record).join(', ') || '(none)')
    : `(none: it is ${Array.isArray(record) ? 'an array' : record === null ? 'null' : `a ${typeof record}`}, not an object)`;
  return badInput(`${locate(where)}: record has none of the known shapes (${SHAPES_HELP}); its keys are ${keys}`, where.file);
}

export function locate(where: Where): string {
  return `line ${where.line} (record ${where.index})`;
}

// ---- Records as conversations -----------------------------------------------------------------------------------

/** One turn; `train` marks the turns whose tokens are prediction targets. */
export interface Turn { role: 'system' | 'user' | 'assistant' | 'tool'; content: string; train: boolean }

/**
 * What a non-text record means: a conversation, and, for the single-turn formats, the plain prompt/response pair
 * used when the tokenizer has no chat template (so Alpaca data looks like Alpaca, not like a chat transcript).
 */
export interface Conversation {
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

export function toConversation(record: Rec, format: Exclude<RecordFormat, 'text' | 'tokenized'>, where: Where): Conversation {
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

