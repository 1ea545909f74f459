// What an architecture is, as data: the one place that knows a `model_type`. Each file of this folder exports one
// ArchDef, written as the difference from the architecture it extends (the way transformers' modular files are), and
// registry.ts lists them. The rest of the engine reads these fields; no `model_type` string appears outside arch/.

/**
 * Which kind of module plays which part of a decoder layer. An architecture has either separate q/k/v or one fused
 * qkv; either a gated MLP (gate and up, separate or fused) or a plain one (fc then an activation).
 */
export interface ArchRoles {
  q?: string; k?: string; v?: string; qkv?: string; o: string;
  gate?: string; up?: string; gateUp?: string; fc?: string; down: string;
}

/** The linear modules of a layer: the adapter candidates. */
export interface ModuleLayout {
  /** The candidate module kinds, in heatmap column order. A kind is also what PEFT's target_modules matches. */
  readonly kinds: readonly string[];
  /** Each kind's path under its layer (Hugging Face's names). */
  readonly paths: Readonly<Record<string, string>>;
  /** Layer N's modules live under `${layerPrefix}.N`. */
  readonly layerPrefix: string;
  readonly roles: Readonly<ArchRoles>;
  /** Weights stored [in, out] (GPT-2's Conv1D), so PEFT needs fan_in_fan_out. */
  readonly conv1d?: boolean;
}

/**
 * The norms of a layer, by the part they play, as paths under the layer (`.weight`, and `.bias` for LayerNorm, are
 * appended). A name that is present turns the norm on: `attnOut` and `mlpOut` are Gemma 2's sandwich norms (and OLMo
 * 2's only ones, which has no `input` or `preMlp`), `q` and `k` the query/key norms of Qwen 3, Gemma 3 and OLMo 2.
 */
export interface LayerNormNames {
  /** Before attention (input_layernorm, GPT-2's ln_1); absent in OLMo 2, whose attention reads the layer input. */
  readonly input?: string;
  /** Before the MLP (Llama's post_attention_layernorm, Gemma 2's pre_feedforward_layernorm, GPT-2's ln_2). */
  readonly preMlp?: string;
  /** On the attention output, before the residual add (Gemma 2's and OLMo 2's post_attention_layernorm). */
  readonly attnOut?: string;
  /** On the MLP output, before the residual add (Gemma 2's and OLMo 2's post_feedforward_layernorm). */
  readonly mlpOut?: string;
  readonly q?: string;
  readonly k?: string;
  /**
   * What the q/k norms normalise: each head over head_dim (`head`, Qwen 3 and Gemma 3, the default), or the whole
   * projection at once, over heads x head_dim (`projection`, OLMo 2's q_norm and k_norm, before the heads are split).
   */
  readonly qkOver?: 'head' | 'projection';
}

/** The names of the tensors outside the linear modules. */
export interface TensorNames {
  readonly embed: string;
  /** Learned absolute position embeddings (GPT-2). */
  readonly positions?: string;
  /** The final norm, as a prefix of `.weight` (and `.bias`). */
  readonly finalNorm: string;
  /** The output head when it is not tied to the embeddings. */
  readonly head: string;
  readonly norms: LayerNormNames;
  /** A prefix checkpoints may leave out of the base model's tensor names (GPT-2's original files: no `transformer.`). */
  readonly optionalPrefix?: string;
}

/** config.json key names and the defaults transformers applies when a key is missing. */
export interface ConfigKeys {
  readonly hidden: string;
  readonly heads: string;
  readonly layers: string;
  readonly intermediate: string;
  /** Absent: as many key/value heads as heads (GPT-2). */
  readonly kvHeads?: string;
  readonly eps: string;
  readonly maxPos: string;
  /** The activation's keys, the first one present wins; errors name the first. */
  readonly act: readonly string[];
  /** Read before rope_theta (GPT-NeoX's rotary_emb_base). */
  readonly ropeTheta?: string;
  /** Read before partial_rotary_factor (GPT-NeoX's rotary_pct). */
  readonly partialRotary?: string;
}

export interface ConfigDefaults {
  readonly tied: boolean;
  readonly eps: number;
  readonly act: string;
  readonly maxPos: number;
  /** When head_dim is absent: this, else hidden_size / num_attention_heads. */
  readonly headDim?: number;
  /** When the intermediate size's key is absent (GPT-2's n_inner: 4 x hidden); otherwise the key is required. */
  readonly intermediateTimesHidden?: number;
  /** The fraction of each head RoPE rotates when the config does not say. */
  readonly partialRotary?: number;
  /** RoPE's base when the config has no rope_theta (10000 unless said: SmolLM3's is 2,000,000). */
  readonly ropeTheta?: number;
}

/** Reads optional numbers of a raw config.json, with the file named in errors. */
export interface ConfigReader {
  readonly raw: Record<string, unknown>;
  readonly file: string;
  readonly hiddenSize: number;
  readonly headDim: number;
  readonly numLayers: number;
  /** transformers v5's rope_parameters.sliding_attention (Gemma 3), when the config has it. */
  readonly ropeLocal: Record<string, unknown> | null;
  /** A positive number (`value`, else the key's), or the fallback when it is missing or null; errors name the key. */
  num(key: string, fallback: number, value?: unknown): number;
  /** A positive number, null when the config says null, or the fallback when the key is missing. */
  optNum(key: string, fallback: number | null): number | null;
}

/** What the maths of a layer does differently from Llama's, read from the config. */
export interface ArchFlags {
  normType: 'rms' | 'layernorm';
  /** Added to every norm weight: Gemma scales by (1 + weight). */
  normOffset: number;
  /** Multiplies the token embeddings (Gemma: sqrt(hidden), rounded to float32). */
  embedScale: number;
  /** The factor on q.k (1/sqrt(head_dim), or Gemma 2's query_pre_attn_scalar^-1/2). */
  attnScale: number;
  /** GPT-2's scale_attn_by_inverse_layer_idx: scores of layer l also divided by l + 1. */
  attnScaleByLayer: boolean;
  /** Gemma 2: scores become cap * tanh(scores / cap) before the mask. */
  attnSoftcap: number | null;
  /** Gemma 2: logits become cap * tanh(logits / cap). */
  finalSoftcap: number | null;
  /** Granite's residual_multiplier: each block's output is scaled by it before the residual add (1 elsewhere). */
  residualScale: number;
  /** Granite's logits_scaling: the logits are divided by it (1 elsewhere). */
  logitScale: number;
  /** Gemma 3: the RoPE base of sliding-window layers (rope_local_base_freq, unscaled); null: every layer uses ropeTheta. */
  ropeLocalTheta: number | null;
  /** GPT-NeoX's use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)), both blocks reading the layer's input. */
  parallelResidual: boolean;
  /** GPT-NeoX: the fused query_key_value output is [q, k, v] per head, not a block of q, then of k, then of v. */
  qkvPerHead: boolean;
  /** Biases on q, k, v (or the fused qkv). */
  attentionBias: boolean;
  /** Biases on the MLP's linears. */
  mlpBias: boolean;
}

export interface ConfigRules {
  readonly keys: ConfigKeys;
  readonly defaults: ConfigDefaults;
  /** `rope`, or `learned` absolute position embeddings (GPT-2, which then ignores rope_scaling). */
  readonly positions: 'rope' | 'learned';
  /** transformers rotates part of each head only in some attentions (Phi-3, GPT-NeoX); the others refuse a factor. */
  readonly partialRotary: boolean;
  flags(c: ConfigReader): ArchFlags;
  /** Per layer: how many positions (itself included) a query sees, or null for all earlier ones. */
  slidingWindows(c: ConfigReader): (number | null)[];
  /** Per layer: whether RoPE rotates its queries and keys (SmolLM3's no_rope_layers); absent, every layer does. */
  ropeLayers?(c: ConfigReader): boolean[];
}

/** Which linears carry a bias, for the parameter count and synthetic folders (loading takes whatever is stored). */
export interface BiasRoles { attn: boolean; o: boolean; mlp: boolean }

/** The shape of a synthetic model folder (tests, the demo, the bench). */
export interface SynthShape {
  hiddenSize: number; intermediateSize: number; layers: number; heads: number; kvHeads: number; vocabSize: number;
  tied: boolean; seed: number; headDim?: number; dtype?: 'F32' | 'F16' | 'BF16'; attentionBias?: boolean;
  /** The architecture (default llama): its weight names, its extra tensors and its config keys. */
  arch?: string;
  /** Standard deviation of the token embeddings (default 0.5). Real checkpoints are near 0.02, which starts the loss
   *  near ln(vocab) instead of far above it. */
  embedStd?: number;
  /** Merged into config.json last (sliding_window, rope_scaling, soft-capping values, ...). */
  config?: Record<string, unknown>;
  /** GPT-2 only: store the base model's tensors without the `transformer.` prefix, as the original checkpoints do. */
  unprefixed?: boolean;
  /** How weights are drawn: normal (default), or uniform of the same variance (much faster, for bench-sized models). */
  init?: 'normal' | 'uniform';
}

export interface SynthRules {
  /** config.json as transformers writes it for this architecture (its own class name and keys). */
  config(shape: SynthShape, headDim: number): Record<string, unknown>;
  /** Which linears of a synthetic folder get a bias, from the finished config. */
  biases(config: Record<string, unknown>, shape: SynthShape): BiasRoles;
  /** The standard deviation of synthetic biases (Qwen's are large in trained checkpoints). */
  readonly biasStd?: number;
}

export interface ArchDef {
  readonly modelType: string;
  /** transformers' class for causal LM, the `architectures` entry of the config.json it writes. */
  readonly hfClass: string;
  readonly modules: ModuleLayout;
  readonly tensors: TensorNames;
  readonly config: ConfigRules;
  /** Which of the linears have biases for this normalised flag set (parameter count). */
  biases(flags: Pick<ArchFlags, 'attentionBias' | 'mlpBias'>): BiasRoles;
  readonly synth: SynthRules;
  /** Exports: Ollama imports safetensors LoRA adapters for a few architectures only. */
  readonly ollama: boolean;
}

/** An architecture written as the difference from its base: each section is merged shallowly over the base's. */
export type ArchPatch = {
  modelType: string; hfClass: string;
  modules?: Partial<ModuleLayout>;
  tensors?: Partial<Omit<TensorNames, 'norms'>> & { norms?: Partial<LayerNormNames> };
  config?: Partial<Omit<ConfigRules, 'keys' | 'defaults'>> & { keys?: Partial<ConfigKeys>; defaults?: Partial<ConfigDefaults> };
  biases?: ArchDef['biases'];
  synth?: Partial<SynthRules>;
  ollama?: boolean;
};

export function extend(base: ArchDef, patch: ArchPatch): ArchDef {
  return {
    modelType: patch.modelType,
    hfClass: patch.hfClass,
    modules: { ...base.modules, ...patch.modules },
    tensors: { ...base.tensors, ...patch.tensors, norms: { ...base.tensors.norms, ...patch.tensors?.norms } },
    config: {
      ...base.config, ...patch.config,
      keys: { ...base.config.keys, ...patch.config?.keys },
      defaults: { ...base.config.defaults, ...patch.config?.defaults },
    },
    biases: patch.biases ?? base.biases,
    synth: { ...base.synth, ...patch.synth },
    ollama: patch.ollama ?? base.ollama,
  };
}
