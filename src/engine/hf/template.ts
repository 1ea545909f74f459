// Chat templates are code from the model folder: a Jinja program that @huggingface/jinja interprets when a record is
// rendered. A template from a cloned repository can loop for ever (`range` nested in `range`), build strings or lists
// until memory runs out, or recurse without end. This renders one with limits: a time budget, checked as the
// interpreter walks the template; a size for every string and list it produces; a nesting depth; `range()` bounded.
// Each exceeded limit is a TemplateLimitError with a sentence the caller puts after the file's name.
import { Environment, Interpreter, Template } from '@huggingface/jinja';

export interface TemplateLimits {
  /** Wall-clock milliseconds one rendering may take. */
  timeMs: number;
  /** Characters any string the template builds, its output included, may hold. */
  maxChars: number;
  /** Items any list (or keys any mapping) the template builds or reads may hold, `range()` included. */
  maxItems: number;
  /** Nodes evaluated one inside another: a macro calling itself adds a few per call. */
  maxDepth: number;
}

/**
 * Real chat templates render a conversation in well under a millisecond, produce the conversation's text, loop over
 * its messages (or a `range` of that length) and nest a few dozen nodes deep.
 */
export const TEMPLATE_LIMITS: TemplateLimits = { timeMs: 2000, maxChars: 32 * 1024 * 1024, maxItems: 100_000, maxDepth: 400 };

/** A limit the template went over: the message says which, in a sentence. */
export class TemplateLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateLimitError';
  }
}

type Evaluated = ReturnType<Interpreter['evaluate']>;

/** The interpreter of @huggingface/jinja with a check at every node it evaluates. */
class BoundedInterpreter extends Interpreter {
  private steps = 0;
  private depth = 0;
  constructor(env: Environment, private readonly deadline: number, private readonly limits: TemplateLimits) {
    super(env);
    // A for loop with an empty body (`{% for j in range(100000) %}{% endfor %}`) evaluates no node per iteration,
    // only its (empty) block: the block counts as a step too, or nested empty loops would run for hours between two
    // looks at the clock. evaluateBlock is private in the library's types, hence the cast; the nested-ranges case of
    // test/unit/fuzz.test.ts fails if a new version of the library stops calling it.
    const self = this as unknown as { evaluateBlock?: (statements: unknown, environment: Environment) => Evaluated };
    const block = self.evaluateBlock;
    if (typeof block === 'function') {
      self.evaluateBlock = (statements, environment) => {
        this.tick();
        return block.call(this, statements, environment);
      };
    }
  }

  /** One step of the interpretation: the clock is read every 256 steps, cheap next to the work of a step. */
  private tick(): void {
    if ((++this.steps & 255) === 0 && Date.now() > this.deadline) {
      throw new TemplateLimitError(`the chat template ran longer than ${this.limits.timeMs / 1000} s on one record (a loop without end?)`);
    }
  }

  override evaluate(statement: Parameters<Interpreter['evaluate']>[0], environment: Environment): Evaluated {
    this.tick();
    // The library turns a stack overflow inside a variable lookup into "undefined", so endless recursion would end
    // in a misleading error (or none): the depth is bounded here, far below the stack's own limit.
    if (++this.depth > this.limits.maxDepth) {
      this.depth--;
      throw new TemplateLimitError(`the chat template recursed without end (deeper than ${this.limits.maxDepth.toLocaleString('en-US')} levels)`);
    }
    let value: Evaluated;
    try {
      value = super.evaluate(statement, environment);
    } finally {
      this.depth--;
    }
    const v: unknown = value.value;
    if (typeof v === 'string' && v.length > this.limits.maxChars) {
      throw new TemplateLimitError(`the chat template built a text of ${v.length.toLocaleString('en-US')} characters, over the `
        + `${this.limits.maxChars.toLocaleString('en-US')} DomLoRA allows for one record`);
    }
    // Every list a for loop walks comes through here first: bounding lists bounds the loop's setup, which the
    // library runs over all items before the first iteration (and so before the clock is read again).
    const items = Array.isArray(v) ? v.length : v instanceof Map ? v.size : 0;
    if (items > this.limits.maxItems) {
      throw new TemplateLimitError(`the chat template built a list of ${items.toLocaleString('en-US')} items, over the `
        + `${this.limits.maxItems.toLocaleString('en-US')} DomLoRA allows for one record`);
    }
    return value;
  }
}

/** strftime_now as @huggingface/jinja defines it (Llama 3's templates print today's date with it). */
function strftimeNow(format: string): string {
  const date = new Date();
  const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
  return String(format).replace(/%[YmdbBHM%]/g, (token) => {
    switch (token) {
      case '%Y': return String(date.getFullYear());
      case '%m': return pad2(date.getMonth() + 1);
      case '%d': return pad2(date.getDate());
      case '%b': return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(date);
      case '%B': return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(date);
      case '%H': return pad2(date.getHours());
      case '%M': return pad2(date.getMinutes());
      default: return '%';
    }
  });
}

/** Python's range(), refusing to build more than `max` numbers. */
function boundedRange(max: number) {
  return (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) { stop = start; start = 0; }
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((stop - start) / step));
    if (!Number.isFinite(count) || count > max) {
      throw new TemplateLimitError(`the chat template asked for range() of ${Number.isFinite(count) ? count.toLocaleString('en-US') : 'endless'} numbers, `
        + `over the ${max.toLocaleString('en-US')} DomLoRA allows`);
    }
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(start + i * step);
    return out;
  };
}

/** A chat template parsed once, rendered with limits (see TemplateLimits). */
export class BoundedTemplate {
  private readonly program: Template['parsed'];

  constructor(source: string, private readonly limits: TemplateLimits = TEMPLATE_LIMITS) {
    this.program = new Template(source).parsed;
  }

  /** Renders with `items` as the template's variables; throws TemplateLimitError past a limit. */
  render(items: Record<string, unknown>): string {
    // The globals of @huggingface/jinja's Template.render, with range() bounded.
    const env = new Environment();
    const globals: Record<string, unknown> = {
      false: false, true: true, none: null, False: false, True: true, None: null,
      raise_exception: (message: unknown) => { throw new Error(String(message)); },
      range: boundedRange(this.limits.maxItems), strftime_now: strftimeNow,
    };
    for (const [k, v] of Object.entries(globals)) env.set(k, v);
    for (const [k, v] of Object.entries(items)) env.set(k, v);
    const interpreter = new BoundedInterpreter(env, Date.now() + this.limits.timeMs, this.limits);
    try {
      const out = interpreter.run(this.program).value;
      return typeof out === 'string' ? out : String(out);
    } catch (err) {
      // A template that recurses without end overflows the stack: one more limit, said as such.
      if (err instanceof RangeError && /call stack/i.test(err.message)) throw new TemplateLimitError('the chat template recursed without end (the call stack overflowed)');
      if (err instanceof RangeError && /string length/i.test(err.message)) {
        throw new TemplateLimitError(`the chat template built a text longer than JavaScript allows (over the ${this.limits.maxChars.toLocaleString('en-US')} characters DomLoRA allows)`);
      }
      throw err;
    }
  }
}
