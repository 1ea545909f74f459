// DomLoRA's entry point: builds the context (the owner of everything) and registers the commands. Nothing else
// happens here; the worker starts with the first job.
import type * as vscode from 'vscode';
import * as commands from './host/commands';
import { Ctx } from './host/ctx';
import { installNativeBackend } from './host/nativeCommand';

let ctx: Ctx | undefined;

export function activate(context: vscode.ExtensionContext): Ctx {
  ctx = new Ctx(context);
  context.subscriptions.push(ctx);
  ctx.registerCommand('runProbe', commands.runProbe);
  ctx.registerCommand('train', commands.train);
  ctx.registerCommand('trainVanilla', commands.trainVanilla);
  ctx.registerCommand('showHeatmap', commands.showHeatmap);
  ctx.registerCommand('cancel', commands.cancel);
  ctx.registerCommand('export', commands.exportAdapter);
  ctx.registerCommand('revealPanel', commands.revealPanel);
  ctx.registerCommand('showLog', commands.showLog);
  ctx.registerCommand('refreshModels', commands.refreshModels);
  ctx.registerCommand('probeModel', commands.probeModel);
  ctx.registerCommand('checkPlacement', commands.checkPlacement);
  ctx.registerCommand('compareDatasets', commands.compareDatasets);
  ctx.registerCommand('installNativeBackend', installNativeBackend);
  // The host tests read the context (status, models, panels, notices) through the extension's exports.
  return ctx;
}

export function deactivate(): void {
  ctx?.dispose();
  ctx = undefined;
}
