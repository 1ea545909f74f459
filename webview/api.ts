// The webview's handle on VS Code, acquired once (a second acquireVsCodeApi() throws). Messages to the host leave
// only through actions.ts (ESLint checks it); the state kept across hide and restore only through state.ts.
interface VsCodeApi { postMessage(msg: unknown): void; getState(): unknown; setState(state: unknown): void }
declare function acquireVsCodeApi(): VsCodeApi;

export const vscodeApi = acquireVsCodeApi();
