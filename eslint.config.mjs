// ESLint: the recommended rules of ESLint and typescript-eslint, and the house's boundaries (docs/DESIGN.md,
// section 2), checked by a machine rather than by memory:
// - `vscode` is imported by the extension host alone (src/host, src/extension.ts);
// - the webview and the protocol run without node: no node built-ins there;
// - the engine is a library: it imports neither the host, the CLI nor the worker; the host runs no tensor code;
// - the protocol imports nothing but its own files; the webview shares only src/protocol with the rest;
// - in the webview, messages to the host leave from webview/actions.ts alone.
// The globs take in every file of a folder, whatever subfolder it sits in.
import js from '@eslint/js';
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

const vscode = { name: 'vscode', message: 'Only the extension host (src/host, src/extension.ts) imports vscode.' };
const nodeBuiltins = builtinModules.filter((m) => !m.startsWith('_')).flatMap((m) => [m, `node:${m}`])
  .map((name) => ({ name, message: 'This code runs without node (in the webview, or on both sides of the protocol).' }));
/** An import that leaves the importing folder for one of `folders` of src/ (at any depth below src/<folder>/). */
const upTo = (folders, message) => ({ regex: `^(\\.\\./)+(${folders.join('|')})(/|$)`, message });

const restrict = (options) => ({ 'no-restricted-imports': ['error', options] });

export default tseslint.config(
  {
    ignores: ['dist/', 'out/', 'node_modules/', '.vscode-test/', 'test-results/', 'demo-output/', 'bench-results/', '.domlora/'],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // `_name` marks a parameter or binding kept for its position or to leave a field out of a rest object.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // Plain node scripts (the build, the e2e driver, a benchmark): node's globals, and the browser's inside the
    // callbacks the e2e driver hands to the page.
    files: ['**/*.mjs'],
    languageOptions: {
      globals: Object.fromEntries(['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'setInterval',
        'clearInterval', 'performance', 'fetch', 'document', 'window', 'getComputedStyle'].map((g) => [g, 'readonly'])),
    },
  },

  {
    // The stand-in npm packages of test/fixtures (CommonJS, as the packages they stand in for).
    files: ['test/fixtures/**/*.js'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: Object.fromEntries(['require', 'module', 'process', 'console', '__dirname'].map((g) => [g, 'readonly'])),
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },

  // ---- Boundaries -------------------------------------------------------------------------------------------------
  {
    files: ['src/engine/**'],
    rules: restrict({
      paths: [vscode],
      patterns: [upTo(['host', 'cli', 'worker', 'extension'], 'The engine is a library: it imports neither the extension host, the CLI nor the worker.')],
    }),
  },
  {
    files: ['src/cli/**'],
    rules: restrict({ paths: [vscode], patterns: [upTo(['host', 'worker', 'extension'], 'The CLI is a front end over the engine, beside the extension.')] }),
  },
  {
    files: ['src/worker/**'],
    rules: restrict({ paths: [vscode], patterns: [upTo(['host', 'cli', 'extension'], 'The worker runs the engine for the host; it imports neither the host nor the CLI.')] }),
  },
  {
    files: ['src/host/**', 'src/extension.ts'],
    rules: restrict({
      patterns: [
        upTo(['engine', 'worker', 'cli'], 'The extension host never runs tensor code: jobs go to the worker process through host/worker.ts.'),
        { group: ['@tensorflow/*'], message: 'The extension host never runs tensor code: jobs go to the worker process.' },
      ],
    }),
  },
  {
    files: ['src/protocol/**'],
    rules: restrict({
      paths: [vscode, ...nodeBuiltins],
      patterns: [{ regex: '^(?!\\./)', message: 'The protocol imports nothing but its own files: plain JSON types that every side shares.' }],
    }),
  },
  {
    files: ['webview/**'],
    rules: restrict({
      paths: [vscode, ...nodeBuiltins],
      patterns: [{ regex: '^\\.\\./src/(?!protocol/)', message: 'The webview shares only src/protocol with the rest of DomLoRA.' }],
    }),
  },
  {
    files: ['webview/**'],
    ignores: ['webview/actions.ts'],
    rules: {
      'no-restricted-syntax': ['error', {
        selector: "CallExpression[callee.property.name='postMessage']",
        message: 'Messages to the host leave from webview/actions.ts alone.',
      }],
    },
  },
);
