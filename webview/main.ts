// The PAGE heatmap webview's entry: lays out the panel, draws the state (state.ts) with the renderers (header.ts,
// heatmap.ts, runs.ts), and feeds the host's messages into the state. The user's actions go back through
// actions.ts, the only sender. Browser code only: the DOM and the protocol, never `vscode` or node.
import { StateNotification, TrainPointNotification } from '../src/protocol/webview';
import * as actions from './actions';
import { h } from './dom';
import { bannerSection, headerSection, renderBanner, renderHeader, renderSummary, summarySection } from './header';
import { heatSection, renderHeatmap, tip, updateMarks } from './heatmap';
import { renderRuns, runsSection } from './runs';
import { checkSection, renderCheck, resizeCheck } from './check';
import { comparisonSection, renderComparison } from './compare';
import * as state from './state';

const app = document.getElementById('app')!;

function render(): void {
  if (!state.panelState()) {
    app.replaceChildren(h('p', { class: 'loading' }, 'Loading the PAGE report…'));
    return;
  }
  if (!app.contains(headerSection)) {
    app.replaceChildren(headerSection, bannerSection, summarySection, comparisonSection, heatSection, checkSection, runsSection, tip);
  }
  renderHeatmap();
  renderHeader();
  renderBanner();
  renderSummary();
  renderRuns();
  renderCheck();
  renderComparison();
}

state.onChange((change) => {
  if (change === 'all') {
    render();
  } else if (change === 'placement') {
    updateMarks();
    renderSummary();
    renderHeader();
  } else {
    renderRuns();
  }
});

// ---- Messages from the host -------------------------------------------------------------------------------------

window.addEventListener('message', (e: MessageEvent) => {
  const msg = e.data as unknown;
  if (StateNotification.is(msg)) state.receive(msg.params);
  else if (TrainPointNotification.is(msg)) state.addPoint(msg.params);
});

let resizeTimer: number | undefined;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => { if (state.panelState()) { renderRuns(); resizeCheck(); } tip.hidden = true; }, 120);
});

render();
actions.ready(state.modelDir() ?? document.body.dataset.modelDir);
