// Every message DomLoRA shows goes through here, so the wording stays consistent, the host tests can read what the
// user was told (`recent`), and no command waits for the user to dismiss a notification.
import * as vscode from 'vscode';

export interface Notice { level: 'info' | 'warning' | 'error'; message: string; at: number }

const recent: Notice[] = [];
let listener: ((n: Notice) => void) | undefined;

/** Where every notice is also logged (the "DomLoRA" output channel). */
export function onNotice(l: ((n: Notice) => void) | undefined): void {
  listener = l;
}

export function recentNotices(): readonly Notice[] {
  return recent;
}

type Action = { title: string; run: () => unknown };

function show(level: Notice['level'], message: string, actions: Action[]): void {
  const notice = { level, message, at: Date.now() };
  recent.push(notice);
  listener?.(notice);
  if (recent.length > 50) recent.shift();
  const titles = actions.map((a) => a.title);
  const p = level === 'error' ? vscode.window.showErrorMessage(message, ...titles)
    : level === 'warning' ? vscode.window.showWarningMessage(message, ...titles)
      : vscode.window.showInformationMessage(message, ...titles);
  void p.then((picked) => actions.find((a) => a.title === picked)?.run());
}

export function info(message: string, ...actions: Action[]): void { show('info', message, actions); }
export function warn(message: string, ...actions: Action[]): void { show('warning', message, actions); }
export function error(message: string, ...actions: Action[]): void { show('error', message, actions); }
