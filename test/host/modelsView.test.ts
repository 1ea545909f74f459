// The Models view and the Hugging Face cache inside VS Code: the e2e driver gives code-server a fake cache as
// $HF_HUB_CACHE (test/e2e/run.mjs, makeHfCache). The view lists the workspace's model folders and the cache's through
// the real worker; a cache model probed from the view writes its report into the workspace, never into the cache.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ProbeReport } from '../../src/protocol/messages';
import type { Ctx } from '../../src/host/ctx';
import { ModelsView, modelUriOf, type ModelsNode } from '../../src/host/modelsView';
import { modelFolderName, modelName } from '../../src/host/store';

function ctx(): Ctx {
  return vscode.extensions.getExtension('domlora.domlora')!.exports as Ctx;
}

const ws = () => vscode.workspace.workspaceFolders![0]!.uri.fsPath;
const data = () => path.join(ws(), 'data', 'arith.jsonl');
const cache = () => process.env.HF_HUB_CACHE!;
const REPO = 'domlora-demo/arith-tiny';
const snapshot = (rev: string) => path.join(cache(), 'models--domlora-demo--arith-tiny', 'snapshots', rev.padEnd(40, rev[0]));

/** Every path under `dir` with its kind, size and modification time. */
function treeState(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort().map((f) => {
    const st = fs.lstatSync(path.join(dir, f));
    return `${f} ${st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : 'file'} ${st.size} ${st.mtimeMs}`;
  });
}

async function labelled(view: ModelsView, node?: ModelsNode): Promise<{ node: ModelsNode; item: vscode.TreeItem; label: string }[]> {
  return (await view.getChildren(node)).map((n) => {
    const item = view.getTreeItem(n);
    return { node: n, item, label: typeof item.label === 'string' ? item.label : item.label?.label ?? '' };
  });
}

async function withCacheSetting<T>(value: string | undefined, run: () => Promise<T>): Promise<T> {
  const c = vscode.workspace.getConfiguration('domlora');
  const before = c.inspect('huggingFaceCache')?.workspaceValue;
  try {
    await c.update('huggingFaceCache', value, vscode.ConfigurationTarget.Workspace);
    return await run();
  } finally {
    await c.update('huggingFaceCache', before, vscode.ConfigurationTarget.Workspace);
  }
}

describe('the Models view and the Hugging Face cache', function () {
  this.timeout(180_000);

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    assert.ok(cache() && fs.existsSync(cache()), `the e2e driver set HF_HUB_CACHE to a fake cache (${cache()})`);
  });

  it('lists the workspace and the cache, one element per repository at the revision refs/main names', async () => {
    const view = ctx().modelsView;
    view.refresh();
    const roots = await labelled(view);
    assert.deepEqual(roots.map((r) => r.label), ['Workspace', 'Hugging Face cache']);
    assert.equal(roots[1]!.item.description, cache().replace(os.homedir(), '~'));
    assert.equal(view.cacheState, 'found');

    const workspace = await labelled(view, roots[0]!.node);
    // The workspace's model folders (a merged export of another test may have joined them).
    for (const name of ['fresh', 'tiny']) assert.ok(workspace.some((w) => w.label === name), `${name} in ${workspace.map((w) => w.label)}`);
    for (const w of workspace) {
      assert.match(String(w.item.description), /^llama · [\d.]+K · [\d.]+ (KB|MB) · F32$/);
      assert.equal(w.item.contextValue, 'domlora.model.supported');
    }

    const repos = await labelled(view, roots[1]!.node);
    assert.deepEqual(repos.map((r) => r.label), [REPO, 'domlora-demo/broken-download', 'google-t5/t5-small', 'TheBloke/arith-tiny-GGUF']);
    const [arith, broken, t5, gguf] = repos;
    assert.equal(arith!.item.contextValue, 'domlora.model.supported');
    assert.equal(arith!.item.collapsibleState, vscode.TreeItemCollapsibleState.Collapsed, 'the other revision hangs below');
    assert.equal(modelUriOf(arith!.node)?.fsPath, snapshot('2'), 'the current revision (refs/main)');
    const revisions = await labelled(view, arith!.node);
    assert.deepEqual(revisions.map((r) => r.label), ['1111111']);
    assert.equal(modelUriOf(revisions[0]!.node)?.fsPath, snapshot('1'));
    assert.equal(revisions[0]!.item.contextValue, 'domlora.model.supported');
    for (const [r, why] of [[broken, 'incomplete download'], [t5, 'model_type "t5" is not supported'], [gguf, 'GGUF only']] as const) {
      assert.equal(r!.item.contextValue, 'domlora.model.unsupported', r!.label);
      assert.ok(String(r!.item.description).endsWith(why), `${r!.label}: ${r!.item.description}`);
      assert.ok((r!.item.tooltip as vscode.MarkdownString).value.includes('Not supported: '), 'the tooltip gives the whole reason');
    }
  });

  it('probes a cache model given as a view element: the report goes to .domlora/ORG--NAME, nothing into the cache', async () => {
    const view = ctx().modelsView;
    const before = treeState(cache());
    const roots = await view.getChildren();
    const arith = (await view.getChildren(roots.at(-1))).find((n) => n.kind === 'model' && n.entry.repoId === REPO)!;
    const r = await vscode.commands.executeCommand<{ reportPath: string; report: ProbeReport }>('domlora.runProbe', arith, { data: data() });
    assert.ok(r, 'the probe returned a result');
    const dataDir = path.join(ws(), '.domlora', 'domlora-demo--arith-tiny');
    assert.equal(path.dirname(r.reportPath), dataDir);
    assert.equal(r.report.model.path, snapshot('2'));
    assert.equal(ctx().panels.get(snapshot('2'))?.panel.title, `PAGE · ${REPO}`);
    assert.equal(ctx().models.state(snapshot('2')).modelName, REPO);
    // The revisions share the data folder; a report counts for the revision it measured.
    assert.equal(ctx().store.modelDataDir(snapshot('1')), dataDir);
    assert.equal(ctx().models.report(snapshot('1')), undefined);
    assert.deepEqual(treeState(cache()), before, 'nothing was written into the cache');
    ctx().panels.get(snapshot('2'))?.panel.dispose();
  });

  it('names cache models by repository, their adapters by ORG--NAME', () => {
    assert.equal(modelName(snapshot('2')), REPO);
    assert.equal(modelFolderName(snapshot('2')), 'domlora-demo--arith-tiny');
    assert.equal(modelName(path.join(ws(), 'tiny')), 'tiny');
    const adapters = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-adapters-'));
    try {
      const dir = ctx().store.newAdapterDir(snapshot('2'), 'domlora', adapters);
      assert.match(path.basename(dir), /^domlora-demo--arith-tiny-domlora-\d{8}-\d{6}$/);
      assert.equal(path.dirname(dir), adapters);
    } finally {
      fs.rmSync(adapters, { recursive: true, force: true });
    }
  });

  it('is empty, so the welcome content shows, when there is no model anywhere; says whether the cache is missing or empty', async () => {
    const pkg = vscode.extensions.getExtension('domlora.domlora')!.packageJSON;
    const welcome = pkg.contributes.viewsWelcome as { view: string; when: string; contents: string }[];
    const none = { ready: Promise.resolve(), list: () => [], onDidChange: () => ({ dispose() {} }) };
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-nocache-'));
    const view = new ModelsView(ctx().worker, none, () => {});
    try {
      for (const [dir, state] of [[path.join(tmp, 'missing'), 'missing'], [tmp, 'empty']] as const) {
        await withCacheSetting(dir, async () => {
          view.refresh();
          assert.deepEqual(await view.getChildren(), []);
          assert.equal(view.cacheState, state);
          const w = welcome.find((x) => x.view === 'domlora.models' && x.when === `domlora.models.cache == ${state}`);
          assert.ok(w, `welcome content for a ${state} cache`);
          assert.match(w.contents, /huggingface-cli download/);
          assert.match(w.contents, /\[Refresh\]\(command:domlora\.refreshModels\)/);
        });
      }
      // With a cache of models and still no workspace model, only the cache group shows.
      await withCacheSetting(cache(), async () => {
        view.refresh();
        assert.deepEqual((await labelled(view)).map((r) => r.label), ['Hugging Face cache']);
      });
    } finally {
      view.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('offers the Explorer\'s actions on supported models in the view, Run PAGE Probe inline', () => {
    const pkg = vscode.extensions.getExtension('domlora.domlora')!.packageJSON;
    const items = pkg.contributes.menus['view/item/context'] as { command: string; when: string; group: string }[];
    const explorer = (pkg.contributes.menus['explorer/context'] as { command: string }[]).map((m) => m.command);
    for (const command of explorer) {
      assert.ok(items.some((m) => m.command === command && m.when.includes('viewItem == domlora.model.supported')), `${command} in the view`);
    }
    assert.ok(items.some((m) => m.command === 'domlora.runProbe' && m.group.startsWith('inline')));
    const title = (pkg.contributes.menus['view/title'] as { command: string }[]).map((m) => m.command);
    assert.deepEqual(title.sort(), ['domlora.probeModel', 'domlora.refreshModels']);
  });
});
