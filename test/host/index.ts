// The extension-host test entry: VS Code loads this file (from the `extensionTestsPath` of the payload URL) inside
// its Node extension host and awaits `run()`. Mocha's console output only reaches the browser console, so the
// results also go to a JSON file that the e2e driver prints (DOMLORA_HOST_RESULTS, set on the code-server process).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Mocha from 'mocha';

export interface HostTestResult { title: string; state: 'passed' | 'failed'; ms: number; error?: string }

export async function run(): Promise<void> {
  const out = process.env.DOMLORA_HOST_RESULTS ?? path.join(os.tmpdir(), 'domlora-host-results.json');
  const mocha = new Mocha({ ui: 'bdd', timeout: 180_000, color: false, reporter: 'spec' });
  const dir = __dirname;
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort()) mocha.addFile(path.join(dir, f));
  const results: HostTestResult[] = [];
  const failures = await new Promise<number>((resolve) => {
    const runner = mocha.run((n) => resolve(n));
    runner.on('pass', (t) => results.push({ title: t.fullTitle(), state: 'passed', ms: t.duration ?? 0 }));
    runner.on('fail', (t, err: Error) => results.push({
      title: t.fullTitle(), state: 'failed', ms: t.duration ?? 0, error: `${err.message}\n${(err.stack ?? '').split('\n').slice(1, 6).join('\n')}`,
    }));
  });
  fs.writeFileSync(out, JSON.stringify({ failures, results }, null, 2));
  if (failures > 0) throw new Error(`${failures} extension-host test(s) failed`);
}
