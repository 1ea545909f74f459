import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a file under a temporary name in the same folder, then renames it, so a reader (or a crash) never sees a
 * half-written file.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Builds a folder under a temporary sibling name with `fill`, then moves it into place. An existing folder at `dir`
 * is replaced only after the new one is complete.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  const parent = path.dirname(path.resolve(dir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(dir)}.${process.pid}.${Date.now()}.tmp`);
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
    if (fs.existsSync(dir)) {
      const old = `${tmp}.old`;
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, dir);
    }
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
