// The package version, written in by the build (scripts/build.mjs).
declare const DOMLORA_VERSION: string;

// Node runs WebAssembly, but @types/node 20 does not declare it (lib.dom did, and the node project has no DOM): the
// little the engine touches (wasmThreads.ts).
declare namespace WebAssembly {
  type Imports = Record<string, Record<string, unknown>>;
  function validate(bytes: ArrayBufferView | ArrayBuffer): boolean;
  function instantiate(...args: unknown[]): Promise<unknown>;
}
