// What each declaration kind may contain: one table, read by the declaration checker and rendered into
// the docs. Value types are small descriptors; the checker interprets them.

export type DeclKind = 'backbone' | 'lora' | 'head' | 'dataset' | 'task' | 'stage';

export type ValueType =
  | { t: 'number'; min?: number; max?: number; exclusiveMin?: boolean; integer?: boolean }
  | { t: 'duration' } // `2k updates` or a plain count of updates
  | { t: 'string' }
  | { t: 'bool' }
  | { t: 'enum'; values: readonly string[] }
  | { t: 'ref'; kinds: readonly DeclKind[] }
  /** A call to one of the named functions (`adamw(...)`), or the bare name; args are checked by name. */
  | { t: 'call'; functions: Readonly<Record<string, readonly string[]>> }
  | { t: 'selector' } // a parameter path pattern
  | { t: 'list'; of: ValueType }
  /** One value or a list of them. */
  | { t: 'oneOrList'; of: ValueType };

export interface PropSpec {
  readonly type: ValueType;
  readonly required?: boolean;
  readonly doc: string;
}

export interface BlockSpec {
  readonly props: Readonly<Record<string, PropSpec>>;
  /** Nested blocks; `label` says whether `key NAME { }` takes a name and what it names. */
  readonly blocks?: Readonly<Record<string, NestedSpec>>;
  /** For blocks whose keys are names (`mix { caption: 0.4 }`): the kind each key refers to and the value type. */
  readonly keyed?: { readonly keyKinds: readonly DeclKind[]; readonly value: ValueType };
}

export interface NestedSpec {
  readonly label: 'none' | { readonly refers: DeclKind | 'any'; readonly required: boolean };
  readonly repeatable: boolean;
  readonly spec: BlockSpec;
  readonly doc: string;
}

export interface DeclSpec {
  /** `= VALUE`: a call of a module (`module`), of a dataset format (`dataset-format`), or not allowed. */
  readonly value: 'module' | 'dataset-format' | 'none';
  /** `on TARGET`: a backbone, a backbone's output, or not allowed. */
  readonly on: 'backbone' | 'backbone-output' | 'none';
  readonly block: BlockSpec;
  readonly doc: string;
}

const num = (extra: Omit<Extract<ValueType, { t: 'number' }>, 't'> = {}): ValueType => ({ t: 'number', ...extra });
const positive: ValueType = num({ min: 0, exclusiveMin: true });
const positiveInt: ValueType = num({ min: 1, integer: true });
const str: ValueType = { t: 'string' };
const strings: ValueType = { t: 'list', of: str };
const duration: ValueType = { t: 'duration' };
export const PRECISIONS = ['fp32', 'fp16', 'bf16'] as const;

const weightsBlock: NestedSpec = {
  label: 'none',
  repeatable: false,
  doc: 'where the weights come from and how checkpoint keys map to parameter paths',
  spec: {
    props: {
      path: { type: str, required: true, doc: '.pth (torch zip), .pt, .ckpt or .safetensors file' },
      format: { type: { t: 'enum', values: ['auto', 'torch', 'safetensors'] }, doc: 'file format (default: from the extension)' },
      strip_prefix: { type: str, doc: 'removed from the start of every key that has it (`visual.`)' },
      drop: { type: strings, doc: 'glob patterns of keys to ignore (`text*`, `visual.*head*`)' },
      allow_missing: { type: strings, doc: 'parameter paths that may be absent from the file (kept at their init)' },
    },
  },
};

/** Dataset formats and the arguments each accepts. */
export const DATASET_FORMATS: Readonly<Record<string, readonly string[]>> = {
  caption_hdf5: ['root', 'split', 'name', 'captions_per_image', 'max_len'],
  coco_instances: ['root', 'images', 'annotations', 'split', 'task'],
  synthetic: ['size', 'seed'],
};

const taskOverrides: BlockSpec = {
  props: {
    batch: { type: positiveInt, doc: 'global batch size (the original: per-GPU batch x 8 GPUs)' },
    lr: { type: positive, doc: 'peak learning rate for this task' },
    updates: { type: duration, doc: 'optimizer updates for this task' },
    warmup: { type: duration, doc: 'linear warmup length' },
    checkpoint: { type: duration, doc: 'checkpoint interval' },
  },
};

export const DECLS: Readonly<Record<DeclKind, DeclSpec>> = {
  backbone: {
    value: 'module',
    on: 'none',
    doc: 'an instance of a backbone module, its weights and precision',
    block: {
      props: { precision: { type: { t: 'enum', values: PRECISIONS }, doc: 'storage and compute precision of the frozen weights' } },
      blocks: { weights: weightsBlock },
    },
  },
  lora: {
    value: 'none',
    on: 'backbone',
    doc: 'low-rank adapters placed on parameters of a backbone',
    block: {
      props: {
        targets: { type: { t: 'oneOrList', of: { t: 'selector' } }, required: true, doc: 'selectors over parameter paths, with optional parts (`[q, v]`)' },
        rank: { type: positiveInt, required: true, doc: 'the LoRA rank r' },
        alpha: { type: positive, doc: 'scaling = alpha / r (default 1, as loralib)' },
        dropout: { type: num({ min: 0, max: 1 }), doc: 'dropout on the LoRA input (default 0)' },
        init: { type: { t: 'enum', values: ['kaiming_uniform', 'gaussian', 'zeros'] }, doc: 'init of lora_A (lora_B starts at zero); default kaiming_uniform' },
      },
    },
  },
  head: {
    value: 'module',
    on: 'backbone-output',
    doc: 'a task head module bound to a backbone output',
    block: { props: {}, blocks: { weights: weightsBlock } },
  },
  dataset: {
    value: 'dataset-format',
    on: 'none',
    doc: 'a data set in one of the supported on-disk formats',
    block: {
      props: {
        root: { type: str, doc: 'folder holding the files' },
        split: { type: str, doc: 'TRAIN / VAL / TEST for captions, train2017 / val2017 for COCO' },
        images: { type: str, doc: 'image folder (COCO)' },
        annotations: { type: str, doc: 'annotation file (COCO instances JSON)' },
        augment: { type: { t: 'oneOrList', of: { t: 'call', functions: AUGMENTS() } }, doc: 'training augmentations, in order' },
        normalize: { type: { t: 'call', functions: { imagenet: [], mean_std: ['mean', 'std'] } }, doc: 'pixel normalisation (default imagenet)' },
      },
    },
  },
  task: {
    value: 'none',
    on: 'none',
    doc: 'a head trained on a data set with a loss',
    block: {
      props: {
        head: { type: { t: 'ref', kinds: ['head'] }, required: true, doc: 'the head this task trains or uses' },
        dataset: { type: { t: 'ref', kinds: ['dataset'] }, required: true, doc: 'the training data' },
        loss: { type: { t: 'call', functions: LOSSES() }, doc: 'the loss and its weights (default: the head\'s own)' },
        batch: { type: positiveInt, doc: 'default global batch size' },
      },
    },
  },
  stage: {
    value: 'none',
    on: 'none',
    doc: 'a training stage: what trains, what is frozen, the schedule and the tasks',
    block: {
      props: {
        after: { type: { t: 'oneOrList', of: { t: 'ref', kinds: ['stage'] } }, doc: 'stages that must finish first' },
        train: { type: { t: 'oneOrList', of: { t: 'selector' } }, required: true, doc: 'what trains: lora, head or backbone names, or parameter selectors' },
        freeze: { type: { t: 'oneOrList', of: { t: 'selector' } }, doc: 'what stays fixed (everything not trained is frozen)' },
        runs: { type: { t: 'enum', values: ['joint', 'per_task'] }, doc: '`per_task`: one independent run per task (stage 1); `joint`: tasks mixed per update' },
        tasks: { type: { t: 'oneOrList', of: { t: 'ref', kinds: ['task'] } }, doc: 'the tasks of this stage (default: those with a `task` block)' },
        optimizer: { type: { t: 'call', functions: { adamw: ['betas', 'eps', 'weight_decay'], adam: ['betas', 'eps'], sgd: ['momentum', 'weight_decay', 'nesterov'] } }, doc: 'optimizer' },
        lr: { type: positive, doc: 'peak learning rate' },
        schedule: { type: { t: 'call', functions: { warmup_cosine: ['warmup', 'final'], warmup_linear: ['warmup', 'final'], constant: ['warmup'] } }, doc: 'learning-rate schedule' },
        warmup: { type: duration, doc: 'linear warmup length' },
        updates: { type: duration, doc: 'number of optimizer updates' },
        clip: { type: { t: 'call', functions: { global_norm: ['max_norm'], value: ['max'] } }, doc: 'gradient clipping' },
        precision: { type: { t: 'enum', values: PRECISIONS }, doc: 'compute precision (fp16: mixed precision with f32 master weights)' },
        loss_scale: { type: { t: 'call', functions: { dynamic: ['init', 'growth_interval'], fixed: ['scale'] } }, doc: 'loss scaling under fp16' },
        checkpoint: { type: duration, doc: 'checkpoint interval' },
        gradient_checkpointing: { type: { t: 'bool' }, doc: 'recompute activations in the backward pass to save memory' },
        seed: { type: num({ min: 0, integer: true }), doc: 'random seed' },
        shard_optimizer_state: { type: { t: 'bool' }, doc: 'shard optimizer moments across devices (the original: 8 GPUs)' },
      },
      blocks: {
        init: {
          label: 'none',
          repeatable: false,
          doc: 'initialise heads from other stages\' checkpoints: `HEAD: STAGE.TASK`',
          spec: { props: {}, keyed: { keyKinds: ['head', 'lora', 'backbone'], value: { t: 'selector' } } },
        },
        mix: {
          label: 'none',
          repeatable: false,
          doc: 'task probabilities per update (sum to 1)',
          spec: { props: {}, keyed: { keyKinds: ['task'], value: num({ min: 0, max: 1 }) } },
        },
        task: { label: { refers: 'task', required: true }, repeatable: true, spec: taskOverrides, doc: 'per-task settings in this stage' },
        export: {
          label: { refers: 'any', required: true },
          repeatable: true,
          doc: 'write the named lora (or head) at the given updates',
          spec: {
            props: {
              at: { type: { t: 'oneOrList', of: duration }, required: true, doc: 'updates at which to export' },
              path: { type: str, doc: 'output file pattern; `{update}` is replaced' },
              format: { type: { t: 'enum', values: ['visft', 'loralib'] }, doc: 'key names: ours or ViSFT/loralib (`visual.blocks.N.attn.qkv.lora_A`)' },
            },
          },
        },
      },
    },
  },
};

function AUGMENTS(): Record<string, readonly string[]> {
  return {
    hflip: ['p'],
    resize_short: ['sizes', 'max'],
    random_resized_crop: ['p', 'sizes', 'crop', 'max'],
    scale_jitter: ['min', 'max', 'size'],
    crop_pad: ['size', 'pad_value'],
    resize: ['size'],
  };
}

function LOSSES(): Record<string, readonly string[]> {
  return {
    caption_loss: ['alpha_c'],
    detr_loss: ['class_weight', 'l1_weight', 'giou_weight', 'no_object_weight', 'aux'],
    mask2former_loss: ['class_weight', 'mask_weight', 'dice_weight', 'no_object_weight', 'points', 'oversample', 'importance', 'aux'],
  };
}

export const DECL_KINDS = Object.keys(DECLS) as DeclKind[];
