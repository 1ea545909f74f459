// Workspace Trust. A repository the user did not write can be opened in VS Code's Restricted Mode; there DomLoRA
// reads and writes only inside the workspace's folders and its own storage, takes the settings that name a path or
// a backend from the user's settings only (config.ts), reads a model's files only when the user asks, and never
// installs the native backend (nativeCommand.ts). Each refusal says why and offers to manage the trust.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';

/** The action that opens VS Code's Workspace Trust editor. */
export const MANAGE_TRUST = { title: 'Manage Workspace Trust', run: () => vscode.commands.executeCommand('workbench.trust.manage') };

/** `p` with its links resolved, as far as it exists (a path to be created is resolved through its existing parent). */
export function realPathOf(p: string): string {
  const abs = path.resolve(p);
  const rest: string[] = [];
  for (let cur = abs; ; cur = path.dirname(cur)) {
    try {
      return path.join(fs.realpathSync.native(cur), ...rest.reverse());
    } catch {
      if (path.dirname(cur) === cur) return abs;
      rest.push(path.basename(cur));
    }
  }
}

function inside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Whether `p` lies inside one of `roots`, comparing real paths: a link inside the workspace that points elsewhere
 * (`model -> /home/me/.ssh`) is outside, whatever its name says.
 */
export function insideRoots(p: string, roots: readonly string[]): boolean {
  const real = realPathOf(p);
  return roots.some((r) => inside(real, realPathOf(r)));
}

/** The folders Restricted Mode allows: the workspace's folders on disk and the extension's storage. */
export function restrictedRoots(extension: vscode.ExtensionContext): string[] {
  const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
  return [...folders, extension.globalStorageUri.fsPath, ...(extension.storageUri ? [extension.storageUri.fsPath] : [])];
}

/** What the user is told when Restricted Mode keeps DomLoRA from `what` (`p`). */
export function restrictedMessage(what: string, p: string): string {
  return `DomLoRA: ${what} ${p} is outside this workspace, and in Restricted Mode DomLoRA reads and writes only inside `
    + 'the workspace and its own storage. Trust the workspace to use it, or choose one inside the workspace.';
}
