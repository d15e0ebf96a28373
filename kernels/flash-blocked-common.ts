// What the register-blocked f32 flash kernels share (kernels/flash-blocked.ts, the forward; kernels/flash-blocked-
// backward.ts, the gradients): a workgroup of 128 invocations owns 32 rows of one (batch, head) in 8 groups of
// 4 (group a: rows a, a + 8, a + 16, a + 24) and sweeps the other side in tiles staged in workgroup memory.
//   - Score blocks: invocation (sr = lid / 16, sc = lid % 16) computes the dot products of the owned rows sr + 8i
//     (i < 4) with the swept rows sc + 16j (j < sweep / 16): per step over the head dim, 4 owned vec4s (read by
//     16 lanes at once) and sweep / 16 swept vec4s feed 16·sweep/16 FMAs, summed in order (fma). Swept rows lie
//     at an odd vec4 stride, so neighbouring lanes read distinct banks.
//   - Coefficient tiles (scores, P, dS): one vec4 per swept row and row group (its 4 owned rows), 9 vec4s per
//     swept row (the 8 groups and a pad: a score lane's stores spread over the banks).
//   - Output blocks: invocation (pr = lid % 8, pc = lid / 8) owns rows pr + 8i and output vec4 columns g and
//     g + NC for g = pc + 16b (NC = ceil(vec4s / 2); lanes past NC idle): per swept row one coefficient vec4 and
//     2 operand vec4s feed 32 FMAs, summed over the swept rows in order.
import { u32Lit } from './elementwise.js';
import type { attentionGeometry } from './flash-common.js';

/** Invocations per workgroup. */
export const LANES = 128;
/** Owned rows per workgroup. */
export const BR = 32;
/** Row groups of 4 owned rows (rows g, g + 8, g + 16, g + 24). */
export const GROUPS = BR / 4;
/** Swept-row groups of the score blocks: an invocation's swept rows are sc + 16j. */
export const SWEEP_GROUPS = LANES / GROUPS;
/** vec4s per swept row in a coefficient tile: the 8 row groups and one pad. */
export const SP_STRIDE = GROUPS + 1;
/** Swept rows per tile, largest first: the kernels take the first whose tiles fit workgroup memory. */
export const SWEEP_TILES = [64, 48, 32, 16] as const;
export const COMPONENTS = ['x', 'y', 'z', 'w'] as const;

export type Geometry = ReturnType<typeof attentionGeometry>;

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * WGSL lines opening `main` after the group index `grp`: the workgroup's (batch, head) `bh` (and `b`, `h`, which
 * views read), its first owned row `row0` of the side's `S` rows in tiles of BR, and `valid` of them inside.
 */
export function ownedTileLines(H: number, ownTiles: number, S: number, row0: string, valid: string): string[] {
  const U = u32Lit;
  return [
    `  let bh = grp / ${U(ownTiles)};`,
    `  let h = bh % ${U(H)};`,
    `  let b = bh / ${U(H)};`,
    `  let ${row0} = (grp % ${U(ownTiles)}) * ${U(BR)};`,
    `  let ${valid} = min(${U(BR)}, ${U(S)} - ${row0});`,
  ];
}

/** Swept row j of a score lane's block (a WGSL u32). */
export const sweptRow = (j: number): string => (j === 0 ? 'sc' : `sc + ${u32Lit(j * SWEEP_GROUPS)}`);

/** The coefficient-tile index of a score lane's swept row j and its row group. */
export const coefSlot = (j: number): string => `${j === 0 ? sweptRow(j) : `(${sweptRow(j)})`} * ${u32Lit(SP_STRIDE)} + sr`;

/** A tile of a score phase: its name, the WGSL of the lane's first row's offset, its vec4s per row. */
export interface ScoreOperand {
  readonly tile: string;
  readonly base: string;
  readonly stride: number;
}

/**
 * WGSL lines: `var <acc><i>_<j>` = the dot product over `steps` vec4s of owned row sr + 8i (`owned`, row groups
 * 8 rows apart) and swept row sc + 16j (`swept`), j < `blocks`, each summed over the columns in order.
 */
export function scoreBlockLines(acc: string, owned: ScoreOperand, swept: ScoreOperand, steps: number, blocks: number, indent: string): string[] {
  const U = u32Lit;
  const rows4 = range(4);
  const js = range(blocks);
  const name = (i: number, j: number) => `${acc}${i}_${j}`;
  return [
    `${rows4.map((i) => js.map((j) => `var ${name(i, j)} = 0.0f;`).join(' ')).join(' ')}`,
    `for (var t = 0u; t < ${U(steps)}; t++) {`,
    ...rows4.map((i) => `  let x${i} = ${owned.tile}[${i === 0 ? owned.base : `${owned.base} + ${U(i * GROUPS * owned.stride)}`} + t];`),
    ...js.map((j) => `  let y${j} = ${swept.tile}[${j === 0 ? swept.base : `${swept.base} + ${U(j * SWEEP_GROUPS * swept.stride)}`} + t];`),
    ...rows4.flatMap((i) => js.map((j) => `  ${COMPONENTS.map((c) => `${name(i, j)} = fma(x${i}.${c}, y${j}.${c}, ${name(i, j)});`).join(' ')}`)),
    '}',
  ].map((l) => indent + l);
}

/** The output blocks of one output of `columnGroups` column pairs (its vec4 columns g and g + NC). */
export interface OutputBlocks {
  readonly columnGroups: number;
  /** The blocks b of an invocation: column groups pc + 16b. */
  readonly blocks: readonly number[];
  /** Block b's w-th output vec4 column (w < 2). */
  readonly cols: (b: number, w: number) => string;
  /** The condition under which block b has columns (empty when every lane's has). */
  readonly live: (b: number) => string;
  /** The accumulator of block b, row pr + 8i, column w. */
  readonly acc: (b: number, i: number, w: number) => string;
}

/** The output blocks of `columnGroups` column pairs, accumulators named `<prefix><b>_<i>_<w>`. */
export function outputBlocks(prefix: string, columnGroups: number): OutputBlocks {
  const U = u32Lit;
  const perBlock = LANES / GROUPS;
  const blockCols = (b: number) => (b === 0 ? 'pc' : `pc + ${U(b * perBlock)}`);
  return {
    columnGroups,
    blocks: range(Math.ceil(columnGroups / perBlock)),
    cols: (b, w) => (w === 0 ? blockCols(b) : `${blockCols(b)} + ${U(columnGroups)}`),
    live: (b) => ((b + 1) * perBlock <= columnGroups ? '' : `${blockCols(b)} < ${U(columnGroups)}`),
    acc: (b, i, w) => `${prefix}${b}_${i}_${w}`,
  };
}

/** WGSL: the declarations of the accumulators (zeros), one line per block row. */
export function outputDeclLines(ob: OutputBlocks): string[] {
  return ob.blocks.flatMap((b) => range(4).map((i) => `  ${[0, 1].map((w) => `var ${ob.acc(b, i, w)} = vec4f(0.0f);`).join(' ')}`));
}

/** How an output phase reads: the coefficient tile, the operand tile (`stride` vec4s per row), `count` rows. */
export interface OutputSweep {
  readonly coef: string;
  readonly tile: string;
  readonly stride: number;
  readonly count: number;
  /** Names of the loaded coefficient vec4 and operand vec4s (for reading the WGSL). */
  readonly coefName?: string;
  readonly rowName?: string;
}

/**
 * WGSL: for each block, acc += Σ_c coef[c][pr]·tile[c][cols] over the tile's rows c in order (after the lines
 * `prelude(b)`, such as a rescale, inside the block).
 */
export function outputBlockCode(ob: OutputBlocks, sweep: OutputSweep, prelude: (b: number) => string[] = () => []): string {
  const U = u32Lit;
  const [p, v] = [sweep.coefName ?? 'p', sweep.rowName ?? 'v'];
  return ob.blocks
    .map((b) => {
      const live = ob.live(b);
      const inner = [
        ...prelude(b),
        `  for (var c = 0u; c < ${U(sweep.count)}; c++) {`,
        `    let ${p} = ${sweep.coef}[c * ${U(SP_STRIDE)} + pr];`,
        ...[0, 1].map((w) => `    let ${v}${w} = ${sweep.tile}[c * ${U(sweep.stride)} + ${ob.cols(b, w)}];`),
        ...range(4).map((i) => `    ${[0, 1].map((w) => `${ob.acc(b, i, w)} = fma(vec4f(${p}.${COMPONENTS[i]}), ${v}${w}, ${ob.acc(b, i, w)});`).join(' ')}`),
        '  }',
      ];
      return live ? [`    if (${live}) {`, ...inner.map((l) => `    ${l}`), '    }'].join('\n') : ['    {', ...inner.map((l) => `    ${l}`), '    }'].join('\n');
    })
    .join('\n');
}

/** Where an output phase's rows go: `out`, rows row0 + pr + 8i of the (b, h) `bh` while below `rows`, `cols` wide. */
export interface OutputStore {
  readonly out: string;
  readonly row0: string;
  readonly rows: number;
  readonly cols: number;
  /** The WGSL vec4 stored for accumulator `acc` of block row i. */
  readonly value: (acc: string, i: number) => string;
}

/** WGSL: stores the accumulators; rows past `rows` and columns past `cols` are not stored. */
export function storeBlocksCode(ob: OutputBlocks, st: OutputStore): string {
  const U = u32Lit;
  const vec4Count = Math.ceil(st.cols / 4);
  return ob.blocks
    .map((b) => {
      const live = ob.live(b);
      const lines = range(4).flatMap((i) => [
        `  if (${st.row0} + pr + ${U(i * GROUPS)} < ${U(st.rows)}) {`,
        `    let base = (bh * ${U(st.rows)} + ${st.row0} + pr + ${U(i * GROUPS)}) * ${U(st.cols)};`,
        ...[0, 1].flatMap((w) => {
          // Whole vec4s inside the row, unless it has a tail or this is the zero pad of an odd count of vec4s.
          const exact = st.cols % 4 === 0 && (w === 0 || vec4Count % 2 === 0);
          return [
            `    { let c = ${w === 0 && b === 0 ? 'pc' : `(${ob.cols(b, w)})`} * 4u; let y = ${st.value(ob.acc(b, i, w), i)};`,
            ...COMPONENTS.map((x, e) => `      ${exact ? '' : `if (c + ${U(e)} < ${U(st.cols)}) { `}${st.out}[base + c + ${U(e)}] = y.${x};${exact ? '' : ' }'}`),
            '    }',
          ];
        }),
        '  }',
      ]);
      return [`  ${live ? `if (${live}) ` : ''}{`, ...lines.map((l) => `  ${l}`), '  }'].join('\n');
    })
    .join('\n');
}
