// Quoting for the commands DomLoRA prints for the user to paste into a terminal (the trainers' launch lines, the
// adapter's load commands, the native backend's install line). A path is data: a folder name that holds spaces,
// quotes, `$(…)` or backticks must reach the program as it is and never run. Pure functions, shared by the engine,
// the CLI and the extension host.

/** The shell a printed command is written for: POSIX sh (bash, zsh, dash) or PowerShell (on Windows). */
export type Shell = 'posix' | 'powershell';

/** The shell commands are printed for on this platform. */
export function shellFor(platform: string): Shell {
  return platform === 'win32' ? 'powershell' : 'posix';
}

/**
 * Characters that no quoting makes safe to paste: a line break ends the command at the terminal (what precedes it
 * runs as soon as it is pasted, whatever quotes were open), and the other control characters (escape sequences
 * among them) can rewrite what the terminal shows, so the user would not see what they run. Unicode's line and
 * paragraph separators are line breaks to some terminals and editors.
 */
// eslint-disable-next-line no-control-regex -- the control characters are what it looks for
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u;

/** Why `s` cannot be one word of a printed command (it holds a line break or a control character), or undefined. */
export function unquotable(s: string): string | undefined {
  const m = UNSAFE.exec(s);
  if (!m) return undefined;
  const c = m[0];
  const name = c === '\n' ? 'a newline' : c === '\r' ? 'a carriage return' : c === '\u2028' || c === '\u2029' ? 'a line separator'
    : `the control character U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
  return `it holds ${name}, which no quoting makes safe to paste into a terminal`;
}

/** Thrown by shellWord for a word it refuses; `word` is the text as given. */
export class UnquotableError extends Error {
  constructor(readonly word: string, reason: string) {
    super(`${JSON.stringify(word)} cannot be printed in a shell command: ${reason}`);
    this.name = 'UnquotableError';
  }
}

/**
 * Characters that mean nothing to the shell anywhere in a word. POSIX: no `~` (tilde expansion), `=` only after the
 * first character (zsh expands a word starting with `=`), no glob, quote, `$`, backtick, space, `;&|<>(){}!#`.
 * PowerShell adds its own: `@` (splatting), `,` (arrays), `$`, backtick, quotes, `-` first (a parameter name),
 * so only the plain path characters stay bare there.
 */
const BARE: Record<Shell, RegExp> = {
  posix: /^[A-Za-z0-9_./@%+,:-][A-Za-z0-9_./@%+,:=-]*$/,
  powershell: /^[A-Za-z0-9_./\\:][A-Za-z0-9_./\\:-]*$/,
};

/**
 * One word of a command, quoted only when it has to be. POSIX: inside single quotes every character but the quote
 * itself is literal, and a quote is written `'\''` (close, escaped quote, reopen). PowerShell: inside single quotes
 * only the quote is special, written twice; PowerShell also takes the typographic single quotes (U+2018-U+201B) as
 * quotes, so they are doubled too. Throws UnquotableError for a word no quoting makes safe (see unquotable).
 */
export function shellWord(s: string, shell: Shell = 'posix', o: { alwaysQuote?: boolean } = {}): string {
  const why = unquotable(s);
  if (why) throw new UnquotableError(s, why);
  if (!o.alwaysQuote && BARE[shell].test(s)) return s;
  if (shell === 'posix') return `'${s.replace(/'/g, `'\\''`)}'`;
  return `'${s.replace(/['\u2018\u2019\u201a\u201b]/g, (q) => q + q)}'`;
}

/**
 * A command run with environment variables set: `A=1 B=2 command` (POSIX), or `$env:A = '1'; $env:B = '2'; command`
 * (PowerShell, where the value of an assignment is always quoted: a bare path there would be run as a command).
 * Variable names are the caller's constants, never data.
 */
export function withEnv(vars: Record<string, string>, command: string, shell: Shell = 'posix'): string {
  const names = Object.keys(vars);
  if (names.some((n) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(n))) throw new Error(`not an environment variable name: ${names.join(', ')}`);
  if (shell === 'posix') return [...names.map((n) => `${n}=${shellWord(vars[n]!, shell)}`), command].join(' ');
  return [...names.map((n) => `$env:${n} = ${shellWord(vars[n]!, shell, { alwaysQuote: true })}`), command].join('; ');
}
