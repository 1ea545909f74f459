// Loads the native TensorFlow backend (@tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node) from the folder the
// extension installed it into (DOMLORA_NATIVE_DIR, also what the CLI reads), else from beside DomLoRA itself.
//
// One tfjs-core: the bundles keep @tensorflow/tfjs-core external, so the worker runs the copy in its own
// node_modules, while an install of tfjs-node brings a second copy (through @tensorflow/tfjs) into its folder.
// tfjs-node registers its "tensorflow" backend and kernels with whichever copy it requires, so before it loads, every
// copy of the shared packages in that folder is made to resolve to the worker's own module (Node's require cache is
// keyed by file: an entry under the folder copy's file answers with the worker's exports). A copy of another version
// is refused: tfjs-node must be the same version as the worker's tfjs-core, exactly.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';

export const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;
export type NativePackage = typeof NATIVE_PACKAGES[number];

/** Packages the worker has loaded itself and that a native install brings again: they must stay one instance each. */
export const SHARED_PACKAGES = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-cpu'] as const;

export type NativeLoad =
  | { loaded: true; pkg: NativePackage; version: string; from: string }
  | { loaded: false; reason: string };

const own = createRequire(__filename);

function packageJson(dir: string): { name?: string; version?: string } {
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
}

/** The folder of a package as `req` resolves it, or undefined when it does not resolve. */
function packageDir(req: NodeJS.Require, name: string): string | undefined {
  try {
    return path.dirname(req.resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

/** Every copy of the shared packages under `root`'s node_modules trees (npm may nest one below a dependant). */
export function findCopies(root: string, names: readonly string[] = SHARED_PACKAGES, depth = 8): { name: string; dir: string }[] {
  const found: { name: string; dir: string }[] = [];
  const visit = (nm: string, level: number): void => {
    if (level > depth) return;
    let entries: string[];
    try { entries = fs.readdirSync(nm); } catch { return; }
    for (const e of entries) {
      const scoped = e.startsWith('@') ? (() => { try { return fs.readdirSync(path.join(nm, e)).map((s) => `${e}/${s}`); } catch { return []; } })() : [e];
      for (const name of scoped) {
        const dir = path.join(nm, name);
        if (names.includes(name)) found.push({ name, dir });
        visit(path.join(dir, 'node_modules'), level + 1);
      }
    }
  };
  visit(path.join(root, 'node_modules'), 0);
  return found;
}

/**
 * Makes every copy of the shared packages under `root` answer with the worker's own module. Throws, naming the
 * folder and both versions, when a copy is of another version than the worker's.
 */
export function shareModules(root: string): string[] {
  const notes: string[] = [];
  for (const copy of findCopies(root)) {
    const ownDir = packageDir(own, copy.name);
    if (!ownDir) continue;
    const ownVersion = packageJson(ownDir).version;
    const version = packageJson(copy.dir).version;
    if (version !== ownVersion) {
      throw new Error(`${copy.dir} is ${copy.name} ${version}, but DomLoRA runs ${ownVersion}: the native backend must be built `
        + `for tfjs ${ownVersion} exactly (install @tensorflow/tfjs-node@${ownVersion} again)`);
    }
    const ownMain = fs.realpathSync(own.resolve(copy.name));
    own(copy.name); // loaded, so its entry is in the cache
    const ownEntry = own.cache[ownMain];
    const copyMain = fs.realpathSync(createRequire(path.join(copy.dir, 'package.json')).resolve(copy.dir));
    if (copyMain === ownMain || !ownEntry) continue;
    own.cache[copyMain] = ownEntry;
    notes.push(`${path.relative(root, copy.dir)} -> DomLoRA's own ${copy.name} ${ownVersion}`);
  }
  return notes;
}

/**
 * Loads `pkg`: from `dir` (DOMLORA_NATIVE_DIR) when it holds it, else from beside DomLoRA. Returns why not when it
 * is installed in neither place; throws (with the folder) when it is installed but fails to load.
 */
export function loadNativePackage(pkg: NativePackage, dir: string | undefined): NativeLoad {
  const local = dir ? createRequire(path.join(path.resolve(dir), 'package.json')) : undefined;
  const localDir = local && packageDir(local, pkg);
  if (local && localDir) {
    const version = packageJson(localDir).version ?? '?';
    try {
      shareModules(path.resolve(dir!));
      local(pkg);
    } catch (e) {
      throw new Error(`${pkg} ${version} in ${dir} failed to load: ${e instanceof Error ? e.message : String(e)}`);
    }
    return { loaded: true, pkg, version, from: path.resolve(dir!) };
  }
  const besideDir = packageDir(own, pkg);
  if (!besideDir) return { loaded: false, reason: dir ? `not installed (neither in ${dir} nor beside DomLoRA)` : 'not installed' };
  const version = packageJson(besideDir).version ?? '?';
  try {
    own(pkg);
  } catch (e) {
    throw new Error(`${pkg} ${version} in ${besideDir} failed to load: ${e instanceof Error ? e.message : String(e)}`);
  }
  return { loaded: true, pkg, version, from: besideDir };
}
