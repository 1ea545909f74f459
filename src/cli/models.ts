// `domlora models` as text: where the cache is, then one line per model folder (repository or folder, revision,
// architecture, parameters, size on disk, dtype, and "supported" or the reason it is not).
import * as path from 'node:path';
import { formatBytes, formatParams, looksSparse } from '../protocol/format';
import { hfSnapshotOf, type ModelEntry, type ModelsResult } from '../protocol/messages';

function revisionText(m: ModelEntry): string {
  if (!m.revision) return '-';
  const refs = m.refs.length ? m.refs.join(',') : m.current && m.source === 'cache' ? '(newest)' : '';
  return `${m.revision.slice(0, 7)}${refs ? ` ${refs}` : ''}`;
}

function nameText(m: ModelEntry, cwd: string): string {
  if (m.source === 'cache' && m.repoId) return m.repoId;
  const rel = path.relative(cwd, m.path);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : m.path;
}

export function formatModels(r: ModelsResult, cwd = process.cwd()): string {
  const lines: string[] = [];
  const c = r.cache;
  if (c) {
    const where = `${c.dir} (${c.from === 'option' ? '--cache' : c.from === 'default' ? 'the default' : `from ${c.from}`})`;
    const snapshots = r.models.filter((m) => m.source === 'cache').length;
    if (!c.exists) {
      lines.push(`No Hugging Face cache at ${where}. Models that huggingface-cli download, transformers or vLLM fetch land there; `
        + 'set HF_HUB_CACHE or HF_HOME if yours is elsewhere, or pass --cache DIR.');
    } else if (!c.repos) {
      lines.push(`Hugging Face cache ${where}: no models yet (huggingface-cli download ORG/NAME puts one there).`);
    } else {
      lines.push(`Hugging Face cache ${where}: ${c.repos} model repositor${c.repos === 1 ? 'y' : 'ies'}, ${snapshots} snapshot${snapshots === 1 ? '' : 's'}, `
        + `${formatBytes(c.diskBytes)} on disk`);
    }
  }
  if (!r.models.length) return lines.join('\n');
  const header = ['MODEL', 'REVISION', 'ARCH', 'PARAMS', 'ON DISK', 'DTYPE', 'STATUS'];
  const rows = r.models.map((m) => [
    nameText(m, cwd), revisionText(m), m.modelType ?? '-', formatParams(m.parameters),
    `${formatBytes(m.diskBytes)}${looksSparse(m) ? '*' : ''}`, m.dtype ?? '-', m.supported ? 'supported' : `not supported: ${m.reason ?? 'unknown reason'}`,
  ]);
  const right = new Set([3, 4]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => i === cells.length - 1 ? cell
    : right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)).join('  ');
  lines.push(line(header), ...rows.map(line));
  if (r.models.some(looksSparse)) {
    lines.push('* ON DISK counts the blocks allocated to the files, as du does; these folders hold sparse files whose '
      + 'apparent size is larger ("bytes" in --json).');
  }
  return lines.join('\n');
}

/**
 * Where `train` puts an adapter when --out is not given: in the current folder, as `<model folder>-<preset>-adapter`
 * (`ORG--NAME-<preset>-adapter` for a snapshot of the Hugging Face cache). Never beside the model: its folder may be
 * read-only, shared, or the cache itself, and a user who gives no --out looks for the output where they ran the command.
 */
export function defaultAdapterDir(modelDir: string, preset: string, cwd = process.cwd()): string {
  const dir = path.resolve(modelDir);
  const snap = hfSnapshotOf(dir);
  return path.resolve(cwd, `${snap ? snap.folderName : path.basename(dir)}-${preset}-adapter`);
}
