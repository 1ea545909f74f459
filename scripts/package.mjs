#!/usr/bin/env node
// Packages the extension as .vsix files, as VS Code's platform-specific extensions have it:
//   node scripts/package.mjs                    the universal package: wasm only, no GPU binaries (any platform)
//   node scripts/package.mjs --target linux-x64 one platform package: the GPU path with only that platform's Dawn
//   node scripts/package.mjs --all              the universal package and every platform package
// Options: --out DIR (default vsix/), --no-build (package dist/ as it is).
// The `webgpu` package ships Dawn (dawn.node) for five platforms, about 130 MB together; a platform package keeps
// one. What goes in is .vscodeignore with its "GPU path" section replaced per target (see gpuSection below).
// Prints one line per package: its path, target and size.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * VS Code's targets and the folder of node_modules/webgpu/dist that serves each: webgpu's index.js loads
 * dist/<platform>-<arch>/dawn.node, and one universal (x64 + arm64) binary on macOS. Dawn has no build for
 * linux-armhf or Alpine (musl), so those platforms get the universal package.
 */
export const TARGETS = {
  'linux-x64': 'linux-x64',
  'linux-arm64': 'linux-arm64',
  'win32-x64': 'win32-x64',
  'win32-arm64': 'win32-arm64',
  'darwin-x64': 'darwin-universal',
  'darwin-arm64': 'darwin-universal',
};

const START = '# --- GPU path';
const END = '# --- end of the GPU path ---';

/** The lines that replace .vscodeignore's GPU section for a target: keep only its Dawn and the tfjs node bundle. */
export function gpuSection(target) {
  const dawn = TARGETS[target];
  if (!dawn) throw new Error(`unknown target "${target}": use one of ${Object.keys(TARGETS).join(', ')}`);
  return [
    `${START} (${target}): webgpu with only dist/${dawn}/, and tfjs-backend-webgpu's node bundle.`,
    'node_modules/webgpu/dist/**',
    `!node_modules/webgpu/dist/${dawn}/**`,
    '!node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.node.js',
    END,
  ].join('\n');
}

/** .vscodeignore for a target (undefined: the universal package, the file as it is). */
export function ignoreFileText(target) {
  const text = fs.readFileSync(path.join(root, '.vscodeignore'), 'utf8');
  if (!target) return text;
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  if (start < 0 || end < start) throw new Error(`.vscodeignore has no "${START}" … "${END}" section for scripts/package.mjs to replace`);
  return `${text.slice(0, start)}${gpuSection(target)}${text.slice(end + END.length)}`;
}

export function vsixName(target) {
  const { name, version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  return `${name}-${target ? `${target}-` : ''}${version}.vsix`;
}

/** Packages one target (undefined: universal) into outDir; returns the .vsix path. */
export function packageTarget(target, outDir) {
  if (target) {
    const dawn = path.join(root, 'node_modules/webgpu/dist', TARGETS[target] ?? '?', 'dawn.node');
    if (TARGETS[target] && !fs.existsSync(dawn)) throw new Error(`${dawn} is missing: run npm ci (webgpu is an optional dependency) before packaging ${target}`);
  }
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-package-'));
  try {
    const ignoreFile = path.join(tmp, 'vscodeignore');
    fs.writeFileSync(ignoreFile, ignoreFileText(target));
    const out = path.join(outDir, vsixName(target));
    const args = ['package', '--ignoreFile', ignoreFile, '-o', out, ...(target ? ['--target', target] : [])];
    execFileSync(path.join(root, 'node_modules/.bin/vsce'), args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
    return out;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function parseArgs(argv) {
  const opts = { targets: [undefined], out: path.join(root, 'vsix'), build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--all') opts.targets = [undefined, ...Object.keys(TARGETS)];
    else if (a === '--target' || a.startsWith('--target=')) {
      const t = value();
      if (!TARGETS[t]) throw new Error(`unknown target "${t}": use one of ${Object.keys(TARGETS).join(', ')}, or --all`);
      opts.targets = [t];
    } else if (a === '--out' || a.startsWith('--out=')) opts.out = path.resolve(value());
    else if (a === '--no-build') opts.build = false;
    else throw new Error(`unknown option ${a}: use [--target ${Object.keys(TARGETS).join('|')} | --all] [--out DIR] [--no-build]`);
  }
  return opts;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const opts = parseArgs(process.argv.slice(2));
    if (opts.build) execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'inherit' });
    for (const t of opts.targets) {
      const file = packageTarget(t, opts.out);
      const mb = (fs.statSync(file).size / 1024 ** 2).toFixed(1);
      process.stdout.write(`${path.relative(process.cwd(), file) || file}\t${t ?? 'universal'}\t${mb} MB\n`);
    }
  } catch (err) {
    process.stderr.write(`package: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
