// Every architecture the engine runs, by model_type. Adding one: a file in this folder, written as the difference
// from the architecture it extends, and one line here.
import { badInput } from '../runtime/errors';
import type { ArchDef } from './types';
import { llama } from './llama';
import { mistral } from './mistral';
import { qwen2 } from './qwen2';
import { qwen3 } from './qwen3';
import { gemma } from './gemma';
import { gemma2 } from './gemma2';
import { gemma3_text } from './gemma3_text';
import { phi3 } from './phi3';
import { gpt2 } from './gpt2';
import { gpt_neox } from './gpt_neox';
import { smollm3 } from './smollm3';
import { olmo2 } from './olmo2';
import { granite } from './granite';

const ALL: readonly ArchDef[] = [llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, gpt2, gpt_neox, smollm3, olmo2, granite];

export const ARCHITECTURES: Readonly<Record<string, ArchDef>> = Object.fromEntries(ALL.map((a) => [a.modelType, a]));
export const SUPPORTED_MODEL_TYPES: readonly string[] = ALL.map((a) => a.modelType);
/** The architecture the others are written against, and the one a synthetic folder has unless asked otherwise. */
export const BASE_MODEL_TYPE = llama.modelType;

/** The definition of a model_type; an unknown one fails with the list of supported types. */
export function archOf(modelType: unknown, file?: string): ArchDef {
  if (typeof modelType !== 'string' || !Object.hasOwn(ARCHITECTURES, modelType)) {
    throw badInput(`model_type ${JSON.stringify(modelType)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`, file);
  }
  return ARCHITECTURES[modelType];
}
