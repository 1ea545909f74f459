// `npm run demo`: the whole product on the embedded default, headless. Writes a small model and dataset of its own,
// then info -> eval -> PAGE probe -> DomLoRA training at the dominant module -> eval with the adapter -> exports.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BackendChoice } from '../protocol/messages';
import type { JobHooks } from '../engine';
import { writeSynthModel, synthDataset, modelInfo, runEval, runProbe, runTrain, runExport, claimOutput, whyNotOurs, badInput, type OutputKind } from '../engine';
import { formatProbe, fmtPct, useColour } from './format';

export async function runDemo(dir: string, backend: BackendChoice, steps: number | undefined, hooks: JobHooks): Promise<void> {
  // Each step reports the backend and the data; once each is enough for a demo.
  const said = new Set<string>();
  const log = hooks.log;
  hooks = { ...hooks, log: (level, message) => {
    const key = message.startsWith('backend:') ? 'backend:' : message.startsWith('data: ') ? message : undefined;
    if (key !== undefined) { if (said.has(key)) return; said.add(key); }
    log?.(level, message);
  } };
  const root = path.resolve(dir);
  const modelDir = path.join(root, 'model');
  const data = path.join(root, 'arithmetic.jsonl');
  const reportFile = path.join(root, 'page-report.json');
  const adapterDir = path.join(root, 'adapter-domlora');
  const configFile = path.join(root, 'lora_config.py');
  const say = (s: string) => process.stdout.write(s + '\n');
  // Every output is claimed before any work: what an earlier demo wrote is reused (the model, the data) or replaced
  // (the rest); anything else of that name is the user's, and stops the demo here with nothing written.
  const outputs: [string, OutputKind][] = [[modelDir, 'demo-model'], [data, 'demo-data'], [reportFile, 'report'], [adapterDir, 'adapter'], [configFile, 'config']];
  const ours = new Set<string>();
  for (const [target, kind] of outputs) {
    if (fs.existsSync(target) && !(fs.statSync(target).isDirectory() && fs.readdirSync(target).length === 0)) {
      const why = whyNotOurs(target, kind);
      if (why) throw badInput(`${why}; the demo reuses or replaces only what DomLoRA wrote, so it is left as it is: choose another --dir`, target);
      ours.add(target);
    }
  }
  for (const [target, kind] of outputs) claimOutput(target, kind, { force: true, flag: '--dir' });
  if (!ours.has(modelDir)) await writeSynthModel(modelDir);
  if (!ours.has(data)) synthDataset(data);
  say(`== DomLoRA demo in ${root}`);
  say(`   model: ${modelDir} (random weights written by DomLoRA itself), data: ${data}\n`);
  const info = modelInfo(modelDir);
  say(`== info: ${info.model.modelType}, ${info.model.layers} layers x ${info.kinds.length} module kinds = ${info.modules.length} candidate adapters, ${info.model.parameters.toLocaleString('en-US')} parameters\n`);
  const ev = await runEval({ modelDir, data, backend, maxSamples: 16 }, hooks);
  say(`== eval: mean loss ${ev.meanLoss.toFixed(4)} over ${ev.samples} records on ${ev.backend}\n`);
  const { report } = await runProbe({ modelDir, data, backend, samples: 16, out: reportFile, force: true }, hooks);
  say(`== PAGE probe (report: ${reportFile})`);
  say(formatProbe(report, useColour(process.stdout)) + '\n');
  // The learning rate and the number of steps are the product's defaults (src/protocol/params.ts), as a user gets them.
  const tr = await runTrain({ modelDir, data, fromReport: reportFile, out: adapterDir, force: true, steps, backend, evalSplit: 0.1 }, hooks);
  say(`== DomLoRA training at ${tr.targets[0]}: ${tr.trainableParams.toLocaleString('en-US')} trainable parameters (${fmtPct(tr.ratioToVanilla)} of vanilla LoRA)`);
  say(`   train loss ${tr.trainLossFirst?.toFixed(4)} -> ${tr.trainLossLast?.toFixed(4)}, eval loss ${tr.evalLossBefore?.toFixed(4)} -> ${tr.evalLossAfter?.toFixed(4)}, ${tr.seconds.toFixed(1)} s`);
  say(`   adapter (PEFT format): ${adapterDir}\n`);
  const ev2 = await runEval({ modelDir, data, backend, maxSamples: 16, adapter: adapterDir }, hooks);
  say(`== eval with the adapter: mean loss ${ev2.meanLoss.toFixed(4)} (was ${ev.meanLoss.toFixed(4)})\n`);
  const ex = await runExport({ adapterDir, format: 'peft-config', out: configFile, force: true }, hooks);
  say(`== export\n${ex.text}`);
}
