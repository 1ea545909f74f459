// The tokenizer of a Hugging Face model folder: tokenizers.js does the encoding, @huggingface/jinja renders the chat
// template. This wrapper settles, once, the questions the two libraries leave open: which special tokens a text
// gets (BOS, EOS), which chat template applies, and how to report a broken tokenizer folder to the user.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { badInput } from '../runtime/errors';
import { INPUT_LIMITS, readBoundedText } from '../runtime/inputs';
import { BoundedTemplate, TemplateLimitError } from './template';

export interface ChatMessage { role: string; content: string }

export interface ChatTemplateOptions {
  /** End the text with the header of a new assistant turn, the point where the model starts to answer. */
  addGenerationPrompt?: boolean;
  /** Tool descriptions, for templates that render them (passed to the template as `tools`). */
  tools?: unknown[];
}

/** The parts of tokenizer_config.json we read; every other key is passed through to tokenizers.js untouched. */
interface TokenizerConfigJson {
  add_bos_token?: unknown;
  add_eos_token?: unknown;
  bos_token?: unknown;
  eos_token?: unknown;
  unk_token?: unknown;
  pad_token?: unknown;
  chat_template?: unknown;
  [key: string]: unknown;
}

/** The special tokens a post-processor puts before and after a single sequence. */
interface PostProcessorSpecials { before: number[]; after: number[] }

export class ModelTokenizer {
  readonly bosId?: number;
  readonly eosId?: number;
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** One more than the largest token id (added tokens included): the size an embedding table needs. */
  readonly vocabSize: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate?: string;
  /**
   * True when the tokenizer marks a text's first word as following a space (SentencePiece's '▁' prefix, byte-level
   * BPE with add_prefix_space): then "b" alone encodes like the "b" of "a b". Whoever encodes a text in pieces
   * needs this to put the space between two pieces in the right one, once.
   */
  readonly addsPrefixSpace: boolean;

  private readonly tokenizer: Tokenizer;
  private readonly specialTokenStrings: Record<string, string>;
  private compiledTemplate?: BoundedTemplate;

  private constructor(
    tokenizer: Tokenizer,
    config: TokenizerConfigJson,
    tokenizerJson: Record<string, unknown>,
    chatTemplate: string | undefined,
    private readonly configFile: string,
    /** The file the chat template came from (tokenizer_config.json, chat_template.jinja or chat_template.json). */
    private readonly templateFile: string,
  ) {
    this.tokenizer = tokenizer;
    this.chatTemplate = chatTemplate;

    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    this.specialTokenStrings = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const) {
      const text = tokenText(config[key]);
      if (text !== undefined) this.specialTokenStrings[key] = text;
    }
    this.bosToken = this.specialTokenStrings.bos_token;
    this.eosToken = this.specialTokenStrings.eos_token;
    this.bosId = this.bosToken === undefined ? undefined : tokenizer.token_to_id(this.bosToken);
    this.eosId = this.eosToken === undefined ? undefined : tokenizer.token_to_id(this.eosToken);

    // tokenizers.js adds special tokens only through the post-processor and ignores add_bos_token/add_eos_token.
    // transformers' Llama tokenizers rebuild their post-processor from those two flags, so when the config states
    // them they win; when it does not (Llama-3, Qwen, ...), the post-processor is the only record of the intent.
    // We then always encode without the post-processor and add BOS/EOS ourselves, so there is one rule everywhere.
    const specials = postProcessorSpecials(tokenizerJson.post_processor);
    const bosId = this.bosId;
    const eosId = this.eosId;
    this.addBos = bosId !== undefined &&
      (typeof config.add_bos_token === 'boolean' ? config.add_bos_token : specials.before.includes(bosId));
    this.addEos = eosId !== undefined &&
      (typeof config.add_eos_token === 'boolean' ? config.add_eos_token : specials.after.includes(eosId));

    const pair = this.encode('a b', { addSpecial: false });
    const single = this.encode('b', { addSpecial: false });
    this.addsPrefixSpace = single.length > 0 && single.length <= pair.length &&
      single.every((id, i) => id === pair[pair.length - single.length + i]);
  }

  /**
   * Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional: without it the special tokens come
   * from `special_tokens_map.json` and the BOS/EOS rule from the post-processor). The chat template comes from the
   * config, or from `chat_template.jinja` / `chat_template.json`, where newer transformers versions save it.
   */
  static load(modelDir: string): ModelTokenizer {
    const tokenizerFile = path.join(modelDir, 'tokenizer.json');
    const configFile = path.join(modelDir, 'tokenizer_config.json');
    if (!fs.existsSync(tokenizerFile)) {
      throw badInput('the model folder has no tokenizer.json (the fast-tokenizer file that transformers saves)', tokenizerFile);
    }
    const tokenizerJson = readJsonObject(tokenizerFile, INPUT_LIMITS.tokenizerJsonBytes, 'a tokenizer.json');
    checkVocabulary(tokenizerJson, tokenizerFile);
    const config: TokenizerConfigJson = fs.existsSync(configFile) ? readJsonObject(configFile, INPUT_LIMITS.tokenizerConfigBytes, 'a tokenizer_config.json') : {};

    // special_tokens_map.json is older than the special-token keys of tokenizer_config.json; use it only to fill
    // in what the config leaves out.
    const mapFile = path.join(modelDir, 'special_tokens_map.json');
    if (fs.existsSync(mapFile)) {
      const map = readJsonObject(mapFile, INPUT_LIMITS.smallFileBytes, 'a special_tokens_map.json');
      for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
        if (config[key] === undefined && map[key] !== undefined) config[key] = map[key];
      }
    }

    const { template: chatTemplate, file: templateFile } = readChatTemplate(modelDir, config, configFile);
    if (chatTemplate !== undefined && chatTemplate.length > INPUT_LIMITS.chatTemplateChars) {
      throw badInput(`the chat template is ${chatTemplate.length.toLocaleString('en-US')} characters long, over the `
        + `${INPUT_LIMITS.chatTemplateChars.toLocaleString('en-US')} DomLoRA reads (real ones are under 100,000)`, templateFile);
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw badInput(`cannot build the tokenizer: ${err instanceof Error ? err.message : String(err)}`, tokenizerFile);
    }
    return new ModelTokenizer(tokenizer, config, tokenizerJson, chatTemplate, configFile, templateFile);
  }

  /** Token ids of `text`; with `addSpecial` (the default) BOS and EOS are added as the tokenizer config says. */
  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    // An empty string has no tokens; asking the library could still yield a lone word-start marker.
    const ids = text === '' ? [] : this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    if (opts.addSpecial ?? true) {
      if (this.addBos && this.bosId !== undefined) ids.unshift(this.bosId);
      if (this.addEos && this.eosId !== undefined) ids.push(this.eosId);
    }
    return ids;
  }

  /** The text of `ids`, special tokens included (so a decoded training target shows its EOS). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: false });
  }

  /** The id of a token string (special tokens included), or undefined when it is not in the vocabulary. */
  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /**
   * Renders a conversation with the model's chat template, as transformers' `apply_chat_template(tokenize=False)`
   * does: the template sees `messages`, `add_generation_prompt`, `tools` and the special token strings.
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === undefined) {
      throw badInput('the tokenizer has no chat template', this.configFile);
    }
    try {
      // The template is code from the model folder: it runs with a time and an output limit (hf/template.ts).
      this.compiledTemplate ??= new BoundedTemplate(this.chatTemplate);
      return this.compiledTemplate.render({
        ...this.specialTokenStrings,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? false,
        ...(opts.tools ? { tools: opts.tools } : {}),
      });
    } catch (err) {
      if (err instanceof TemplateLimitError) throw badInput(err.message, this.templateFile);
      const message = err instanceof RangeError && /call stack/i.test(err.message) ? 'it nests too deeply to be parsed' : err instanceof Error ? err.message : String(err);
      throw badInput(`the chat template failed: ${message}`, this.templateFile);
    }
  }
}

/** A JSON object from a file no larger than `max` bytes (`what` names the kind of file in the error). */
function readJsonObject(file: string, max: number, what: string): Record<string, unknown> {
  const text = readBoundedText(file, max, what);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw badInput(`invalid JSON: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  if (!isObject(value)) throw badInput('expected a JSON object', file);
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A special token as configs write it: a plain string, or an AddedToken object `{content: ...}`; null means none. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value.content === 'string') return value.content;
  return undefined;
}

/**
 * The chat template: `chat_template` is a string, or a list of named templates of which 'default' is the one for
 * plain chat (the others, such as 'tool_use', are chosen by transformers only on request).
 */
function readChatTemplate(modelDir: string, config: TokenizerConfigJson, configFile: string): { template?: string; file: string } {
  const value = config.chat_template;
  if (typeof value === 'string') return { template: value, file: configFile };
  if (Array.isArray(value)) {
    const named = value.filter(isObject);
    const chosen = named.find((t) => t.name === 'default') ?? named[0];
    if (chosen && typeof chosen.template === 'string') return { template: chosen.template, file: configFile };
    throw badInput('chat_template is a list without a usable {name, template} entry', configFile);
  }
  if (isObject(value)) {
    const chosen = value.default ?? Object.values(value)[0];
    if (typeof chosen === 'string') return { template: chosen, file: configFile };
    throw badInput('chat_template is an object without a usable template', configFile);
  }
  if (value !== undefined && value !== null) throw badInput('chat_template must be a string or a list', configFile);

  const jinjaFile = path.join(modelDir, 'chat_template.jinja');
  if (fs.existsSync(jinjaFile)) return { template: readBoundedText(jinjaFile, INPUT_LIMITS.smallFileBytes, 'a chat template'), file: jinjaFile };
  const jsonFile = path.join(modelDir, 'chat_template.json');
  if (fs.existsSync(jsonFile)) {
    const template = readJsonObject(jsonFile, INPUT_LIMITS.smallFileBytes, 'a chat_template.json').chat_template;
    if (typeof template === 'string') return { template, file: jsonFile };
    throw badInput('chat_template.json has no string chat_template', jsonFile);
  }
  return { file: configFile };
}

/**
 * The vocabulary's size, bounded before tokenizers.js builds its tables: the entries of model.vocab (an object of
 * token -> id for BPE and WordPiece, a list of [token, score] for Unigram), the merges, the added tokens, and every
 * id (the embedding table the ids index is sized by the largest).
 */
function checkVocabulary(json: Record<string, unknown>, file: string): void {
  const max = INPUT_LIMITS.vocabEntries;
  const over = (what: string, n: number, limit = max) => {
    if (n > limit) throw badInput(`${what} has ${n.toLocaleString('en-US')} entries, over the ${limit.toLocaleString('en-US')} DomLoRA reads (real vocabularies stop near 262,144)`, file);
  };
  const model = isObject(json.model) ? json.model : {};
  const vocab = model.vocab;
  if (Array.isArray(vocab)) over('model.vocab', vocab.length);
  else if (isObject(vocab)) {
    let n = 0;
    for (const id of Object.values(vocab)) {
      n++;
      if (typeof id === 'number' && (!Number.isInteger(id) || id < 0 || id >= max)) {
        throw badInput(`model.vocab holds the id ${id}; ids must be whole numbers from 0 to ${(max - 1).toLocaleString('en-US')}`, file);
      }
    }
    over('model.vocab', n);
  }
  if (Array.isArray(model.merges)) over('model.merges', model.merges.length);
  if (Array.isArray(json.added_tokens)) {
    over('added_tokens', json.added_tokens.length, INPUT_LIMITS.addedTokens);
    for (const t of json.added_tokens) {
      const id = isObject(t) ? t.id : undefined;
      if (typeof id === 'number' && (!Number.isInteger(id) || id < 0 || id >= max)) {
        throw badInput(`added_tokens holds the id ${id}; ids must be whole numbers from 0 to ${(max - 1).toLocaleString('en-US')}`, file);
      }
    }
  }
}

/**
 * The special token ids a `TemplateProcessing` post-processor (possibly inside a `Sequence`) puts around a single
 * sequence: `single: [<s>, $A]` means BOS before, `[$A, </s>]` EOS after.
 */
function postProcessorSpecials(processor: unknown): PostProcessorSpecials {
  const result: PostProcessorSpecials = { before: [], after: [] };
  if (!isObject(processor)) return result;
  if (processor.type === 'Sequence' && Array.isArray(processor.processors)) {
    for (const inner of processor.processors) {
      const found = postProcessorSpecials(inner);
      result.before.push(...found.before);
      result.after.push(...found.after);
    }
    return result;
  }
  if (processor.type !== 'TemplateProcessing' || !Array.isArray(processor.single)) return result;
  const specialTokens = isObject(processor.special_tokens) ? processor.special_tokens : {};
  let seenSequence = false;
  for (const item of processor.single) {
    if (!isObject(item)) continue;
    if (isObject(item.Sequence)) {
      seenSequence = true;
    } else if (isObject(item.SpecialToken) && typeof item.SpecialToken.id === 'string') {
      const entry = specialTokens[item.SpecialToken.id];
      const ids = isObject(entry) && Array.isArray(entry.ids) ? entry.ids.filter((x): x is number => typeof x === 'number') : [];
      (seenSequence ? result.after : result.before).push(...ids);
    }
  }
  return result;
}
