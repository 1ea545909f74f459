// The shapes of fine-tuning records users have, recognised by their keys (the instruction, code, math, chat and
// preference datasets people fine-tune on, and what LLaMA-Factory, Axolotl and TRL accept), and what each non-text
// record means: a conversation whose assistant turns, and only those, are the prediction targets. A record whose keys
// could mean two things is refused with the reason rather than read one way that silently drops its answer.
import { badInput, type DomLoraError } from '../runtime/errors';

export type RecordFormat =
  | 'alpaca' | 'instruction-response' | 'qa' | 'query-response' | 'problem-solution' | 'prompt-completion' | 'humaneval'
  | 'mbpp' | 'oasst' | 'preference' | 'mt-bench' | 'messages' | 'sharegpt' | 'segments' | 'text' | 'tokenized';

/** What each shape looks like, which datasets come in it, and which of its fields are the supervised answer. */
export interface ShapeInfo { keys: string; examples: string; supervised: string }

export const SHAPES: Record<RecordFormat, ShapeInfo> = {
  alpaca: { keys: '{instruction, input?, output}', examples: 'Alpaca, CodeAlpaca, Evol-Instruct, MathInstruct, Open-Platypus', supervised: 'output' },
  'instruction-response': { keys: '{instruction, input? | context?, response}', examples: 'Dolly, Magicoder-Evol-Instruct, GPTeacher', supervised: 'response' },
  qa: { keys: '{question, answer | response}', examples: 'GSM8K, Orca-Math, OpenOrca', supervised: 'the answer' },
  'query-response': { keys: '{query, response}', examples: 'MetaMathQA', supervised: 'response' },
  'problem-solution': { keys: '{problem, solution}', examples: 'Magicoder-OSS-Instruct, MATH', supervised: 'solution' },
  'prompt-completion': { keys: '{prompt, completion}', examples: 'TRL prompt-completion', supervised: 'completion' },
  humaneval: { keys: '{prompt, canonical_solution}', examples: 'HumanEval', supervised: 'canonical_solution, as the continuation of prompt' },
  mbpp: { keys: '{text | prompt, code, test_list}', examples: 'MBPP', supervised: 'code (the task and its tests are the prompt)' },
  oasst: { keys: '{INSTRUCTION, RESPONSE}', examples: 'OpenAssistant (Axolotl oasst)', supervised: 'RESPONSE' },
  preference: { keys: '{prompt? | instruction? | question?, chosen, rejected?}', examples: 'UltraFeedback, HH-RLHF, DPO pairs', supervised: 'chosen (rejected is not used)' },
  'mt-bench': { keys: '{turns: [...], reference: [...]}', examples: 'MT-Bench with reference answers', supervised: 'each reference answer' },
  messages: { keys: '{messages: [{role, content}]}', examples: 'OpenAI chat, UltraChat, Tulu, No Robots', supervised: 'the assistant turns' },
  sharegpt: { keys: '{conversations: [{from, value} | {role, content} | strings]} or {conversation: [{input, output}]}', examples: 'ShareGPT, OpenHermes, SlimOrca, LIMA, Capybara', supervised: 'the gpt/assistant turns' },
  segments: { keys: '{segments: [{label, text}]}', examples: 'Axolotl input_output', supervised: 'the segments labelled true' },
  text: { keys: '{text}', examples: 'plain text corpora', supervised: 'every token' },
  tokenized: { keys: '{input_ids, loss_mask | labels}', examples: 'pre-tokenized', supervised: 'the tokens the mask or labels mark' },
};

export const SHAPES_HELP = (Object.entries(SHAPES) as [RecordFormat, ShapeInfo][]).map(([f, s]) => `${f} ${s.keys}`).join(', ');

export function tryParse(text: string): unknown {
  try { return JSON.parse(text); } catch { return undefined; }
}

export type Rec = Record<string, unknown>;

export function isObject(value: unknown): value is Rec {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isStrList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
/** Present: numeric answers ("answer": 72) count, as fieldText reads them. */
const given = (v: unknown) => v !== undefined && v !== null;

/**
 * Keys that plain-text corpora carry beside `text` (C4's url and timestamp, RedPajama's meta, ...) and that are not
 * part of what the model should learn. Any other key with text in it may be the answer, so `text` is then refused.
 */
const TEXT_METADATA = new Set(['id', 'idx', 'index', 'uid', 'url', 'link', 'timestamp', 'date', 'created_at', 'meta', 'metadata',
  'source', 'title', 'lang', 'language', 'license', 'domain', 'subset', 'split', 'category', 'tags', 'length', 'num_tokens',
  'n_tokens', 'token_count', 'word_count', 'hash', 'dataset', 'task_id', '__index_level_0__']);
/** Keys that hold an answer whatever their type (a label may be a number), so `text` beside them is ambiguous. */
const ANSWER_KEYS = new Set(['label', 'labels', 'target', 'targets', 'answer', 'answers', 'output', 'response', 'completion',
  'solution', 'code', 'summary', 'chosen', 'rejected', 'test_list', 'canonical_solution']);

/** The keys beside `text` that may hold the answer (so reading only `text` could drop it). */
function textCompanions(record: Rec): string[] {
  return Object.keys(record).filter((k) => k !== 'text' && !TEXT_METADATA.has(k) &&
    (ANSWER_KEYS.has(k) || isStr(record[k]) || Array.isArray(record[k])));
}

/**
 * The format of one record, from its keys. The order matters where shapes overlap: pre-tokenized ids win over
 * any text kept beside them, `messages` wins over UltraChat's extra `prompt` key and UltraFeedback's `chosen`, and
 * `chosen` wins over a DPO pair's `prompt`.
 */
export function detectFormat(record: unknown): RecordFormat | undefined {
  if (!isObject(record)) return undefined;
  if (Array.isArray(record.input_ids)) return 'tokenized';
  if (Array.isArray(record.messages)) return 'messages';
  if (Array.isArray(record.conversations) || Array.isArray(record.conversation)) return 'sharegpt';
  if (Array.isArray(record.segments)) return 'segments';
  if (given(record.chosen)) return 'preference';
  if (given(record.prompt) && given(record.completion)) return 'prompt-completion';
  if (isStr(record.prompt) && isStr(record.canonical_solution)) return 'humaneval';
  if ((isStr(record.text) || isStr(record.prompt)) && isStr(record.code) && isStrList(record.test_list)) return 'mbpp';
  if (isStr(record.instruction) && given(record.output)) return 'alpaca';
  if (isStr(record.instruction) && given(record.response)) return 'instruction-response';
  if (isStr(record.INSTRUCTION) && isStr(record.RESPONSE)) return 'oasst';
  if (given(record.question) && (given(record.answer) || given(record.response))) return 'qa';
  if (given(record.query) && given(record.response)) return 'query-response';
  if (given(record.problem) && given(record.solution)) return 'problem-solution';
  if (isStrList(record.turns) && isStrList(record.reference) && record.reference.length === record.turns.length) return 'mt-bench';
  if (isStr(record.text) && textCompanions(record).length === 0) return 'text';
  return undefined;
}

export interface Where { index: number; line: number; file: string }

/**
 * Why a record that looks like a known dataset still cannot be read: it has no answer to supervise, or its keys
 * leave open which field is the answer. Undefined when it looks like nothing we know.
 */
function shapeHint(record: Rec): string | undefined {
  if (isStr(record.role) && record.parent_id !== undefined) {
    return 'this looks like one message of an OpenAssistant message tree, not a training example: join each tree into ' +
      'a conversation ({messages: [{role, content}]}) first';
  }
  if (isStr(record.text)) {
    const others = textCompanions(record);
    const mbpp = isStr(record.code) || Array.isArray(record.test_list)
      ? ' (MBPP records need text, code and test_list, with test_list a list of strings)' : '';
    return `the record has \`text\` and also ${others.map((k) => `\`${k}\``).join(', ')}: reading it as plain text would ` +
      `train on \`text\` alone and drop ${others.length > 1 ? 'them' : 'it'}${mbpp}. If one of them is the answer, give the ` +
      'record a shape that says so, e.g. {prompt, completion}; if they are metadata, remove them';
  }
  if (Array.isArray(record.turns)) {
    return 'this looks like MT-Bench questions: `turns` holds only the user\'s turns, and without a `reference` list of ' +
      'answers (one per turn) there is nothing to supervise';
  }
  if (isStr(record.prompt) && (given(record.test) || given(record.entry_point))) {
    return 'this looks like HumanEval without its `canonical_solution`: there is no answer to supervise';
  }
  if (given(record.prompt) && !given(record.completion)) {
    return 'a `prompt` with no `completion` (or `chosen`) is a prompt-only record: there is no answer to supervise';
  }
  if (given(record.question) && !given(record.answer) && !given(record.response)) {
    return 'a `question` with no `answer` or `response`: there is no answer to supervise';
  }
  if (isStr(record.instruction)) return 'an `instruction` needs an `output` or a `response`';
  return undefined;
}

export function unknownShape(record: unknown, where: Where): DomLoraError {
  const keys = isObject(record)
    ? (Object.keys(record).join(', ') || '(none)')
    : `(none: it is ${Array.isArray(record) ? 'an array' : record === null ? 'null' : `a ${typeof record}`}, not an object)`;
  const hint = isObject(record) ? shapeHint(record) : undefined;
  if (hint) return badInput(`${locate(where)}: ${hint}; its keys are ${keys}`, where.file);
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
 * Role names as datasets spell them (OpenAI `role`, ShareGPT `from`, and their relatives) mapped to ours.
 * function_call is the model's own output, so it is supervised; an observation (or OpenAI's legacy `function`
 * role, or Llama 3's `ipython`) is what a tool sent back, so it is prompt. OpenAssistant calls the user
 * `prompter`, Gemini calls the assistant `model`, OpenAI's newer system role is `developer`, and ShareGPT dumps
 * name the assistant after the product it was (chatgpt, bing, bard).
 */
const ROLE_NAMES: Record<string, Turn['role']> = {
  human: 'user', user: 'user', prompter: 'user',
  gpt: 'assistant', assistant: 'assistant', model: 'assistant', chatgpt: 'assistant', bing: 'assistant', bard: 'assistant',
  system: 'system', developer: 'system',
  function_call: 'assistant', observation: 'tool', tool: 'tool', function: 'tool', ipython: 'tool',
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

/**
 * A turn's own opt-out: OpenAI's fine-tuning format and ShareGPT exports (SlimOrca, OpenHermes) put `weight: 0` on an
 * assistant turn that must not be learned; 1, null or no weight means the turn counts as usual.
 */
function weighted(m: Rec, where: Where, at: string): boolean {
  const w = m.weight;
  if (w === undefined || w === null || w === 1 || w === 1.0) return true;
  if (w === 0) return false;
  throw badInput(`${locate(where)}: ${at}.weight is ${JSON.stringify(w)}; expected 0 or 1`, where.file);
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
    return { role, content: messageContent(m, where, `${at}[${i}]`), train: train && role === 'assistant' && weighted(m, where, `${at}[${i}]`) };
  });
}

function systemTurn(record: Rec, where: Where, key = 'system'): Turn[] {
  const system = fieldText(record[key], key, where, true);
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

/**
 * One question and its answer: the turns for a chat template, and the plain rendering (`prompt` then `response`)
 * for a base model.
 */
function exchange(system: Turn[], user: string, answer: string, prompt: string): Conversation {
  return {
    turns: [...system, { role: 'user', content: user, train: false }, { role: 'assistant', content: answer, train: true }],
    plain: { prompt: (system.length ? `${system[0]!.content}\n\n` : '') + prompt, response: answer },
  };
}

/** The Alpaca prompt, which the instruction shapes share so that the same task reads the same way whatever its keys. */
function alpacaPrompt(instruction: string, input: string): string {
  return `### Instruction:\n${instruction}\n\n` + (input ? `### Input:\n${input}\n\n` : '') + '### Response:\n';
}

/** An instruction with its optional input, as one user turn. */
function instructionExchange(system: Turn[], instruction: string, input: string, answer: string): Conversation {
  return exchange(system, input ? `${instruction}\n\n${input}` : instruction, answer, alpacaPrompt(instruction, input));
}

/**
 * HH-RLHF writes a whole conversation as one string, each turn after "\n\nHuman:" or "\n\nAssistant:". Undefined
 * when the text has no such markers (then nothing tells the prompt from the answer).
 */
function transcriptTurns(text: string): Turn[] | undefined {
  const parts = text.split(/\n\n(Human|Assistant):[ ]?/);
  if (parts.length < 3) return undefined;
  const turns: Turn[] = [];
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const role = parts[i] === 'Human' ? 'user' : 'assistant';
    turns.push({ role, content: parts[i + 1] as string, train: role === 'assistant' });
  }
  return turns.some((t) => t.train) ? turns : undefined;
}

export function toConversation(record: Rec, format: Exclude<RecordFormat, 'text' | 'tokenized' | 'segments'>, where: Where): Conversation {
  switch (format) {
    case 'alpaca': {
      const instruction = fieldText(record.instruction, 'instruction', where);
      const input = fieldText(record.input, 'input', where, true);
      const output = fieldText(record.output, 'output', where);
      const system = systemTurn(record, where);
      // history: [[instruction, response], ...] of earlier turns (LLaMA-Factory's alpaca extension).
      const history = record.history ?? [];
      if (!Array.isArray(history)) throw badInput(`${locate(where)}: \`history\` must be a list of [instruction, response] pairs`, where.file);
      if (!history.length) return instructionExchange(system, instruction, input, output);
      const turns = [...system];
      history.forEach((pair, i) => {
        if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
          throw badInput(`${locate(where)}: history[${i}] must be a pair [instruction, response] of strings`, where.file);
        }
        turns.push({ role: 'user', content: pair[0], train: false }, { role: 'assistant', content: pair[1], train: true });
      });
      turns.push({ role: 'user', content: input ? `${instruction}\n\n${input}` : instruction, train: false });
      turns.push({ role: 'assistant', content: output, train: true });
      return { turns };
    }
    case 'instruction-response': {
      // Dolly calls the input `context`; GPTeacher and Magicoder-Evol-Instruct call it `input` or have none.
      const input = fieldText(record.input ?? record.context, record.input !== undefined ? 'input' : 'context', where, true);
      return instructionExchange(systemTurn(record, where), fieldText(record.instruction, 'instruction', where), input,
        fieldText(record.response, 'response', where));
    }
    case 'oasst':
      return instructionExchange([], fieldText(record.INSTRUCTION, 'INSTRUCTION', where), '', fieldText(record.RESPONSE, 'RESPONSE', where));
    case 'qa':
    case 'query-response': {
      const [qKey, aKey] = format === 'qa' ? ['question', given(record.answer) ? 'answer' : 'response'] : ['query', 'response'];
      const question = fieldText(record[qKey], qKey, where);
      // OpenOrca calls its system prompt `system_prompt`.
      const system = systemTurn(record, where, record.system_prompt !== undefined ? 'system_prompt' : 'system');
      return exchange(system, question, fieldText(record[aKey], aKey, where), `Question: ${question}\nAnswer: `);
    }
    case 'problem-solution': {
      const problem = fieldText(record.problem, 'problem', where);
      return exchange([], problem, fieldText(record.solution, 'solution', where), `Problem:\n${problem}\n\nSolution:\n`);
    }
    case 'humaneval': {
      // The solution is the body of the function whose signature and docstring end the prompt: a continuation.
      const prompt = fieldText(record.prompt, 'prompt', where);
      return exchange([], prompt, fieldText(record.canonical_solution, 'canonical_solution', where), prompt);
    }
    case 'mbpp': {
      // MBPP's own prompt: the task, then the tests the code must pass (and any setup they need).
      const task = fieldText(record.text ?? record.prompt, record.text !== undefined ? 'text' : 'prompt', where);
      const setup = fieldText(record.test_setup_code, 'test_setup_code', where, true);
      const tests = (record.test_list as string[]).join('\n');
      const user = `${task}\nYour code should pass these tests:\n\n${setup ? `${setup}\n` : ''}${tests}`;
      return exchange([], user, fieldText(record.code, 'code', where), `${user}\n\n`);
    }
    case 'prompt-completion': {
      const { prompt, completion } = record;
      // TRL's unpaired preference (KTO) data labels each completion; a false one is an example of what not to say.
      if (record.label === false) {
        throw badInput(`${locate(where)}: the completion is labelled undesirable (label: false, KTO data); ` +
          'supervised training would teach it. Keep only the records with label: true', where.file);
      }
      if (typeof prompt === 'string' && typeof completion === 'string') {
        // TRL's standard form: the completion continues the prompt text directly.
        return exchange([], prompt, completion, prompt);
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
    case 'preference':
      return preferenceConversation(record, where);
    case 'mt-bench': {
      const answers = record.reference as string[];
      const turns = (record.turns as string[]).flatMap((q, i): Turn[] => [
        { role: 'user', content: q, train: false }, { role: 'assistant', content: answers[i] as string, train: true }]);
      return { turns };
    }
    case 'messages':
      return { turns: [...systemTurn(record, where), ...messageTurns(record.messages as unknown[], where, 'messages', true)], ...toolsOf(record) };
    case 'sharegpt': {
      if (Array.isArray(record.conversations)) {
        const list = record.conversations;
        // LIMA writes a conversation as plain strings, the user's turns first and alternating with the assistant's.
        if (list.every(isStr)) {
          const turns = list.map((value, i): Turn => ({ role: i % 2 ? 'assistant' : 'user', content: value, train: i % 2 === 1 }));
          return { turns: [...systemTurn(record, where), ...turns] };
        }
        const turns = list.map((m, i): Turn => {
          const at = `conversations[${i}]`;
          // Some exports keep the ShareGPT column but write OpenAI's {role, content} inside it.
          const [roleKey, textKey] = isObject(m) && m.from === undefined && typeof m.role === 'string' ? ['role', 'content'] : ['from', 'value'];
          if (!isObject(m) || typeof m[roleKey] !== 'string') throw badInput(`${locate(where)}: ${at} must be an object {from, value} or {role, content}`, where.file);
          const name = m[roleKey] as string;
          const role = ROLE_NAMES[name];
          if (!role) {
            throw badInput(`${locate(where)}: ${at}.${roleKey} is "${name}"; expected one of ${Object.keys(ROLE_NAMES).join(', ')}`, where.file);
          }
          return { role, content: fieldText(m[textKey], `${at}.${textKey}`, where), train: role === 'assistant' && weighted(m, where, at) };
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

/**
 * A preference pair read for supervised training: the prompt, then the chosen answer as the target; the rejected
 * answer is not used. The prompt is TRL's `prompt` (text or messages), LLaMA-Factory's `instruction` (+ `input`),
 * or Orca DPO's `question`; without one, `chosen` must hold the whole conversation (UltraFeedback's message list,
 * or HH-RLHF's "Human:/Assistant:" transcript).
 */
function preferenceConversation(record: Rec, where: Where): Conversation {
  const chosen = record.chosen;
  const system = systemTurn(record, where);
  const chosenTurns = (prompted: boolean): Turn[] => {
    if (Array.isArray(chosen)) return messageTurns(chosen, where, 'chosen', true);
    if (typeof chosen === 'string') {
      if (prompted) return [{ role: 'assistant', content: chosen, train: true }];
      const turns = transcriptTurns(chosen);
      if (turns) return turns;
      throw badInput(`${locate(where)}: \`chosen\` is a single text with no prompt beside it (no \`prompt\`, \`instruction\` ` +
        'or `question`) and no "Human:"/"Assistant:" turns in it, so the prompt cannot be told from the answer', where.file);
    }
    throw badInput(`${locate(where)}: \`chosen\` must be a string or a list of messages`, where.file);
  };
  if (Array.isArray(record.prompt)) {
    return { turns: [...system, ...messageTurns(record.prompt, where, 'prompt', false), ...chosenTurns(true)], ...toolsOf(record) };
  }
  let user: string | undefined;
  let plainPrompt = '';
  if (record.prompt !== undefined) {
    user = fieldText(record.prompt, 'prompt', where);
    plainPrompt = user;
  } else if (isStr(record.instruction)) {
    const input = fieldText(record.input, 'input', where, true);
    user = input ? `${record.instruction}\n\n${input}` : record.instruction;
    plainPrompt = alpacaPrompt(record.instruction, input);
  } else if (record.question !== undefined) {
    user = fieldText(record.question, 'question', where);
    plainPrompt = `Question: ${user}\nAnswer: `;
  }
  if (user === undefined) return { turns: [...system, ...chosenTurns(false)] };
  if (typeof chosen === 'string') return exchange(system, user, chosen, plainPrompt);
  return { turns: [...system, { role: 'user', content: user, train: false }, ...chosenTurns(true)] };
}

/**
 * Axolotl's template-free `input_output` records: texts joined exactly as written, each marked whether it is a target.
 */
export function segmentsOf(record: Rec, where: Where): { text: string; train: boolean }[] {
  return (record.segments as unknown[]).map((seg, i) => {
    const at = `segments[${i}]`;
    if (!isObject(seg) || typeof seg.text !== 'string' || typeof seg.label !== 'boolean') {
      throw badInput(`${locate(where)}: ${at} must be an object {label: true | false, text}`, where.file);
    }
    return { text: seg.text, train: seg.label };
  });
}

function toolsOf(record: Rec): { tools?: unknown[] } {
  const tools = toolList(record.tools);
  return tools ? { tools } : {};
}
