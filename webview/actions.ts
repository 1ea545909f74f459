// The webview's only sender of messages: each user action is one message to the host (src/protocol/webview.ts).
// ESLint keeps postMessage out of every other webview file.
import {
  CancelCommand, CheckPlacementCommand, CloseComparisonCommand, CompareDatasetsCommand, ExportCommand, PlaceCommand, ReadyCommand,
  RerunProbeCommand, RevealCommand, RevealPlacementCommand, TrainCommand,
  type MessageType, type Preset,
} from '../src/protocol/webview';
import { vscodeApi } from './api';
import * as state from './state';

function send<P>(type: MessageType<P>, params: P): void {
  vscodeApi.postMessage(type.make(params));
}

/** The webview has (re)loaded: the host answers with the state of this model. */
export function ready(modelDir: string | undefined): void {
  send(ReadyCommand, { modelDir });
}

export function train(preset: Preset): void {
  send(TrainCommand, { preset });
}

export function exportAdapter(): void {
  send(ExportCommand, {});
}

export function cancel(): void {
  send(CancelCommand, {});
}

export function rerunProbe(): void {
  send(RerunProbeCommand, {});
}

/** Reveals the adapter of a run in the explorer or the OS (the host knows its folder; the webview names the run). */
export function revealAdapter(preset: Preset): void {
  send(RevealCommand, { what: 'adapter', preset });
}

/** Places the adapter at a module (undefined: back to the dominant one): drawn at once, then sent to the host. */
export function place(module: string | undefined): void {
  if (state.place(module)) send(PlaceCommand, { module });
}

/** Runs the placement check for the report shown (the host asks how many seeds), or resumes the one that stopped. */
export function checkPlacement(resume = false): void {
  send(CheckPlacementCommand, resume ? { resume: true } : {});
}

/** Opens the adapters of one placement of the check: by its id; the host knows the folder. */
export function revealPlacement(placement: string): void {
  send(RevealPlacementCommand, { placement });
}

/** Asks the host to pick reports of this model on other data and compare them. */
export function compareDatasets(): void {
  send(CompareDatasetsCommand, {});
}

export function closeComparison(): void {
  send(CloseComparisonCommand, {});
}
