#!/usr/bin/env node
// The end-to-end driver: a real VS Code (code-server 4.100.3, installed by setup-code-server.sh) driven by Debian's
// chromium through playwright-core, on fixture workspaces made here with a small real model and datasets.
//   1. builds, packages the extension (.vsix, cached by content) and installs it into a throwaway extensions dir;
//   2. starts ONE code-server in its own process group (killed at the end, see vscode-testing.md pitfall 8);
//   3. runs the extension-host mocha suite (out/test/host) through the `payload` URL in one window;
//   4. runs the user journeys in a second window, against the installed .vsix, saving screenshots to test-results/.
// Prints one line per test, then `N passed, M failed`, and exits non-zero on any failure.
// Flags: --host-only, --ui-only, --no-build, --keep (keep the temp folder), --only=<substring of a journey name>.
import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = new Set(process.argv.slice(2));
const only = [...args].find((a) => a.startsWith('--only='))?.slice(7);
const CS_VERSION = '4.100.3';
const codeServer = path.join(root, '.vscode-test', `code-server-${CS_VERSION}`, 'node_modules', '.bin', 'code-server');
const resultsDir = path.join(root, 'test-results');
const t0 = Date.now();
const results = [];
const log = (s) => process.stdout.write(`${s}\n`);
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- Build and package ------------------------------------------------------------------------------------------

function build() {
  if (args.has('--no-build')) return;
  execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'inherit' });
}

function hashTree(h, p) {
  if (!fs.existsSync(p)) return;
  if (fs.statSync(p).isDirectory()) {
    for (const f of fs.readdirSync(p).sort()) hashTree(h, path.join(p, f));
  } else if (!p.endsWith('.map')) {
    h.update(p);
    h.update(fs.readFileSync(p));
  }
}

/**
 * Packages the extension as the user on this machine would get it: the linux-x64 platform package (with its Dawn, so
 * the webgpu journey runs the packaged GPU path), once per distinct content of what goes into it.
 */
function packageVsix() {
  const h = crypto.createHash('sha256');
  for (const p of ['package.json', 'package-lock.json', '.vscodeignore', 'LICENSE', 'README.md', 'scripts/package.mjs', 'dist', 'media']) hashTree(h, path.join(root, p));
  const dir = path.join(root, '.vscode-test');
  const vsix = path.join(dir, `domlora-linux-x64-${h.digest('hex').slice(0, 12)}.vsix`);
  if (!fs.existsSync(vsix)) {
    for (const f of fs.readdirSync(dir)) if (/^domlora-.*\.vsix$/.test(f)) fs.rmSync(path.join(dir, f));
    const staging = fs.mkdtempSync(path.join(dir, 'package-'));
    try {
      execFileSync(process.execPath, [path.join(root, 'scripts/package.mjs'), '--no-build', '--target', 'linux-x64', '--out', staging],
        { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
      const [made] = fs.readdirSync(staging).filter((f) => f.endsWith('.vsix'));
      fs.renameSync(path.join(staging, made), vsix);
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
  return vsix;
}

// ---- Fixtures ---------------------------------------------------------------------------------------------------

function write(file, text) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

/** A small real model folder and a dataset: the CLI's deterministic demo model, else stories260K from test/fixtures. */
function makeBaseFixture(tmp) {
  const base = path.join(tmp, 'base');
  const model = path.join(base, 'model');
  const data = path.join(base, 'arith.jsonl');
  try {
    execFileSync(process.execPath, [path.join(root, 'dist/cli.js'), 'make-demo-model', model, '--data', data], { stdio: 'ignore' });
  } catch {
    fs.cpSync(path.join(root, 'test/fixtures/models/stories260K'), model, { recursive: true });
    const alpaca = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/data/instruction/alpaca_en_demo.json'), 'utf8'));
    fs.writeFileSync(data, alpaca.slice(0, 40).map((r) => JSON.stringify(r)).join('\n') + '\n');
  }
  return { model, data };
}

/** An 80-layer Llama with tiny matrices (the engine's synthetic model writer), to see the heatmap at depth. */
async function makeDeepModel(tmp, dir) {
  const out = path.join(tmp, 'synth.mjs');
  await esbuild.build({ entryPoints: [path.join(root, 'src/engine/hf/synth.ts')], bundle: true, platform: 'node', format: 'esm', outfile: out, logLevel: 'warning' });
  const synth = await import(out);
  await synth.writeSynthModel(dir, { ...synth.DEMO_SHAPE, hiddenSize: 32, intermediateSize: 64, layers: 80, heads: 4, kvHeads: 2, seed: 99 });
}

/**
 * A Hugging Face hub cache as huggingface_hub lays it out (test/helpers/hfcache.ts): the base model in two revisions
 * (the current one, refs/main, sharded), an interrupted download, a GGUF-only repository and an unsupported
 * architecture. code-server gets it as $HF_HUB_CACHE, so the extension host and its worker find it as a user's would.
 */
async function makeHfCache(tmp, base) {
  const out = path.join(tmp, 'hfcache.mjs');
  await esbuild.build({ entryPoints: [path.join(root, 'test/helpers/hfcache.ts')], bundle: true, platform: 'node', format: 'esm', outfile: out, logLevel: 'warning' });
  const h = await import(out);
  const cache = path.join(tmp, 'hf-home', 'hub');
  const [OLD, NEW, REV] = ['1111111', '2222222', '3333333'].map((p) => p.padEnd(40, p[0]));
  const old = h.addSnapshot(cache, 'domlora-demo/arith-tiny', OLD, h.folderFiles(base.model));
  h.touch(old, 3600);
  h.addSnapshot(cache, 'domlora-demo/arith-tiny', NEW, [...h.folderFiles(base.model, ['model.safetensors']), ...h.shardedWeights(base.model, 2)], ['main']);
  const shards = h.shardedWeights(base.model, 3);
  h.addSnapshot(cache, 'domlora-demo/broken-download', REV, [...h.folderFiles(base.model, ['model.safetensors']), shards[0], shards[1], shards[3],
    { ...shards[2], bytes: shards[2].bytes.subarray(0, 64), incomplete: true }], ['main']);
  h.addSnapshot(cache, 'TheBloke/arith-tiny-GGUF', REV, [{ name: 'README.md', bytes: '# GGUF\n' },
    { name: 'arith-tiny.Q8_0.gguf', bytes: Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(4092)]) }], ['main']);
  const t5 = h.safetensorsHeader([{ name: 'shared.weight', shape: [32128, 512] }], 'F32');
  h.addSnapshot(cache, 'google-t5/t5-small', REV, [{ name: 'config.json', bytes: JSON.stringify({ model_type: 't5', architectures: ['T5ForConditionalGeneration'] }) },
    { name: 'model.safetensors', bytes: t5.header, sparseSize: t5.size }, { name: 'tokenizer.json', bytes: '{}' }], ['main']);
  return cache;
}

/** Every path under `dir` with its kind, size and modification time: equal before and after means nothing was written. */
function treeState(dir) {
  const out = [];
  for (const f of fs.readdirSync(dir, { recursive: true }).sort()) {
    const st = fs.lstatSync(path.join(dir, f));
    out.push(`${f} ${st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : 'file'} ${st.size} ${st.mtimeMs}`);
  }
  return out.join('\n');
}

function makeWorkspace(dir, base, settings, models) {
  for (const m of models) fs.cpSync(base.model, path.join(dir, m), { recursive: true });
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.copyFileSync(base.data, path.join(dir, 'data', 'arith.jsonl'));
  // A long dataset (the same records twenty times) for jobs that must still be running when they are cancelled.
  const lines = fs.readFileSync(base.data, 'utf8').trim().split('\n');
  write(path.join(dir, 'data', 'big.jsonl'), `${Array.from({ length: 20 }, () => lines.join('\n')).join('\n')}\n`);
  // A dataset that breaks on its third line: the engine must name the file and the line.
  write(path.join(dir, 'data', 'bad.jsonl'), '{"question": "What is 1 plus 1?", "answer": "1 plus 1 is 2."}\n'
    + '{"question": "What is 2 plus 2?", "answer": "2 plus 2 is 4."}\n{"question": "What is 3 plus 3?", "answer": \n');
  // Another kind of data, for Compare Datasets: the fixtures' code instructions short enough that their answers start
  // within the workspaces' short --seq-len, as question/answer records (the Alpaca template alone would not fit).
  const code = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/data/code/code_alpaca_2k.json'), 'utf8'))
    .filter((r) => !r.input && r.instruction.length <= 40).slice(0, 48);
  write(path.join(dir, 'data', 'code.jsonl'), code.map((r) => JSON.stringify({ question: r.instruction, answer: r.output })).join('\n') + '\n');
  write(path.join(dir, 'notes', 'README.md'), '# Notes\n\nNot a model: no config.json here.\n');
  write(path.join(dir, '.vscode', 'settings.json'), JSON.stringify(settings, null, 2));
}

// ---- code-server ------------------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

async function startCodeServer(tmp, env) {
  const port = await freePort();
  const logFile = path.join(resultsDir, 'code-server.log');
  const fd = fs.openSync(logFile, 'w');
  const child = spawn(codeServer, [
    '--config', '/dev/null', '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`,
    '--user-data-dir', path.join(tmp, 'user-data'), '--extensions-dir', path.join(tmp, 'extensions'),
    '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override',
    '--ignore-last-opened',
  ], { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
  fs.closeSync(fd);
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) return { child, port, url };
    } catch { /* not up yet */ }
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`code-server did not start; see ${logFile}`);
}

function stopCodeServer(cs) {
  if (!cs) return;
  try { process.kill(-cs.child.pid, 'SIGTERM'); } catch { /* already gone */ }
}

// ---- Test bookkeeping -------------------------------------------------------------------------------------------

function record(name, ok, ms, error) {
  results.push({ name, ok, ms, error });
  log(`${ok ? 'PASS' : 'FAIL'} ${name} (${(ms / 1000).toFixed(1)} s)${ok ? '' : `\n     ${String(error).split('\n').join('\n     ')}`}`);
}

async function journey(page, name, fn) {
  if (only && !name.includes(only)) return;
  const start = Date.now();
  try {
    await fn();
    record(name, true, Date.now() - start);
  } catch (err) {
    record(name, false, Date.now() - start, err?.stack ?? err);
    const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase().slice(0, 60);
    await page.screenshot({ path: path.join(resultsDir, `FAIL-${slug}.png`) }).catch(() => {});
    await page.keyboard.press('Escape').catch(() => {});
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function waitFor(cond, ms, what, every = 100) {
  const start = Date.now();
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

// ---- The extension-host suite -----------------------------------------------------------------------------------

async function runHostSuite(browser, cs, ws, hostResults) {
  const start = Date.now();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  let exitCode;
  await page.exposeFunction('codeAutomationExit', (code) => { exitCode = code; });
  const remote = (p) => `vscode-remote://127.0.0.1:${cs.port}${p}`;
  const payload = [['extensionDevelopmentPath', remote(root)], ['extensionTestsPath', remote(path.join(root, 'out/test/host/index'))]];
  await page.goto(`${cs.url}/?folder=${encodeURIComponent(ws)}&payload=${encodeURIComponent(JSON.stringify(payload))}`);
  try {
    await waitFor(() => exitCode !== undefined, 8 * 60_000, 'the extension-host suite', 250);
  } catch (err) {
    record('extension-host suite', false, Date.now() - start, err);
  }
  await context.close();
  if (!fs.existsSync(hostResults)) {
    if (exitCode !== undefined) record('extension-host suite', false, Date.now() - start, `exit code ${exitCode} and no result file ${hostResults}`);
    return;
  }
  const { results: rs } = JSON.parse(fs.readFileSync(hostResults, 'utf8'));
  for (const r of rs) record(`host: ${r.title}`, r.state === 'passed', r.ms, r.error);
  if (exitCode !== 0 && rs.every((r) => r.state === 'passed')) record('extension-host suite', false, Date.now() - start, `exit code ${exitCode}`);
}

// ---- UI helpers -------------------------------------------------------------------------------------------------

function webview(page) {
  return page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
}

function statusItem(page) {
  return page.locator('.statusbar-item', { hasText: 'DomLoRA' }).first();
}

async function statusText(page) {
  return ((await statusItem(page).textContent({ timeout: 2000 }).catch(() => '')) ?? '').trim();
}

async function statusSpinning(page) {
  return (await statusItem(page).locator('.codicon-sync, .codicon-loading, [class*="spin"]').count().catch(() => 0)) > 0;
}

/** Records every distinct status bar text until stopped. */
function recordStatus(page) {
  const seen = [];
  let on = true;
  (async () => {
    while (on) {
      const t = await statusText(page);
      if (t && seen[seen.length - 1] !== t) seen.push(t);
      await sleep(120);
    }
  })();
  return { seen, stop: () => { on = false; return seen; } };
}

function explorerRow(page, name) {
  return page.locator('.explorer-folders-view .monaco-list-row', { hasText: new RegExp(`^${name}$`) }).first();
}

async function openContextMenu(page, folder) {
  // Another journey may have left the side bar on the DomLoRA view (the Models view): show the Explorer, as a user would.
  if (!(await page.locator('.explorer-folders-view').first().isVisible().catch(() => false))) {
    await runPaletteCommand(page, 'View: Show Explorer');
  }
  const row = explorerRow(page, folder);
  await row.waitFor({ state: 'visible', timeout: 30_000 });
  await row.click({ button: 'right' });
  await page.locator('.context-view .monaco-menu, .monaco-menu-container').first().waitFor({ state: 'visible', timeout: 5000 });
}

/** Right-click, hover, settle, click: an immediate click on a fresh context menu is flaky (pitfall 6). */
async function contextMenuItem(page, folder, item) {
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await openContextMenu(page, folder);
      const mi = page.getByRole('menuitem', { name: item });
      await mi.waitFor({ state: 'visible', timeout: 5000 });
      await mi.hover();
      await sleep(300);
      await mi.click();
      await sleep(200);
      if (!(await mi.isVisible().catch(() => false))) return;
    } catch (err) {
      lastErr = err;
    }
    await page.keyboard.press('Escape');
    await sleep(300);
  }
  throw lastErr ?? new Error(`could not click "${item}" in the context menu of ${folder}`);
}

async function quickPick(page, titlePart) {
  const widget = page.locator('.quick-input-widget');
  await widget.waitFor({ state: 'visible', timeout: 20_000 });
  if (titlePart) await page.locator('.quick-input-widget .quick-input-title', { hasText: titlePart }).waitFor({ timeout: 10_000 });
  return widget;
}

async function pickItem(page, filter, expectFirst) {
  const input = page.locator('.quick-input-widget .quick-input-box input');
  if (filter !== undefined) await input.fill(filter);
  const first = page.locator('.quick-input-widget .quick-input-list .monaco-list-row').first();
  await first.waitFor({ state: 'visible', timeout: 10_000 });
  if (expectFirst) await page.locator('.quick-input-widget .quick-input-list .monaco-list-row.focused', { hasText: expectFirst }).first().waitFor({ timeout: 10_000 });
  await sleep(250);
  await input.press('Enter');
}

/** Runs a command from the palette, clicking the row whose label is exactly `title` (not just the focused one). */
async function runPaletteCommand(page, title) {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget .quick-input-box input');
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(`>${title}`);
  const rows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
  const row = await waitFor(async () => {
    const n = await rows.count();
    for (let i = 0; i < n; i++) {
      const label = ((await rows.nth(i).locator('.label-name').first().textContent().catch(() => '')) ?? '').trim();
      if (label === title) return rows.nth(i);
    }
    return undefined;
  }, 10_000, `the command "${title}" in the palette`);
  await sleep(150);
  await row.click();
}

function notification(page, text) {
  return page.locator('.notification-toast', { hasText: text }).first();
}

/**
 * Clears the toasts a journey before left, so that a journey's checks see only its own: the command again until none
 * shows (it once left an error toast of the previous journey, which the next one then took for its own failure). A
 * running job's progress toast cannot be cleared: after three tries the journey goes on.
 */
async function clearNotifications(page) {
  const toasts = page.locator('.notification-toast');
  for (let i = 0; i < 3; i++) {
    await runPaletteCommand(page, 'Notifications: Clear All Notifications').catch(() => {});
    if (await waitFor(async () => (await toasts.count()) === 0, 2000, 'the toasts to clear').then(() => true, () => false)) return;
  }
}

function listDir(dir) {
  try { return fs.readdirSync(dir).sort(); } catch { return []; }
}

async function shot(page, name, locator) {
  const file = path.join(resultsDir, name);
  await sleep(400); // let notification toasts finish fading in
  if (locator) await locator.screenshot({ path: file });
  else await page.screenshot({ path: file });
}

function shortModule(name) {
  const m = /layers\.(\d+)\..*?([A-Za-z0-9_]+)$/.exec(name);
  return m ? `layer ${m[1]} · ${m[2]}` : name;
}

// ---- The user journeys ------------------------------------------------------------------------------------------

async function runJourneys(browser, cs, ws, hfCache) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 960 } });
  const page = await context.newPage();
  // Errors from our webview: CSP violations ("Refused to ...") and exceptions in its scripts.
  const webviewErrors = [];
  page.on('console', (m) => {
    const t = m.text();
    const url = m.location()?.url ?? '';
    if (m.type() === 'error' && (/Refused to/.test(t) || /webview\.js|vscode-elements\.js|heatmap\.css|codicon/.test(`${t} ${url}`))) webviewErrors.push(t);
  });
  page.on('pageerror', (e) => { if (/webview\.js|vscode-elements/.test(e.stack ?? '')) webviewErrors.push(e.message); });
  await page.goto(`${cs.url}/?folder=${encodeURIComponent(ws)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  await explorerRow(page, 'tiny').waitFor({ timeout: 60_000 });
  const dataDir = path.join(ws, '.domlora', 'tiny');
  const reports = () => listDir(dataDir).filter((f) => /^probe-.*\.json$/.test(f));
  let report;
  const frame = webview(page);

  await journey(page, 'probe from the Explorer context menu: heatmap, dominant cell, status bar progress then idle', async () => {
    await waitFor(async () => /DomLoRA/.test(await statusText(page)), 60_000, 'the DomLoRA status bar item (activation)');
    const rec = recordStatus(page);
    await contextMenuItem(page, 'tiny', 'Run PAGE Probe');
    await quickPick(page, 'dataset');
    await shot(page, '01-dataset-picker.png');
    await pickItem(page, 'arith');
    await frame.locator('#heatmap').waitFor({ state: 'visible', timeout: 180_000 });
    await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'the status bar to return to idle');
    const seen = rec.stop();
    const files = reports();
    assert(files.length === 1, `one report written, found ${files.join(', ')}`);
    report = JSON.parse(fs.readFileSync(path.join(dataDir, files[0]), 'utf8'));
    const rows = await frame.locator('#heatmap .row').count();
    const cols = await frame.locator('#heatmap .colhead:not(.sum)').count();
    const cells = await frame.locator('#heatmap .cell[data-name]').count();
    assert(rows === report.model.layers, `rows ${rows} = layers ${report.model.layers}`);
    assert(cols === report.kinds.length, `columns ${cols} = kinds ${report.kinds.length}`);
    assert(cells === report.modules.length, `cells ${cells} = modules ${report.modules.length}`);
    const dom = frame.locator('#heatmap .cell.dominant');
    assert(await dom.count() === 1, 'exactly one dominant cell');
    assert(await dom.getAttribute('data-name') === report.dominant.name, 'the dominant cell is the report\'s dominant module');
    assert(await dom.locator('.codicon-star-full').count() === 1, 'the dominant cell carries a star');
    assert(seen.some((t) => /DomLoRA: probe \d+\/\d+/.test(t)), `status bar showed probe progress (saw: ${seen.join(' | ')})`);
    assert(seen.some((t) => /ETA \d+:\d\d/.test(t)), 'status bar showed an ETA');
    const header = await frame.locator('header').textContent();
    assert(header.includes('tiny') && header.includes('arith.jsonl'), 'header names the model and the dataset');
    const summary = await frame.locator('.dominant-card').textContent();
    assert(summary.includes(shortModule(report.dominant.name)) && /resamples/.test(summary), 'dominant card with stability');
    await dom.hover();
    await frame.locator('#tip:not([hidden])').waitFor({ timeout: 5000 });
    const tip = await frame.locator('#tip').textContent();
    assert(tip.includes(report.dominant.name) && tip.includes('expected PAGE') && tip.includes('sampled PAGE') && tip.includes('params'), 'tooltip details');
    await shot(page, '02-heatmap-probe-done.png');
    await shot(page, '03-heatmap-panel-dark.png', page.locator('iframe.webview.ready'));
  });

  let placed;
  await journey(page, 'click another cell, placement changes; keyboard moves and places', async () => {
    assert(report, 'needs the probe journey');
    placed = report.modules.find((m) => m.rank === 2);
    await frame.locator(`#heatmap .cell[data-name="${placed.name}"]`).click();
    await waitFor(async () => (await frame.locator('#heatmap .cell.placed').getAttribute('data-name').catch(() => '')) === placed.name, 5000, 'the placement mark to move');
    assert((await frame.locator('#placement-value').textContent()).includes(shortModule(placed.name)), 'the placement card names the module');
    assert(await frame.locator('#heatmap .cell.placed .codicon-pinned').count() === 1, 'the placed cell carries a pin');
    // Keyboard: the clicked cell has focus; an arrow moves focus, Enter places, the other arrow and Space return.
    const k = report.kinds.indexOf(placed.kind);
    const dk = k + 1 < report.kinds.length ? 1 : -1;
    await page.keyboard.press(dk > 0 ? 'ArrowRight' : 'ArrowLeft');
    await page.keyboard.press('Enter');
    const neighbour = report.modules.find((m) => m.layer === placed.layer && m.kind === report.kinds[k + dk]);
    await waitFor(async () => (await frame.locator('#heatmap .cell.placed').getAttribute('data-name').catch(() => '')) === neighbour.name, 5000, 'Enter to place at the neighbour');
    await page.keyboard.press(dk > 0 ? 'ArrowLeft' : 'ArrowRight');
    await page.keyboard.press(' ');
    await waitFor(async () => (await frame.locator('#heatmap .cell.placed').getAttribute('data-name').catch(() => '')) === placed.name, 5000, 'Space to place back');
    await shot(page, '04-placement-moved.png', page.locator('iframe.webview.ready'));
  });

  await journey(page, 'Train DomLoRA from the panel: live loss curve grows, PEFT adapter folder appears', async () => {
    assert(placed, 'needs the placement journey');
    await clearNotifications(page);
    const rec = recordStatus(page);
    await frame.locator('vscode-button#train-domlora').click();
    const chart = frame.locator('#chart-domlora svg.loss-chart');
    const counts = [];
    let midShot = false;
    await waitFor(async () => {
      const n = Number(await chart.getAttribute('data-train-points', { timeout: 1000 }).catch(() => 0));
      if (n && counts[counts.length - 1] !== n) counts.push(n);
      if (!midShot && n >= 3) { midShot = true; await shot(page, '05-training-live.png'); }
      return (await frame.locator('.run-card[data-preset="domlora"][data-status="done"]').count()) > 0;
    }, 240_000, 'DomLoRA training to finish', 150);
    const seen = rec.stop();
    assert(counts.length >= 2 && counts[counts.length - 1] > counts[0], `the loss curve grew while training (points seen: ${counts.join(', ')})`);
    assert(seen.some((t) => /DomLoRA: train \d+\/\d+ · loss \d/.test(t)), `status bar showed training progress (saw: ${seen.slice(0, 8).join(' | ')})`);
    const adapters = listDir(dataDir).filter((f) => /^adapter-domlora-/.test(f));
    assert(adapters.length === 1, `one adapter folder, found ${adapters.join(', ')}`);
    const dir = path.join(dataDir, adapters[0]);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert(cfg.peft_type === 'LORA', 'adapter_config.json says LORA');
    assert(JSON.stringify(cfg).includes(placed.kind), 'the adapter targets the placed module kind');
    assert(fs.statSync(path.join(dir, 'adapter_model.safetensors')).size > 0, 'adapter_model.safetensors written');
    const params = await frame.locator('.run-card[data-preset="domlora"] .stat.params dd').textContent();
    assert(params.replace(/,/g, '') === String(placed.adapterParams), `trainable params ${params} = ${placed.adapterParams}`);
    await page.mouse.move(5, 500);
    await shot(page, '06-domlora-trained.png', page.locator('iframe.webview.ready'));
  });

  await journey(page, 'Train vanilla LoRA: both runs side by side with parameter counts', async () => {
    await frame.locator('vscode-button#train-vanilla').click();
    await frame.locator('.run-card[data-preset="vanilla"][data-status="done"]').waitFor({ timeout: 300_000 });
    const cmp = frame.locator('#compare');
    await cmp.waitFor({ timeout: 10_000 });
    const text = await cmp.textContent();
    const vanilla = report.modules.reduce((s, m) => s + m.adapterParams, 0);
    assert(text.includes(placed.adapterParams.toLocaleString('en-US')) && text.includes(vanilla.toLocaleString('en-US')), `comparison shows both parameter counts (${text})`);
    await frame.locator('#compare').scrollIntoViewIfNeeded();
    await page.mouse.move(5, 500);
    await shot(page, '07-side-by-side.png', page.locator('iframe.webview.ready'));
  });

  await journey(page, 'cancel a running probe: status bar returns to idle, no report written', async () => {
    await clearNotifications(page);
    const before = reports();
    // A bigger probe, so there is time to cancel it: a setting change, as a user would make it.
    const wsSettings = path.join(ws, '.vscode', 'settings.json');
    const original = fs.readFileSync(wsSettings, 'utf8');
    fs.writeFileSync(wsSettings, JSON.stringify({ ...JSON.parse(original), 'domlora.samples': 1000 }, null, 2));
    try {
      await sleep(1200);
      await contextMenuItem(page, 'tiny', 'Run PAGE Probe');
      await quickPick(page, 'dataset');
      // The remembered dataset comes first; the long one is picked, so the probe is surely still running.
      await page.locator('.quick-input-widget .quick-input-list .monaco-list-row.focused', { hasText: 'arith.jsonl' }).first().waitFor({ timeout: 10_000 });
      await pickItem(page, 'big.jsonl', 'big.jsonl');
      await waitFor(async () => /DomLoRA: (probe \d|tokenize|load)/.test(await statusText(page)), 60_000, 'the probe to start');
      const toast = notification(page, 'PAGE probe of tiny');
      let cancelled = false;
      try {
        await toast.waitFor({ timeout: 5000 });
        await toast.hover();
        await toast.getByRole('button', { name: 'Cancel' }).click({ timeout: 3000 });
        cancelled = true;
      } catch {
        await runPaletteCommand(page, 'DomLoRA: Cancel');
        cancelled = true;
      }
      assert(cancelled, 'cancel clicked');
      await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'idle after cancel');
      await notification(page, 'was cancelled. Nothing was written.').waitFor({ timeout: 10_000 });
      await shot(page, '08-probe-cancelled.png');
      await sleep(500);
      assert(JSON.stringify(reports()) === JSON.stringify(before), `no new report (before ${before}, after ${reports()})`);
      assert(!listDir(dataDir).some((f) => f.endsWith('.tmp')), 'no temporary file left');
    } finally {
      fs.writeFileSync(wsSettings, original);
      await sleep(800);
    }
  });

  await journey(page, 'a folder without config.json: not offered in the menu; from the palette, a clear message, nothing written', async () => {
    await clearNotifications(page);
    await openContextMenu(page, 'notes');
    await sleep(500);
    const offered = await page.getByRole('menuitem', { name: 'Run PAGE Probe' }).count();
    await page.keyboard.press('Escape');
    assert(offered === 0, 'Run PAGE Probe is not offered for a folder without config.json');
    await runPaletteCommand(page, 'DomLoRA: Run PAGE Probe');
    await quickPick(page, 'model to probe');
    await pickItem(page, 'Choose a folder');
    // VS Code's own folder dialog (the simple file dialog, in the browser): type the path and accept.
    const input = page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor({ state: 'visible', timeout: 10_000 });
    await sleep(300);
    await input.fill(path.join(ws, 'notes') + '/');
    await sleep(600);
    await page.locator('.quick-input-widget .monaco-button', { hasText: 'Use this model' }).first().click();
    await notification(page, 'is not a model folder').waitFor({ timeout: 15_000 });
    const msg = await notification(page, 'is not a model folder').textContent();
    assert(/"notes" is not a model folder: it has no config\.json/.test(msg), `clear message (${msg})`);
    await shot(page, '09-not-a-model.png');
    assert(!fs.existsSync(path.join(ws, '.domlora', 'notes')), 'nothing written for notes');
  });

  await journey(page, 'a malformed dataset: a clear message naming the file, nothing written', async () => {
    await clearNotifications(page);
    const before = listDir(dataDir);
    await contextMenuItem(page, 'tiny', 'Run PAGE Probe');
    await quickPick(page, 'dataset');
    await pickItem(page, 'bad.jsonl');
    const toast = notification(page, 'bad.jsonl');
    await toast.waitFor({ timeout: 90_000 });
    const msg = await toast.textContent();
    assert(/line|JSON|parse/i.test(msg), `the message explains what is wrong (${msg})`);
    await shot(page, '10-malformed-dataset.png');
    await waitFor(async () => /DomLoRA: wasm/.test(await statusText(page)), 20_000, 'idle');
    assert(JSON.stringify(listDir(dataDir)) === JSON.stringify(before), 'nothing written');
  });

  await journey(page, 'the panel survives being hidden and restored, placement remembered', async () => {
    await clearNotifications(page);
    await runPaletteCommand(page, 'View: Close All Editors');
    await sleep(800);
    await statusItem(page).click(); // idle: shows the heatmap of the last model
    await frame.locator('#heatmap').waitFor({ timeout: 20_000 });
    const placedNow = await frame.locator('#heatmap .cell.placed').getAttribute('data-name');
    assert(placedNow === placed.name, `placement remembered (${placedNow})`);
    // Hide it behind another editor and bring it back: the webview is rebuilt from setState and the host's data.
    await page.keyboard.press('Control+n');
    await sleep(800);
    await page.keyboard.press('Control+PageUp');
    await frame.locator('#heatmap .cell.placed').waitFor({ timeout: 20_000 });
    assert(await frame.locator('#heatmap .cell.placed').getAttribute('data-name') === placed.name, 'placement after restore');
  });

  /** The journeys below can run alone (--only): they probe tiny on arith first when no journey has. */
  async function ensureTinyHeatmap() {
    await waitFor(async () => /DomLoRA/.test(await statusText(page)), 60_000, 'the DomLoRA status bar item (activation)');
    if (!reports().length) {
      await contextMenuItem(page, 'tiny', 'Run PAGE Probe');
      await quickPick(page, 'dataset');
      await pickItem(page, 'arith');
      await waitFor(async () => reports().length > 0, 180_000, 'the probe of tiny');
      await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'idle after the probe');
    }
    // Only tiny's panel open, so the webview locator finds one frame.
    const tabs = await page.locator('.tabs-container .tab').allTextContents();
    if (tabs.length !== 1 || !tabs[0].includes('PAGE · tiny')) {
      // Keys go to the webview while it has the focus: the side bar's title takes it back, so F1 opens the palette.
      await page.locator('.part.sidebar .composite.title').first().click();
      await runPaletteCommand(page, 'View: Close All Editors');
      await sleep(800);
      await contextMenuItem(page, 'tiny', 'Show PAGE Heatmap');
    }
    await frame.locator('#heatmap').waitFor({ state: 'visible', timeout: 60_000 });
    return JSON.parse(fs.readFileSync(path.join(dataDir, reports().at(-1)), 'utf8'));
  }

  await journey(page, 'Check placement from the panel: placement k of n, a bar per placement with error bars, vanilla as a line; keyboard opens an adapter', async () => {
    await clearNotifications(page);
    const shown = await ensureTinyHeatmap();
    // A short budget, so the check of six placements over three seeds stays quick: a setting, as a user would change it.
    const wsSettings = path.join(ws, '.vscode', 'settings.json');
    const original = fs.readFileSync(wsSettings, 'utf8');
    fs.writeFileSync(wsSettings, JSON.stringify({ ...JSON.parse(original), 'domlora.steps': 4 }, null, 2));
    const checksBefore = listDir(dataDir).filter((f) => /^check-/.test(f));
    try {
      await sleep(1200);
      const rec = recordStatus(page);
      await frame.locator('vscode-button#check-placement').click();
      await quickPick(page, 'check the placement of tiny');
      await pickItem(page, 'Three seeds', 'Three seeds');
      const progress = [];
      let midShot = false;
      await waitFor(async () => {
        const st = await frame.locator('#check').getAttribute('data-status', { timeout: 1000 }).catch(() => null);
        if (st === 'running') {
          const t = ((await frame.locator('#check-progress').textContent({ timeout: 1000 }).catch(() => '')) ?? '').trim();
          if (t && progress.at(-1) !== t) progress.push(t);
          if (!midShot && /placement 2 of 6/.test(t)) { midShot = true; await shot(page, '20-check-running.png'); }
        }
        if (st === 'failed') throw new Error(`the check failed: ${await frame.locator('#check').textContent()}`);
        return st === 'done';
      }, 300_000, 'the placement check to finish', 150);
      const seen = rec.stop();
      await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'idle after the check');
      assert(progress.some((t) => /^Training placement 1 of 6: dominant \(layer \d+ · \w+\) · seed \d \(\d of 3\)/.test(t)), `the panel named the placement and the seed (saw: ${progress.slice(0, 4).join(' | ')})`);
      assert(progress.some((t) => /placement 6 of 6: vanilla/.test(t)), `the panel reached vanilla (saw: ${progress.slice(-3).join(' | ')})`);
      assert(seen.some((t) => /DomLoRA: check \d\/6 seed \d\/3/.test(t)), `the status bar showed the check's progress (saw: ${seen.slice(0, 6).join(' | ')})`);
      const made = listDir(dataDir).filter((f) => /^check-/.test(f) && !checksBefore.includes(f));
      assert(made.length === 1, `one check folder, found ${made.join(', ')}`);
      const result = JSON.parse(fs.readFileSync(path.join(dataDir, made[0], 'check.json'), 'utf8'));
      assert(result.config.seeds.length === 3 && result.config.steps === 4, `three seeds of four steps (${JSON.stringify(result.config.seeds)}, ${result.config.steps})`);
      // The chart: five single placements as bars, the dominant's highlighted, vanilla a line, error bars and a dot per seed.
      const bars = frame.locator('#check-bars .bar-group');
      assert(await bars.count() === 5, `five bars (${await bars.count()})`);
      const dom = frame.locator('#check-bars .bar-group.dom');
      assert(await dom.count() === 1 && await dom.getAttribute('data-id') === 'dominant', 'the dominant bar is highlighted');
      assert(await frame.locator('#check-bars .vanilla-line').count() === 1, 'vanilla LoRA is a reference line');
      assert(await frame.locator('#check-bars .bar-group .err').count() === 15, 'an error bar (three lines) per placement');
      assert(await frame.locator('#check-bars .seed-dot').count() === 15, 'a dot per seed');
      const label = (await dom.getAttribute('aria-label')) ?? '';
      const d = result.placements.find((p) => p.kind === 'dominant');
      assert(d.modules[0] === shown.dominant.name, 'the check tested the dominant of the report shown');
      assert(label.includes(`${d.trainableParams.toLocaleString('en-US')} parameters`) && label.includes(`± ${d.reduction.sd.toFixed(3)} over 3 seeds`), `the bar says its parameters and spread (${label})`);
      const vanilla = shown.modules.reduce((s, m) => s + m.adapterParams, 0);
      assert(((await frame.locator('#check-bars .vanilla').getAttribute('aria-label')) ?? '').includes(`${vanilla.toLocaleString('en-US')} parameters`), 'vanilla\'s parameter count');
      const rho = ((await frame.locator('#check-spearman').textContent()) ?? '').trim();
      const expected = result.correlation.spearman === null ? 'undefined' : result.correlation.spearman.toFixed(2);
      assert(rho.includes(`Spearman ρ ${expected} · 5 placements`), `the correlation (${rho})`);
      assert(await frame.locator('#check-findings li').count() === result.findings.length, 'the findings');
      await notification(page, 'placement check of tiny done').waitFor({ timeout: 10_000 });
      await frame.locator('#check').scrollIntoViewIfNeeded();
      await dom.hover();
      await frame.locator('#tip:not([hidden])').waitFor({ timeout: 5000 });
      const tip = (await frame.locator('#tip').textContent()) ?? '';
      assert(tip.includes('loss reduction') && tip.includes('seed 2') && tip.includes('of vanilla'), `the tooltip details (${tip})`);
      await shot(page, '21-check-done.png');
      // Keyboard: one tab stop on the dominant bar; the arrows move along the bars; Enter opens that placement's adapters.
      await page.mouse.move(5, 500);
      await dom.focus();
      await page.keyboard.press('End');
      const lastId = await frame.locator('#check-bars .bar-group:focus').getAttribute('data-id');
      assert(lastId === 'random-2', `End moves to the last bar (${lastId})`);
      await page.keyboard.press('Home');
      await page.keyboard.press('ArrowRight');
      assert(await frame.locator('#check-bars .bar-group:focus').getAttribute('data-id') === 'runner-up', 'ArrowRight moves to the runner-up');
      assert(await frame.locator('#check-bars .bar-group[tabindex="0"]').count() === 1, 'one tab stop');
      const logFile = path.join(resultsDir, 'domlora-output.log');
      // An offset in bytes (the log has '·' and '±'), so the file is sliced as bytes.
      const logAt = fs.statSync(logFile).size;
      await page.keyboard.press('Enter');
      const runnerUp = path.join(dataDir, made[0], 'adapters', 'runner-up');
      await waitFor(() => fs.readFileSync(logFile).subarray(logAt).toString('utf8').includes(`revealing the adapters of runner-up: ${runnerUp}`), 10_000, 'Enter to open the runner-up\'s adapters');
      // Its folder is in the workspace, so the Explorer shows it, selected; it holds its three seeds.
      await page.locator('.explorer-folders-view .monaco-list-row[aria-selected="true"]', { hasText: /^runner-up$/ }).waitFor({ timeout: 10_000 });
      for (const s of [0, 1, 2]) assert(fs.existsSync(path.join(runnerUp, `seed-${s}`, 'adapter_model.safetensors')), `seed ${s} kept in PEFT format`);
      await shot(page, '22-check-revealed.png');
      // Themes, as for the heatmap.
      for (const [theme, cls, file] of [['Default Light Modern', 'vscode-light', '23-check-light.png'], ['Default High Contrast', 'vscode-high-contrast', '24-check-high-contrast.png']]) {
        fs.writeFileSync(wsSettings, JSON.stringify({ ...JSON.parse(original), 'domlora.steps': 4, 'workbench.colorTheme': theme }, null, 2));
        await waitFor(async () => ((await frame.locator('body').getAttribute('class')) ?? '').split(/\s+/).includes(cls), 20_000, `the webview to switch to ${theme}`);
        await sleep(600);
        await frame.locator('#check').screenshot({ path: path.join(resultsDir, file) });
      }
    } finally {
      fs.writeFileSync(wsSettings, original);
      await sleep(800);
    }
  });

  await journey(page, 'Compare datasets: two reports of tiny, small multiples and the rank-correlation matrix, dominants marked; keyboard in the matrix', async () => {
    await clearNotifications(page);
    await ensureTinyHeatmap();
    // A report of tiny on code, beside the one on arith.
    const before = reports();
    await contextMenuItem(page, 'tiny', 'Run PAGE Probe');
    await quickPick(page, 'dataset');
    await pickItem(page, 'code.jsonl', 'code.jsonl');
    await waitFor(async () => reports().length > before.length, 180_000, 'the probe of tiny on code');
    await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'idle after the probe');
    const byData = {};
    for (const f of reports()) { const r = JSON.parse(fs.readFileSync(path.join(dataDir, f), 'utf8')); byData[path.basename(r.config.dataset)] = r; }
    assert(byData['arith.jsonl'] && byData['code.jsonl'], `reports on arith and code (${Object.keys(byData).join(', ')})`);
    await frame.locator('vscode-button#compare-datasets').click();
    const picker = await quickPick(page, 'reports of tiny to compare');
    // The newest report of each dataset is picked to begin with.
    await sleep(400);
    const checked = await picker.locator('.quick-input-list .monaco-list-row[aria-checked="true"]').allTextContents();
    assert(checked.some((t) => t.includes('arith.jsonl')) && checked.some((t) => t.includes('code.jsonl')), `both datasets picked (${checked.join(' | ')})`);
    await shot(page, '25-compare-pick.png');
    await page.locator('.quick-input-widget .quick-input-box input').press('Enter');
    const card = frame.locator('#comparison');
    await card.waitFor({ timeout: 30_000 });
    const names = await frame.locator('#multiples figcaption strong').allTextContents();
    assert(names.length >= 2 && names.some((n) => n.includes('code.jsonl')) && names.some((n) => n.includes('arith.jsonl')), `a small heatmap per report (${names.join(', ')})`);
    const kinds = byData['code.jsonl'].kinds.length;
    const layers = byData['code.jsonl'].model.layers;
    assert(await frame.locator('#multiples .mini').first().locator('.mini-cell').count() === layers * kinds, 'each small heatmap has a cell per module');
    assert(await frame.locator('#multiples .mini-cell.dominant').count() === names.length, 'one dominant marked per report');
    const n = names.length;
    assert(await frame.locator('#rho-matrix .rho-cell').count() === n * n, `an ${n}×${n} matrix`);
    const same = byData['arith.jsonl'].dominant.name === byData['code.jsonl'].dominant.name;
    const sameText = ((await frame.locator('#same-dominant').textContent()) ?? '').trim();
    assert(same ? /same dominant module/.test(sameText) : /dominant module differs/.test(sameText), `says whether the dominants agree (${sameText})`);
    // Keyboard: one tab stop; the arrows move in the matrix and each cell says the pair and its correlation.
    await frame.locator('#rho-matrix .rho-cell[tabindex="0"]').focus();
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowLeft');
    const focused = frame.locator('#rho-matrix .rho-cell:focus');
    assert(await focused.getAttribute('data-i') === '1' && await focused.getAttribute('data-j') === '0', 'the arrows move in the matrix');
    assert(/ vs .*: Spearman -?\d\.\d{3}, top-10 overlap \d+/.test((await focused.getAttribute('aria-label')) ?? ''), 'the cell says the pair and the correlation');
    await page.mouse.move(5, 500);
    await frame.locator('#comparison').scrollIntoViewIfNeeded();
    await shot(page, '26-compare-datasets.png', page.locator('iframe.webview.ready'));
    await frame.locator('#comparison').screenshot({ path: path.join(resultsDir, '27-compare-card.png') });
    await frame.locator('#close-comparison').click();
    await card.waitFor({ state: 'detached', timeout: 10_000 });
  });

  await journey(page, 'themes: the heatmap follows light and high-contrast themes', async () => {
    const bodyClass = async () => (await frame.locator('body').getAttribute('class')) ?? '';
    // The theme is a setting like any other; the workspace's settings file is watched by VS Code.
    const wsSettings = path.join(ws, '.vscode', 'settings.json');
    const original = fs.readFileSync(wsSettings, 'utf8');
    try {
      for (const [theme, cls, file] of [
        ['Default Light Modern', 'vscode-light', '11-heatmap-light.png'],
        ['Default High Contrast', 'vscode-high-contrast', '12-heatmap-high-contrast.png'],
        ['Default High Contrast Light', 'vscode-high-contrast-light', '13-heatmap-high-contrast-light.png'],
      ]) {
        fs.writeFileSync(wsSettings, JSON.stringify({ ...JSON.parse(original), 'workbench.colorTheme': theme }, null, 2));
        await waitFor(async () => (await bodyClass()).split(/\s+/).includes(cls), 20_000, `the webview to switch to ${theme}`);
        await sleep(600);
        await page.mouse.move(5, 500);
        await shot(page, file, page.locator('iframe.webview.ready'));
      }
    } finally {
      fs.writeFileSync(wsSettings, original);
    }
    await waitFor(async () => (await bodyClass()).split(/\s+/).includes('vscode-dark'), 20_000, 'the dark theme back');
    await sleep(600);
    await shot(page, '14-workbench-final.png');
  });

  await journey(page, 'an 80-layer model from the palette: 80 rows, dense and readable', async () => {
    await runPaletteCommand(page, 'View: Close All Editors');
    await sleep(500);
    await runPaletteCommand(page, 'DomLoRA: Run PAGE Probe');
    await quickPick(page, 'model to probe');
    await pickItem(page, 'deep80', 'deep80');
    await quickPick(page, 'dataset');
    await pickItem(page, 'arith', 'arith.jsonl');
    await frame.locator('#heatmap').waitFor({ state: 'visible', timeout: 180_000 });
    const deepDir = path.join(ws, '.domlora', 'deep80');
    const files = listDir(deepDir).filter((f) => /^probe-.*\.json$/.test(f));
    assert(files.length === 1, 'one report for deep80');
    const deep = JSON.parse(fs.readFileSync(path.join(deepDir, files[0]), 'utf8'));
    assert(deep.model.layers === 80, 'the report has 80 layers');
    assert(await frame.locator('#heatmap .row').count() === 80, '80 rows');
    assert(await frame.locator('#heatmap.dense').count() === 1, 'dense layout');
    const h = await frame.locator('#heatmap .cell[data-name]').first().boundingBox();
    assert(h && h.height >= 8, `cells stay hoverable (${h?.height}px high)`);
    // Row labels: enough to read positions, never touching each other.
    const boxes = [];
    const heads = frame.locator('#heatmap .rowhead');
    for (let i = 0; i < 80; i++) {
      const t = ((await heads.nth(i).textContent()) ?? '').trim();
      if (!t) continue;
      const b = await heads.nth(i).locator('xpath=.').evaluate((e) => {
        const r = document.createRange(); r.selectNodeContents(e); const bb = r.getBoundingClientRect(); return { top: bb.top, bottom: bb.bottom };
      });
      boxes.push({ t, ...b });
    }
    assert(boxes.length >= 10 && boxes.length < 80, `some row labels shown (${boxes.length})`);
    for (let i = 1; i < boxes.length; i++) assert(boxes[i].top >= boxes[i - 1].bottom - 0.5, `labels ${boxes[i - 1].t} and ${boxes[i].t} do not overlap`);
    assert(boxes.some((b) => b.t === String(deep.dominant.layer)), 'the dominant layer is labelled');
    await page.mouse.move(5, 500);
    await shot(page, '15-deep80-top.png', page.locator('iframe.webview.ready'));
    await frame.locator('#heatmap .cell.dominant').hover();
    await frame.locator('#tip:not([hidden])').waitFor({ timeout: 5000 });
    await frame.locator('#heatmap .row').nth(60).scrollIntoViewIfNeeded();
    await shot(page, '16-deep80-grid.png', page.locator('iframe.webview.ready'));
  });

  await journey(page, 'the Models view: workspace and Hugging Face cache models, a cache model probed inline', async () => {
    // Run alone (--only), the journey must wait for the extension like the first one does.
    await waitFor(async () => /DomLoRA/.test(await statusText(page)), 60_000, 'the DomLoRA status bar item (activation)');
    await clearNotifications(page);
    await runPaletteCommand(page, 'View: Close All Editors');
    const cacheBefore = treeState(hfCache);
    await page.locator('.activitybar .action-item .action-label[aria-label^="DomLoRA"]').first().click();
    const sidebar = page.locator('.part.sidebar');
    const row = (text) => sidebar.locator('.monaco-list-row', { hasText: text }).first();
    await row('domlora-demo/arith-tiny').waitFor({ timeout: 60_000 });
    // A wider side bar, as a user would drag it, so the descriptions show whole in the screenshot.
    const box = await sidebar.boundingBox();
    await page.mouse.move(box.x + box.width, box.y + 400);
    await page.mouse.down();
    await page.mouse.move(box.x + 640, box.y + 400, { steps: 8 });
    await page.mouse.up();
    for (const t of ['Workspace', 'Hugging Face cache', 'deep80', 'TheBloke/arith-tiny-GGUF', 'google-t5/t5-small', 'domlora-demo/broken-download']) {
      await row(t).waitFor({ timeout: 10_000 });
    }
    const text = async (t) => ((await row(t).textContent()) ?? '').replace(/\s+/g, ' ');
    assert(/llama · [\d.]+K · [\d.]+ (KB|MB) · F32/.test(await text('domlora-demo/arith-tiny')), `architecture, parameters, size, dtype (${await text('domlora-demo/arith-tiny')})`);
    assert((await text('TheBloke/arith-tiny-GGUF')).includes('GGUF only'), 'the GGUF repository says why');
    assert((await text('domlora-demo/broken-download')).includes('incomplete download'), 'the interrupted download says so');
    assert((await text('google-t5/t5-small')).includes('model_type "t5" is not supported'), 'the unsupported architecture says so');
    // The older revision hangs below the current one (refs/main); a click selects the repository and opens it.
    await row('domlora-demo/arith-tiny').click();
    await row('1111111').waitFor({ timeout: 10_000 });
    assert(!(await text('domlora-demo/arith-tiny')).includes('1111111'), 'the repository row shows the current revision');
    await row('TheBloke/arith-tiny-GGUF').hover();
    await sleep(300);
    assert(await row('TheBloke/arith-tiny-GGUF').locator('.action-label[aria-label="Run PAGE Probe"]').count() === 0, 'no probe offered for a GGUF-only repository');
    await page.mouse.move(900, 700);
    await sleep(400);
    await shot(page, '17-models-view.png');
    await row('domlora-demo/arith-tiny').hover();
    await row('domlora-demo/arith-tiny').locator('.action-label[aria-label="Run PAGE Probe"]').click();
    await quickPick(page, 'dataset');
    await pickItem(page, 'arith', 'arith.jsonl');
    await frame.locator('#heatmap').waitFor({ state: 'visible', timeout: 180_000 });
    await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: wasm/.test(await statusText(page)), 30_000, 'the status bar to return to idle');
    const dir = path.join(ws, '.domlora', 'domlora-demo--arith-tiny');
    const files = listDir(dir).filter((f) => /^probe-.*\.json$/.test(f));
    assert(files.length === 1, `one report in .domlora/domlora-demo--arith-tiny (found ${files.join(', ')})`);
    const cached = JSON.parse(fs.readFileSync(path.join(dir, files[0]), 'utf8'));
    assert(cached.model.path.endsWith(path.join('models--domlora-demo--arith-tiny', 'snapshots', '2'.repeat(40))), `the current revision was probed (${cached.model.path})`);
    assert(((await frame.locator('header').textContent()) ?? '').includes('domlora-demo/arith-tiny'), 'the heatmap names the repository');
    await page.locator('.tab', { hasText: 'PAGE · domlora-demo/arith-tiny' }).first().waitFor({ timeout: 5000 });
    assert(treeState(hfCache) === cacheBefore, 'nothing was written into the Hugging Face cache');
    await page.mouse.move(5, 500);
    await shot(page, '18-cache-model-probed.png');
  });

  await journey(page, 'Probe a Model…: the same list in a quick pick; an unsupported pick says why', async () => {
    // Run alone (--only), the journey must wait for the extension like the first one does.
    await waitFor(async () => /DomLoRA/.test(await statusText(page)), 60_000, 'the DomLoRA status bar item (activation)');
    await clearNotifications(page);
    await runPaletteCommand(page, 'DomLoRA: Probe a Model…');
    await quickPick(page, 'Probe a Model');
    const items = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
    await items.filter({ hasText: 'TheBloke/arith-tiny-GGUF' }).first().waitFor({ timeout: 60_000 });
    const all = (await items.allTextContents()).join(' | ');
    for (const t of ['tiny', 'deep80', 'domlora-demo/arith-tiny', '@ 1111111']) assert(all.includes(t), `the pick lists ${t} (${all})`);
    await page.mouse.move(200, 700); // the side bar's empty part: no hover tooltip over the screenshot
    await shot(page, '19-probe-a-model.png');
    await pickItem(page, 'GGUF', 'arith-tiny-GGUF');
    const toast = notification(page, 'cannot probe TheBloke/arith-tiny-GGUF');
    await toast.waitFor({ timeout: 10_000 });
    assert(((await toast.textContent()) ?? '').includes('GGUF only'), 'the message gives the reason');
  });

  await journey(page, 'on webgpu (lavapipe): probe, heatmap, train; the status bar and the backend chip name the adapter', async () => {
    // The packaged linux-x64 GPU path on this machine's software Vulkan GPU: a setting, as a user would change it.
    await clearNotifications(page);
    await runPaletteCommand(page, 'View: Close All Editors');
    const wsSettings = path.join(ws, '.vscode', 'settings.json');
    const original = fs.readFileSync(wsSettings, 'utf8');
    const gpuDir = path.join(ws, '.domlora', 'gpu');
    fs.writeFileSync(wsSettings, JSON.stringify({ ...JSON.parse(original), 'domlora.backend': 'webgpu', 'domlora.samples': 3, 'domlora.steps': 4 }, null, 2));
    try {
      await sleep(1200);
      const rec = recordStatus(page);
      await contextMenuItem(page, 'gpu', 'Run PAGE Probe');
      await quickPick(page, 'dataset');
      await pickItem(page, 'arith');
      // A software GPU is slow: wait for the heatmap, but stop at once should the probe fail.
      await waitFor(async () => {
        if (await frame.locator('#heatmap').isVisible().catch(() => false)) return true;
        const failed = page.locator('.notification-toast', { has: page.locator('.codicon-error') });
        if (await failed.count()) throw new Error(`the probe on webgpu failed: ${await failed.first().textContent()}`);
        return false;
      }, 300_000, 'the heatmap of the probe on webgpu', 500);
      await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: webgpu \(llvmpipe\)/.test(await statusText(page)), 30_000, 'the status bar to name the adapter');
      const files = listDir(gpuDir).filter((f) => /^probe-.*\.json$/.test(f));
      assert(files.length === 1, `one report for gpu, found ${files.join(', ')}`);
      const gpuReport = JSON.parse(fs.readFileSync(path.join(gpuDir, files[0]), 'utf8'));
      assert(gpuReport.config.backend === 'webgpu' && gpuReport.config.backendDevice === 'llvmpipe', `the report ran on webgpu (llvmpipe): ${gpuReport.config.backend} ${gpuReport.config.backendDevice}`);
      const chip = ((await frame.locator('#backend-chip').textContent()) ?? '').trim();
      assert(/^webgpu \(llvmpipe\) · /.test(chip), `the heatmap's backend chip names the adapter (${chip})`);
      assert(await frame.locator('#heatmap .cell.dominant').count() === 1, 'a dominant cell');
      await page.mouse.move(5, 500);
      await shot(page, '17-webgpu-heatmap.png');
      // The status bar's tooltip: the worker's full description of the backend.
      await statusItem(page).hover();
      const hover = page.locator('.monaco-hover, .workbench-hover', { hasText: 'Backend: webgpu (Dawn: llvmpipe' }).first();
      await hover.waitFor({ state: 'visible', timeout: 10_000 });
      await shot(page, '18-webgpu-status-tooltip.png');
      await page.mouse.move(5, 500);
      await frame.locator('vscode-button#train-domlora').click();
      await frame.locator('.run-card[data-preset="domlora"][data-status="done"]').waitFor({ timeout: 300_000 });
      await waitFor(async () => !(await statusSpinning(page)) && /DomLoRA: webgpu \(llvmpipe\)/.test(await statusText(page)), 30_000, 'idle on webgpu after training');
      const seen = rec.stop();
      assert(seen.some((t) => /DomLoRA: probe \d+\/\d+/.test(t)) && seen.some((t) => /DomLoRA: train \d+\/\d+ · loss \d/.test(t)), `status bar showed probe and training progress (saw: ${seen.join(' | ')})`);
      const adapters = listDir(gpuDir).filter((f) => /^adapter-domlora-/.test(f));
      assert(adapters.length === 1, `one adapter folder, found ${adapters.join(', ')}`);
      assert(fs.statSync(path.join(gpuDir, adapters[0], 'adapter_model.safetensors')).size > 0, 'adapter_model.safetensors written');
      const log = fs.readFileSync(path.join(resultsDir, 'domlora-output.log'), 'utf8');
      assert(/worker ready: backend webgpu \(Dawn: llvmpipe/.test(log), 'the log has the full description of the adapter');
      await page.mouse.move(5, 500);
      await shot(page, '19-webgpu-trained.png', page.locator('iframe.webview.ready'));
    } finally {
      fs.writeFileSync(wsSettings, original);
      await sleep(800);
    }
  });

  await journey(page, 'no CSP violation or script error in the webview', async () => {
    assert(webviewErrors.length === 0, `webview errors:\n${webviewErrors.join('\n')}`);
  });

  await context.close();
}

// ---- Main -------------------------------------------------------------------------------------------------------

async function main() {
  if (!fs.existsSync(codeServer)) throw new Error(`code-server is not installed: run bash test/e2e/setup-code-server.sh (${codeServer})`);
  fs.rmSync(resultsDir, { recursive: true, force: true });
  fs.mkdirSync(resultsDir, { recursive: true });
  build();
  const vsix = args.has('--host-only') ? undefined : packageVsix();
  log(`[${elapsed()}] built${vsix ? ` and packaged ${path.basename(vsix)}` : ''}`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-e2e-'));
  const userSettingsFile = path.join(tmp, 'user-data', 'User', 'settings.json');
  write(userSettingsFile, JSON.stringify({
    'workbench.startupEditor': 'none', 'workbench.colorTheme': 'Default Dark Modern', 'security.workspace.trust.enabled': false,
    'telemetry.telemetryLevel': 'off', 'extensions.autoCheckUpdates': false, 'extensions.autoUpdate': false,
    'extensions.ignoreRecommendations': true, 'workbench.tips.enabled': false, 'update.mode': 'none',
    'workbench.enableExperiments': false, 'chat.commandCenter.enabled': false, 'git.enabled': false,
    'workbench.secondarySideBar.defaultVisibility': 'hidden', 'window.restoreWindows': 'none',
  }, null, 2));
  const base = makeBaseFixture(tmp);
  const wsHost = path.join(tmp, 'ws-host');
  const wsUi = path.join(tmp, 'ws-ui');
  // Small jobs: a probe takes seconds on the demo model.
  const fast = { 'domlora.backend': 'wasm', 'domlora.samples': 6, 'domlora.seqLen': 64, 'domlora.steps': 24, 'domlora.learningRate': 0.005 };
  makeWorkspace(wsHost, base, { ...fast, 'domlora.steps': 6 }, ['tiny', 'fresh']);
  makeWorkspace(wsUi, base, fast, ['tiny', 'gpu']);
  if (!args.has('--host-only')) await makeDeepModel(tmp, path.join(wsUi, 'deep80'));
  const hfCache = await makeHfCache(tmp, base);
  if (vsix) {
    execFileSync(codeServer, ['--config', '/dev/null', '--user-data-dir', path.join(tmp, 'user-data'),
      '--extensions-dir', path.join(tmp, 'extensions'), '--install-extension', vsix], { stdio: 'ignore' });
  }
  const hostResults = path.join(tmp, 'host-results.json');
  let cs;
  let browser;
  try {
    // code-server's own temporaries (IPC sockets, the TypeScript server's folder) go under tmp, removed at the end.
    const csTmp = path.join(tmp, 't');
    fs.mkdirSync(csTmp, { recursive: true });
    // npm_config_prefer_offline: the native-backend host tests install stand-in packages whose dependencies (tfjs)
    // npm's cache holds since `npm ci`.
    cs = await startCodeServer(tmp, {
      DOMLORA_HOST_RESULTS: hostResults, DOMLORA_LOG_FILE: path.join(resultsDir, 'domlora-output.log'), TMPDIR: csTmp, HF_HUB_CACHE: hfCache,
      npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false',
    });
    log(`[${elapsed()}] code-server ${CS_VERSION} on ${cs.url} (pid ${cs.child.pid}), fixtures in ${tmp}`);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    if (!args.has('--ui-only') && !only) {
      await runHostSuite(browser, cs, wsHost, hostResults);
      log(`[${elapsed()}] extension-host suite done`);
    }
    if (!args.has('--host-only')) {
      await runJourneys(browser, cs, wsUi, hfCache);
      log(`[${elapsed()}] journeys done`);
    }
  } finally {
    await browser?.close().catch(() => {});
    stopCodeServer(cs);
    if (!args.has('--keep')) fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(() => {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  log(`screenshots in ${path.relative(process.cwd(), resultsDir) || resultsDir}/, total ${elapsed()}`);
  log(`${passed} passed, ${failed} failed`);
  process.exit(failed || !results.length ? 1 : 0);
}, (err) => {
  log(`e2e driver error: ${err?.stack ?? err}`);
  log(`${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length + 1} failed`);
  process.exit(1);
});
