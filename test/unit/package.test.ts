// The packaged extension (issue #14, #12 item 8): scripts/package.mjs makes a universal .vsix (wasm only) and one per
// platform with only that platform's Dawn. Each package is made for real and read back: what must be inside, what
// must not, its size, its manifest; then the CLI runs from the extracted packages, as VS Code would install them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { STORIES, tmpDir } from '../helpers/reference';
import { extractZip, readEntry, zipEntries, type ZipEntry } from '../helpers/zip';

const root = process.cwd();
const out = tmpDir('domlora-vsix-');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
const MB = 1024 ** 2;

function packageFor(target?: string): string {
  execFileSync(process.execPath, ['scripts/package.mjs', '--no-build', '--out', out, ...(target ? ['--target', target] : [])],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  const file = path.join(out, `domlora-${target ? `${target}-` : ''}${pkg.version}.vsix`);
  assert.ok(fs.existsSync(file), `${file} written`);
  return file;
}

function names(entries: ZipEntry[]): string[] {
  return entries.map((e) => e.name);
}

function manifest(file: string, entries: ZipEntry[]): string {
  return readEntry(file, entries.find((e) => e.name === 'extension.vsixmanifest')!).toString('utf8');
}

/** What every package carries: the bundles, the webview assets, the licence, tfjs with its wasm binaries (once). */
function checkCommon(file: string, entries: ZipEntry[]): void {
  const n = new Set(names(entries));
  for (const f of ['extension/package.json', 'extension/readme.md', 'extension/LICENSE.txt', 'extension/dist/extension.js',
    'extension/dist/worker.js', 'extension/dist/cli.js', 'extension/dist/webview.js', 'extension/dist/vscode-elements.js',
    'extension/dist/codicon.ttf', 'extension/media/heatmap.css',
    'extension/node_modules/@tensorflow/tfjs-core/dist/tf-core.node.js',
    'extension/node_modules/@tensorflow/tfjs-backend-cpu/dist/tf-backend-cpu.node.js',
    'extension/node_modules/@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.node.js',
    'extension/node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm',
    'extension/node_modules/@huggingface/tokenizers/package.json', 'extension/node_modules/seedrandom/lib/alea.js']) {
    assert.ok(n.has(f), `${path.basename(file)} carries ${f}`);
  }
  const wasm = [...n].filter((f) => f.endsWith('.wasm'));
  assert.equal(wasm.length, 3, `the three tfjs .wasm files once each (${wasm.join(', ')})`);
  const forbidden: [RegExp, string][] = [
    [/\.map$/, 'source maps'], [/\.ts$/, 'TypeScript sources and declarations'], [/^extension\/(src|test|scripts|webview|docs|out)\//, 'sources, tests, docs'],
    [/\/wasm-out\//, 'tfjs-backend-wasm\'s wasm-out/ (the same .wasm again)'], [/\/coverage\//, 'coverage reports'],
    [/\/\.nyc_output\//, '.nyc_output'], [/node_modules\/@types\//, '@types'], [/node_modules\/(debug|ms|@webgpu)\//, 'webgpu\'s build-time dependencies'],
    [/node_modules\/webgpu\/build\//, 'webgpu\'s build scripts'], [/node_modules\/@tensorflow\/[^/]+\/dist\/(?!tf-[a-z-]+\.node\.js$|tfjs-backend-wasm[a-z-]*\.wasm$)/, 'tfjs builds other than the node bundles'],
    [/(^|\/)__MACOSX\/|(^|\/)\._[^/]+$/, 'macOS resource forks (they carry extended attributes such as com.apple.quarantine)'],
    [/\/\.vscode-test\/|\.vsix$/, 'test installs and packages'],
  ];
  for (const [re, what] of forbidden) {
    const hits = [...n].filter((f) => re.test(f));
    assert.deepEqual(hits, [], `${path.basename(file)} leaves out ${what}`);
  }
  const m = manifest(file, entries);
  assert.match(m, /<License>extension\/LICENSE\.txt<\/License>/, 'the manifest names the licence');
  assert.match(m, /Microsoft\.VisualStudio\.Services\.Links\.Source"\s+Value="https:\/\/github\.com\/domlora\/domlora\.git"/, 'the manifest has the repository');
}

function cli(dir: string, args: string[]) {
  const env = { ...process.env };
  delete env.DOMLORA_BACKEND;
  delete env.NODE_PATH;
  return spawnSync(process.execPath, [path.join(dir, 'extension/dist/cli.js'), ...args], { encoding: 'utf8', env, timeout: 240_000 });
}

const data = path.join(out, 'd.jsonl');
fs.writeFileSync(data, `${JSON.stringify({ text: 'Once upon a time, there was a little girl named Lily.' })}\n`);

test('every Dawn build of the webgpu package has a target, and every target a Dawn build', () => {
  const targets = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e',
    'import("./scripts/package.mjs").then((m) => console.log(JSON.stringify(m.TARGETS)))'], { cwd: root, encoding: 'utf8' })) as Record<string, string>;
  const dist = path.join(root, 'node_modules/webgpu/dist');
  const folders = fs.readdirSync(dist).sort();
  assert.deepEqual([...new Set(Object.values(targets))].sort(), folders, 'the targets cover exactly the Dawn builds');
  for (const f of folders) assert.ok(fs.statSync(path.join(dist, f, 'dawn.node')).size > 5 * MB, `${f}/dawn.node`);
  assert.deepEqual(Object.keys(targets).sort(), ['darwin-arm64', 'darwin-x64', 'linux-arm64', 'linux-x64', 'win32-arm64', 'win32-x64']);
  const bad = spawnSync(process.execPath, ['scripts/package.mjs', '--no-build', '--target', 'linux-armhf'], { cwd: root, encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /unknown target "linux-armhf": use one of linux-x64, .*darwin-arm64, or --all/);
});

test('the universal package: wasm only, no GPU binaries, small; the CLI runs from it on wasm and says webgpu is not there', () => {
  const file = packageFor();
  const entries = zipEntries(file);
  checkCommon(file, entries);
  const n = names(entries);
  assert.deepEqual(n.filter((f) => /node_modules\/(webgpu|@tensorflow\/tfjs-backend-webgpu)\//.test(f)), [], 'no GPU path');
  assert.doesNotMatch(manifest(file, entries), /TargetPlatform/);
  const size = fs.statSync(file).size;
  assert.ok(size < 2 * MB, `universal package ${(size / MB).toFixed(2)} MB < 2 MB`);
  const dir = path.join(out, 'universal');
  extractZip(file, dir);
  const r = cli(dir, ['eval', STORIES, '--data', data, '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()!).backend, 'wasm');
  assert.match(r.stderr, /webgpu: not installed/);
});

test('linux-x64: the GPU path with only its own Dawn; the CLI runs from it on webgpu (lavapipe here) and agrees with wasm', () => {
  const file = packageFor('linux-x64');
  const entries = zipEntries(file);
  checkCommon(file, entries);
  const n = names(entries);
  const gpu = n.filter((f) => /node_modules\/(webgpu|@tensorflow\/tfjs-backend-webgpu)\//.test(f)).sort();
  assert.deepEqual(gpu.filter((f) => !/\/(README\.md|LICENSE(\.md)?)$/.test(f)), [
    'extension/node_modules/@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.node.js',
    'extension/node_modules/@tensorflow/tfjs-backend-webgpu/package.json',
    'extension/node_modules/webgpu/dist/linux-x64/dawn.node',
    'extension/node_modules/webgpu/index.js',
    'extension/node_modules/webgpu/package.json',
  ]);
  assert.ok(n.includes('extension/node_modules/webgpu/LICENSE.md'), 'Dawn\'s licence travels with it');
  assert.match(manifest(file, entries), /TargetPlatform="linux-x64"/);
  const size = fs.statSync(file).size;
  assert.ok(size > 5 * MB && size < 10 * MB, `linux-x64 package ${(size / MB).toFixed(2)} MB, between 5 and 10 MB`);
  const dir = path.join(out, 'linux-x64');
  extractZip(file, dir);
  const g = cli(dir, ['eval', STORIES, '--data', data, '--backend', 'webgpu', '--json']);
  assert.equal(g.status, 0, g.stderr);
  const onGpu = JSON.parse(g.stdout.trim().split('\n').pop()!);
  assert.equal(onGpu.backend, 'webgpu');
  const w = cli(dir, ['eval', STORIES, '--data', data, '--backend', 'wasm', '--json']);
  assert.equal(w.status, 0, w.stderr);
  const onWasm = JSON.parse(w.stdout.trim().split('\n').pop()!);
  assert.ok(Math.abs(onGpu.meanLoss - onWasm.meanLoss) < 1e-4, `webgpu ${onGpu.meanLoss} vs wasm ${onWasm.meanLoss}`);
});

test('win32-x64 and darwin-arm64: their own Dawn (with the DirectX compilers on Windows), no other platform\'s, no macOS attributes', () => {
  for (const [target, folder, extra, maxMb] of [
    ['win32-x64', 'win32-x64', ['d3dcompiler_47.dll', 'dxcompiler.dll', 'dxcompiler-LICENSE.TXT', 'dxcompiler-ThirdPartyNotices.txt'], 18],
    ['darwin-arm64', 'darwin-universal', [], 9],
  ] as const) {
    const file = packageFor(target);
    const entries = zipEntries(file);
    checkCommon(file, entries);
    const dawn = names(entries).filter((f) => f.includes('node_modules/webgpu/dist/')).sort();
    assert.deepEqual(dawn, ['dawn.node', ...extra].map((f) => `extension/node_modules/webgpu/dist/${folder}/${f}`).sort(), `${target}: only its own Dawn`);
    assert.match(manifest(file, entries), new RegExp(`TargetPlatform="${target}"`));
    // A zip entry's extra field is where an archiver would keep extended attributes; these have none.
    const withExtra = entries.filter((e) => e.extraLength > 0).map((e) => e.name);
    assert.deepEqual(withExtra, [], `${target}: no entry carries extra attributes`);
    const size = fs.statSync(file).size;
    assert.ok(size > 5 * MB && size < maxMb * MB, `${target} package ${(size / MB).toFixed(2)} MB < ${maxMb} MB`);
  }
});
