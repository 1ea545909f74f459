// What the host tests share: the extension's context (its exports), the test workspace's paths, and waiting.
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Ctx } from '../../src/host/ctx';

export function ctx(): Ctx {
  return vscode.extensions.getExtension('domlora.domlora')!.exports as Ctx;
}

export const ws = () => vscode.workspace.workspaceFolders![0]!.uri.fsPath;
export const model = () => path.join(ws(), 'tiny');
export const data = () => path.join(ws(), 'data', 'arith.jsonl');
/** Long enough that a probe of it is still running when it is cancelled or its worker is killed. */
export const bigData = () => path.join(ws(), 'data', 'big.jsonl');
export const dataDir = (m: string) => path.join(ws(), '.domlora', path.basename(m));

export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The newest notification the extension showed since `since` (ms). */
export function lastNotice(since: number) {
  return ctx().notices.filter((n) => n.at >= since).at(-1);
}
