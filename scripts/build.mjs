// Bundles every part of DomLoRA with esbuild: the extension (node, `vscode` external), the worker, the CLI, the
// webview (browser) and the tests. Runtime dependencies stay external: tfjs-backend-wasm finds its .wasm files
// next to its own package, and the extension ships node_modules for them.
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.dirname(path.dirname(new URL(import.meta.url).pathname));
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const external = ['vscode', ...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {}),
  '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-backend-webgpu', 'webgpu',
  'playwright-core', 'mocha'];
const watch = process.argv.includes('--watch');

const node = {
  bundle: true, platform: 'node', target: 'node20', format: 'cjs', sourcemap: 'linked', external, logLevel: 'warning',
  define: { DOMLORA_VERSION: JSON.stringify(pkg.version) },
};

function listTests(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true })
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => path.join(dir, f));
}

const builds = [
  { ...node, entryPoints: { extension: 'src/extension.ts', worker: 'src/worker/main.ts', cli: 'src/cli/main.ts' },
    outdir: 'dist', banner: { js: '' } },
  { bundle: true, platform: 'browser', target: 'es2022', format: 'esm', sourcemap: 'linked', logLevel: 'warning',
    entryPoints: { webview: 'webview/main.ts' }, outdir: 'dist', external: [] },
];
// Compiled tests whose source is gone would still run under `node --test out/test/unit/`: start from empty folders.
if (!watch) for (const d of ['out/test/unit', 'out/test/host']) fs.rmSync(path.join(root, d), { recursive: true, force: true });
const unitTests = listTests(path.join(root, 'test/unit'));
if (unitTests.length) builds.push({ ...node, entryPoints: unitTests, outdir: 'out/test/unit', outbase: 'test/unit' });
const hostTests = listTests(path.join(root, 'test/host'));
if (fs.existsSync(path.join(root, 'test/host/index.ts'))) {
  builds.push({ ...node, entryPoints: ['test/host/index.ts', ...hostTests], outdir: 'out/test/host', outbase: 'test/host' });
}

const existing = builds.filter((b) => Object.values(b.entryPoints).every((e) => fs.existsSync(path.resolve(root, e))));
process.chdir(root);
if (watch) {
  for (const b of existing) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(existing.map((b) => esbuild.build(b)));
  // The CLI is run as a program: give it a shebang and the executable bit.
  const cli = path.join(root, 'dist/cli.js');
  if (fs.existsSync(cli)) {
    const src = fs.readFileSync(cli, 'utf8');
    if (!src.startsWith('#!')) fs.writeFileSync(cli, `#!/usr/bin/env node\n${src}`);
    fs.chmodSync(cli, 0o755);
  }
  // The webview's component library is copied next to our bundle so the webview loads it from the extension itself.
  const elements = path.join(root, 'node_modules/@vscode-elements/elements/dist/bundled.js');
  if (fs.existsSync(elements)) fs.copyFileSync(elements, path.join(root, 'dist/vscode-elements.js'));
  const codicons = path.join(root, 'node_modules/@vscode/codicons/dist');
  if (fs.existsSync(codicons)) {
    for (const f of ['codicon.css', 'codicon.ttf']) fs.copyFileSync(path.join(codicons, f), path.join(root, 'dist', f));
  }
}
