// Commands DomLoRA prints are safe to paste: every path is one word for the shell, whatever its name holds. Checked
// by running the words through real shells (dash and bash), and the export's printed commands through bash with the
// tools replaced by functions that record their arguments, in a folder where an injected `touch` would leave a file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runExport, runtimeChecks } from '../../src/engine/export/exporters';
import { buildPeftConfig, writeAdapterFiles } from '../../src/engine/export/peft';
import { openModelFolder } from '../../src/engine/hf/folder';
import { candidateModules } from '../../src/engine/hf/modules';
import { DomLoraError } from '../../src/engine/runtime/errors';
import { shellWord, unquotable, UnquotableError, withEnv } from '../../src/protocol/shell';
import { STORIES, tmpDir } from '../helpers/reference';

/** Names a cloned repository could give a folder: each must reach the program as it is, and run nothing. */
const HOSTILE = [
  'with space', "it's", 'dq"x', '$(touch PWNED)', '`touch PWNED`', '$HOME', 'semi;touch PWNED', 'a&&touch PWNED', 'p|touch PWNED',
  '*', 'glob?[a]', '~', '~root', '=ls', '-n', 'back\\slash', 'brace{a,b}', 'bang!x', '#hash', 'tab-less é ✓', '\u2018smart\u2019', 'percent%d',
  '', "'", "''", '$', '\\', 'x>y', '(sub)', 'a\tb'.replace('\t', ' '), '${IFS}', '$((1+1))', '!!',
];

test('shellWord: every hostile name comes back from dash and bash as it was, and nothing runs', () => {
  const dir = tmpDir();
  for (const sh of ['/bin/sh', '/bin/bash']) {
    for (const name of HOSTILE) {
      const out = execFileSync(sh, ['-c', `printf '%s' ${shellWord(name)}`], { cwd: dir, encoding: 'utf8', env: { HOME: '/home/nobody', PATH: process.env.PATH } });
      assert.equal(out, name, `${sh}: ${JSON.stringify(name)} quoted as ${shellWord(name)}`);
    }
  }
  // bash's history expansion (`!`) is on in interactive shells only; a pasted line is interactive.
  for (const name of HOSTILE) {
    const out = spawnSync('/bin/bash', ['-i', '-c', `printf '%s' ${shellWord(name)}`], { cwd: dir, encoding: 'utf8', env: { HOME: dir, PATH: process.env.PATH } });
    assert.equal(out.stdout, name, `bash -i: ${JSON.stringify(name)}`);
  }
  assert.deepEqual(fs.readdirSync(dir).filter((f) => !f.startsWith('.')), [], 'no injected command ran');
  // Plain paths stay readable.
  assert.equal(shellWord('/home/me/models/llama-3.yaml'), '/home/me/models/llama-3.yaml');
  assert.equal(shellWord('=ls'), "'=ls'", 'zsh expands a word that starts with =');
  assert.equal(shellWord('~/x'), "'~/x'");
});

test('shellWord refuses what no quoting makes safe to paste: newlines, carriage returns, escapes, line separators', () => {
  for (const bad of ['a\nb', 'a\rb', 'x\u001b[2Jy', 'nul\u0000', '\u2028', 'del\u007f', 'c1\u0085']) {
    assert.throws(() => shellWord(bad), (e: unknown) => e instanceof UnquotableError && /cannot be printed in a shell command: it holds/.test(e.message), JSON.stringify(bad));
    assert.throws(() => shellWord(bad, 'powershell'), UnquotableError);
    assert.ok(unquotable(bad));
  }
  assert.match(unquotable('a\nb')!, /a newline/);
  assert.equal(unquotable('plain name'), undefined);
});

test('shellWord for PowerShell: single quotes, the quote and its typographic forms doubled, nothing else special', () => {
  /** PowerShell's reading of a verbatim string: '...' with '' (and each typographic single quote doubled) for the quote. */
  const read = (w: string): string => {
    if (!w.startsWith("'")) { assert.match(w, /^[A-Za-z0-9_./\\:][A-Za-z0-9_./\\:-]*$/); return w; }
    const inner = w.slice(1, -1);
    assert.ok(w.endsWith("'") && w.length >= 2, w);
    let out = '';
    for (let i = 0; i < inner.length; i++) {
      const c = inner[i]!;
      if (/['\u2018\u2019\u201a\u201b]/.test(c)) {
        assert.equal(inner[i + 1], c, `a lone quote ends the string early in ${w}`);
        i++;
      }
      out += c;
    }
    return out;
  };
  for (const name of [...HOSTILE, 'C:\\Users\\me\\My Models', '@tensorflow/tfjs-node@4.22.0', '-Force', 'a,b', '$env:PATH']) {
    assert.equal(read(shellWord(name, 'powershell')), name, name);
  }
  assert.equal(shellWord('@tensorflow/tfjs-node@4.22.0', 'powershell'), "'@tensorflow/tfjs-node@4.22.0'", '@ at a word start is splatting');
  assert.equal(withEnv({ DOMLORA_NATIVE_DIR: 'C:\\a b' }, 'domlora probe', 'powershell'), "$env:DOMLORA_NATIVE_DIR = 'C:\\a b'; domlora probe");
  assert.equal(withEnv({ X: '/a b', Y: '1' }, 'cmd'), "X='/a b' Y=1 cmd");
  assert.throws(() => withEnv({ 'X;rm': '1' }, 'cmd'), /not an environment variable name/);
});

/** An adapter of one module of the stories model, written as the trainer writes one, naming `base` as its base model. */
function makeAdapter(dir: string, base: string): void {
  const folder = openModelFolder(base);
  const spec = candidateModules(folder.cfg).find((s) => s.name === 'model.layers.1.mlp.down_proj')!;
  fs.mkdirSync(dir, { recursive: true });
  writeAdapterFiles(dir, [{ spec, a: new Float32Array(8 * spec.dIn), b: new Float32Array(spec.dOut * 8) }],
    buildPeftConfig([spec], folder.cfg.numLayers, 8, 16, base), {});
}

/** The string literals of a piece of Python code, in the order Python's own parser finds them. */
function pyLiterals(code: string): string[] {
  const script = ['import ast, json, sys', 'tree = ast.parse(sys.argv[1])',
    'print(json.dumps([n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]))'].join('\n');
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script, code], { encoding: 'utf8' })) as string[];
}

/**
 * Runs a printed command line in bash, as a user pasting it would, with the tools it names replaced by functions
 * that record their arguments: returns each call's argv.
 */
function runPrinted(line: string, cwd: string): string[][] {
  const log = path.join(cwd, '.argv');
  fs.rmSync(log, { force: true });
  const tools = ['python', 'vllm', 'llama-cli', 'axolotl', 'llamafactory-cli', 'mlx_lm.lora', 'accelerate'];
  const script = `${tools.map((t) => `${t}() { { printf '%s\\0' ${JSON.stringify(t)} "$@"; printf '\\n'; } >> ${JSON.stringify(log)}; }`).join('\n')}\neval "$LINE"\n`;
  execFileSync('/bin/bash', ['-c', script], { cwd, env: { LINE: line, PATH: process.env.PATH, HOME: cwd } });
  return fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((call) => call.split('\0').slice(0, -1));
}

test('export: every printed command passes hostile folder names through as one argument and runs nothing', async () => {
  const root = tmpDir();
  const evil = 'a b\'c"d$(touch PWNED)`touch PWNED2`$HOME;touch PWNED3&x|y*{1,2}!~\u2018q\u2019';
  const base = path.join(root, `model ${evil}`);
  fs.cpSync(STORIES, base, { recursive: true });
  const adapter = path.join(root, `adapter ${evil}`);
  makeAdapter(adapter, base);
  const outDir = path.join(root, `out ${evil}`);
  fs.mkdirSync(outDir);
  const work = path.join(root, 'cwd');
  fs.mkdirSync(work);

  const calls: string[][] = [];
  for (const [format, file] of [['axolotl', 'ax.yml'], ['llamafactory', 'lf.yaml'], ['peft-config', 'c.py']] as const) {
    for (const gpus of [undefined, 2]) {
      const r = await runExport({ adapterDir: adapter, format, out: path.join(outDir, `${gpus ?? 1}-${file}`), modelDir: base, ...(gpus ? { gpus } : {}) });
      const launch = r.text.split('\n').map((l) => /(?:train|GPUs?): (.*(?:axolotl|llamafactory-cli) train .*)$/.exec(l)?.[1]).filter((x): x is string => Boolean(x));
      if (format !== 'peft-config') assert.equal(launch.length, 1, r.text);
      for (const line of [...launch, ...r.loadCommands]) calls.push(...runPrinted(line, work));
      for (const line of launch) {
        const argv = runPrinted(line, work)[0]!;
        assert.ok(argv.includes(r.out), `the config path is one argument: ${line}`);
      }
    }
  }
  assert.deepEqual(fs.readdirSync(work).filter((f) => f !== '.argv'), [], 'no injected command ran');
  assert.ok(!fs.existsSync(path.join(root, 'PWNED')) && !fs.existsSync(path.join(outDir, 'PWNED')));

  // The load commands: PEFT's Python sees both paths as string literals; vLLM, the converter and llama-cli get them as words.
  const vllm = calls.find((c) => c[0] === 'vllm')!;
  assert.deepEqual(vllm.slice(0, 5), ['vllm', 'serve', base, '--enable-lora', '--lora-modules']);
  assert.equal(vllm[5], `domlora=${adapter}`);
  const convert = calls.find((c) => c[0] === 'python' && c[1] === 'convert_lora_to_gguf.py')!;
  assert.deepEqual(convert.slice(1, 5), ['convert_lora_to_gguf.py', adapter, '--base', base]);
  const gguf = convert[convert.indexOf('--outfile') + 1]!;
  assert.equal(gguf, path.join(adapter, 'adapter-f16.gguf'));
  assert.deepEqual(calls.find((c) => c[0] === 'llama-cli'), ['llama-cli', '-m', 'BASE.gguf', '--lora', gguf]);
  const code = calls.find((c) => c[0] === 'python' && c[1] === '-c')![2]!;
  assert.deepEqual(pyLiterals(code).sort(), [adapter, base].sort());
});

test('export: a folder name with a newline is refused before anything is written, naming the reason', async () => {
  const root = tmpDir();
  const adapter = path.join(root, 'adapter\nrm -rf ~');
  makeAdapter(adapter, STORIES);
  const out = path.join(root, 'ax.yml');
  await assert.rejects(runExport({ adapterDir: adapter, format: 'axolotl', out, modelDir: STORIES }),
    (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && /cannot be printed in a shell command: it holds a newline/.test(e.message) && e.file === adapter);
  assert.ok(!fs.existsSync(out), 'nothing written');
  const outNl = path.join(root, 'x\ny.yml');
  makeAdapter(path.join(root, 'ok'), STORIES);
  await assert.rejects(runExport({ adapterDir: path.join(root, 'ok'), format: 'axolotl', out: outNl, modelDir: STORIES }), /it holds a newline/);
  assert.ok(!fs.existsSync(outNl));
  // The checks alone, with the placeholder, print for PowerShell where asked.
  const cfg = buildPeftConfig([candidateModules(openModelFolder(STORIES).cfg)[0]!], 5, 8, 16, 'C:\\Models\\it\'s');
  const ps = runtimeChecks(cfg, 'llama', [], { adapterDir: 'C:\\out dir', shell: 'powershell' }).loadCommands;
  assert.equal(ps[1], "vllm serve 'C:\\Models\\it''s' --enable-lora --lora-modules 'domlora=C:\\out dir'");
  assert.equal(ps[2], "python convert_lora_to_gguf.py 'C:\\out dir' --base 'C:\\Models\\it''s' --outtype f16 --outfile 'C:\\out dir\\adapter-f16.gguf'; llama-cli -m BASE.gguf --lora 'C:\\out dir\\adapter-f16.gguf'");
  // PowerShell hands the verbatim string to python with its doubled quotes made single; Python reads both paths back.
  const psCode = /^python -c '(.*)'$/.exec(ps[0]!)![1]!.replace(/''/g, "'");
  assert.deepEqual(pyLiterals(psCode).sort(), ['C:\\Models\\it\'s', 'C:\\out dir'].sort());
});
