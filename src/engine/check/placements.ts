// The placements a check trains: what the user asked for (`dominant`, `runner-up`, `lowest`, `random:K`, `vanilla`,
// module names) resolved against the model's modules and a probe report into concrete module lists. The names are
// checked against the model before anything runs; the ones that need the report are resolved once it is known.
import type { PlacementKind, ProbeReport } from '../../protocol/messages';
import { moduleLabel } from '../../protocol/messages';
import type { ModuleSpec } from '../hf/modules';
import { badInput } from '../runtime/errors';
import { Rng } from '../runtime/rng';

/**
 * The default list: the dominant module, the next by PAGE, the one with the least, two random modules of the
 * dominant's kind (the same parameter count, so size cannot explain a difference), and vanilla LoRA as the reference.
 */
export const CHECK_PLACEMENTS: readonly string[] = ['dominant', 'runner-up', 'lowest', 'random:2', 'vanilla'];

/** One placement to train, as the check's state records it. */
export interface PlannedPlacement { id: string; spec: string; kind: PlacementKind; modules: string[] }

type Parsed = { spec: string; kind: Exclude<PlacementKind, 'random'> } | { spec: string; kind: 'random'; count: number };

const KEYWORDS: Record<string, Exclude<PlacementKind, 'random' | 'module'>> = { dominant: 'dominant', 'runner-up': 'runner-up', lowest: 'lowest', vanilla: 'vanilla' };

/**
 * Reads the list (each entry may itself hold several, comma-separated) and checks it against the model, before any
 * work: unknown words and module names are refused with the nearest names, and so is a list that names one thing twice.
 */
export function parsePlacements(list: readonly string[] | undefined, modules: readonly ModuleSpec[]): Parsed[] {
  const items = (list?.length ? list : CHECK_PLACEMENTS).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);
  if (!items.length) throw badInput('--placements is empty; give e.g. dominant,runner-up,lowest,random:2,vanilla');
  const names = new Set(modules.map((m) => m.name));
  const out: Parsed[] = [];
  const seen = new Set<string>();
  for (const spec of items) {
    const word = spec.toLowerCase();
    let p: Parsed;
    const random = /^random(?::(\d+))?$/.exec(word);
    if (KEYWORDS[word]) {
      p = { spec: word, kind: KEYWORDS[word] };
    } else if (random) {
      const count = random[1] === undefined ? 1 : Number(random[1]);
      if (!(count >= 1 && count <= 100)) throw badInput(`--placements: "${spec}" must name 1 to 100 random modules (random:2)`);
      p = { spec: word, kind: 'random', count };
    } else if (names.has(spec)) {
      p = { spec, kind: 'module' };
    } else {
      const tail = spec.split('.').pop() ?? '';
      const near = modules.filter((m) => m.name.endsWith(tail)).slice(0, 3).map((m) => m.name);
      throw badInput(`--placements: "${spec}" is neither dominant, runner-up, lowest, random:K, vanilla nor a linear module of this model` +
        (near.length ? ` (e.g. ${near.join(', ')})` : ''));
    }
    const key = p.kind === 'random' ? 'random' : p.spec;
    if (seen.has(key)) throw badInput(`--placements names ${p.kind === 'random' ? 'random:K' : `"${spec}"`} twice`);
    seen.add(key);
    out.push(p);
  }
  return out;
}

/**
 * The concrete placements once the report is known. Random modules are drawn, with `seed`, from the dominant's kind
 * among the modules no other placement names; the same seed draws the same modules, whatever the seeds of the runs.
 */
export function resolvePlacements(parsed: readonly Parsed[], modules: readonly ModuleSpec[], report: ProbeReport, seed: number,
  warn: (m: string) => void = () => {}): PlannedPlacement[] {
  const byRank = [...report.modules].sort((a, b) => a.rank - b.rank);
  const known = new Set(modules.map((m) => m.name));
  const pick = (name: string | undefined, what: string): string => {
    if (!name || !known.has(name)) throw badInput(`the report's ${what} module ${name ?? '(none)'} is not a module of this model`, undefined);
    return name;
  };
  const out: PlannedPlacement[] = [];
  for (const p of parsed) {
    switch (p.kind) {
      case 'dominant': out.push({ id: 'dominant', spec: p.spec, kind: p.kind, modules: [pick(report.dominant.name, 'dominant')] }); break;
      case 'runner-up': out.push({ id: 'runner-up', spec: p.spec, kind: p.kind, modules: [pick(byRank[1]?.name, 'runner-up')] }); break;
      case 'lowest': out.push({ id: 'lowest', spec: p.spec, kind: p.kind, modules: [pick(byRank[byRank.length - 1]?.name, 'lowest')] }); break;
      case 'vanilla': out.push({ id: 'vanilla', spec: p.spec, kind: p.kind, modules: modules.map((m) => m.name) }); break;
      case 'module': out.push({ id: p.spec, spec: p.spec, kind: p.kind, modules: [p.spec] }); break;
      case 'random': break; // drawn below, once every named module is known
    }
  }
  const taken = new Set(out.filter((p) => p.kind !== 'vanilla').flatMap((p) => p.modules));
  for (let i = 0; i < out.length; i++) {
    for (let j = i + 1; j < out.length; j++) {
      if (out[i].kind !== 'vanilla' && out[j].kind !== 'vanilla' && out[i].modules[0] === out[j].modules[0]) {
        throw badInput(`--placements: ${out[i].spec} and ${out[j].spec} are the same module (${out[i].modules[0]}); name each placement once`);
      }
    }
  }
  const random = parsed.find((p): p is Extract<Parsed, { kind: 'random' }> => p.kind === 'random');
  if (random) {
    const kind = report.dominant.kind;
    const pool = modules.filter((m) => m.kind === kind && !taken.has(m.name)).map((m) => m.name);
    const drawn = new Rng(seed ^ 0x2545f491).shuffle([...pool]).slice(0, random.count).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    if (!drawn.length) throw badInput(`--placements: ${random.spec} finds no ${kind} module left to draw (every one is already placed)`);
    if (drawn.length < random.count) warn(`${random.spec}: only ${drawn.length} ${kind} module(s) are left to draw; the check trains ${drawn.length}`);
    // In the list where the user put random:K, one placement per drawn module.
    const at = parsed.indexOf(random);
    const before = parsed.slice(0, at).filter((p) => p.kind !== 'random').length;
    out.splice(before, 0, ...drawn.map((name, k) => ({ id: `random-${k + 1}`, spec: random.spec, kind: 'random' as const, modules: [name] })));
  }
  return out;
}

/** How a placement is named in the table and the panel: `dominant (layer 1 · down_proj)`, `vanilla (all 35 modules)`. */
export function placementLabel(p: PlannedPlacement, report: ProbeReport): string {
  if (p.kind === 'vanilla') return `vanilla (all ${p.modules.length} modules)`;
  const where = moduleLabel(p.modules[0], report);
  return p.kind === 'module' ? where : `${p.id} (${where})`;
}
