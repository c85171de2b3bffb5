/**
 * Which elements share a scale: SPEC.md Section 4's general form, one block
 * size per axis, reduced to a canonical layout the kernels iterate quickly.
 *
 * @module
 */

/** Elements per block along each axis, each dividing its dimension. */
export type BlockSizes = readonly number[];

/**
 * A tensor's block structure in canonical form. Adjacent axes are merged
 * where the merge keeps every block intact, so that most layouts become
 * *contiguous*: blocks are consecutive runs of `runLength` elements
 * (per tensor, per channel on axis 0, per block). The rest (per channel on
 * a later axis) become rows of `rowLength` elements whose columns fall into
 * blocks of `columnBlock`, with a per-row base block index.
 */
export class BlockLayout {
  /** Shape of the tensor. */
  readonly shape: readonly number[];
  /** Block size per axis (0 already replaced by the dimension). */
  readonly blockSizes: readonly number[];
  /** Shape of the scale tensor: `shape[i] / blockSizes[i]`. */
  readonly scaleShape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  /** Number of blocks (scales). */
  readonly blockCount: number;
  /** When contiguous: block `k` is elements `[k * runLength, (k + 1) * runLength)`; otherwise 0. */
  readonly runLength: number;
  /** When not contiguous: length of the canonical last axis. */
  readonly rowLength: number;
  /** When not contiguous: elements per block along the canonical last axis. */
  readonly columnBlock: number;
  // Canonical outer axes (all but the last) for the row base computation.
  readonly #outerDims: number[];
  readonly #outerBlocks: number[];
  readonly #outerScaleStrides: number[];

  /**
   * @param shape Tensor shape.
   * @param blockSizes Block size per axis; 0 means the whole axis.
   * @throws {RangeError} If a block size is negative or does not divide its dimension.
   */
  constructor(shape: readonly number[], blockSizes: BlockSizes) {
    if (shape.length !== blockSizes.length) {
      throw new RangeError(`Block sizes [${blockSizes}] do not match the rank of shape [${shape}]`);
    }
    const sizes = blockSizes.map((b, i) => {
      if (!Number.isInteger(b) || b < 0) {
        throw new RangeError(`Block size ${b} on axis ${i} must be a non-negative integer`);
      }
      const full = b === 0 ? shape[i] : b;
      if (shape[i] % full !== 0) {
        throw new RangeError(`Block size ${b} does not divide dimension ${shape[i]} of axis ${i}`);
      }
      return full;
    });
    this.shape = shape;
    this.blockSizes = sizes;
    this.scaleShape = shape.map((d, i) => (d === 0 ? 0 : d / sizes[i]));
    this.size = shape.reduce((a, b) => a * b, 1);
    this.blockCount = this.scaleShape.reduce((a, b) => a * b, 1);

    // Merge adjacent axes (d0, b0), (d1, b1) into one axis when blocks stay
    // intact: b0 == 1 (a block never crosses an index of axis 0) gives
    // (d0*d1, b1); b1 == d1 (whole inner axis) gives (d0*d1, b0*d1).
    const dims: number[] = [];
    const blocks: number[] = [];
    shape.forEach((d, i) => {
      const b = sizes[i];
      const last = dims.length - 1;
      if (last >= 0 && (blocks[last] === 1 || b === d)) {
        blocks[last] = blocks[last] === 1 ? b : blocks[last] * d;
        dims[last] *= d;
      } else {
        dims.push(d);
        blocks.push(b);
      }
    });
    if (dims.length === 0) dims.push(1), blocks.push(1); // rank 0
    const rank = dims.length;
    if (rank === 1) {
      this.runLength = blocks[0];
      this.rowLength = 0;
      this.columnBlock = 0;
      this.#outerDims = this.#outerBlocks = this.#outerScaleStrides = [];
      return;
    }
    this.runLength = 0;
    this.rowLength = dims[rank - 1];
    const columnBlock = this.columnBlock = blocks[rank - 1];
    this.#outerDims = dims.slice(0, -1);
    this.#outerBlocks = blocks.slice(0, -1);
    const strides: number[] = [];
    let stride = this.rowLength / columnBlock;
    for (let k = rank - 2; k >= 0; k--) {
      strides[k] = stride;
      stride *= dims[k] / blocks[k];
    }
    this.#outerScaleStrides = strides;
  }

  /** Whether blocks are consecutive runs of elements (see {@linkcode BlockLayout.runLength}). */
  get contiguous(): boolean {
    return this.runLength > 0;
  }

  /**
   * Index of the first block of row `row` (non-contiguous layouts only).
   *
   * @param row Index of a row of `rowLength` elements.
   * @returns Its base block index; add `floor(column / columnBlock)`.
   */
  rowBase(row: number): number {
    let base = 0;
    for (let k = this.#outerDims.length - 1; k >= 0; k--) {
      const d = this.#outerDims[k];
      base += Math.floor((row % d) / this.#outerBlocks[k]) * this.#outerScaleStrides[k];
      row = Math.floor(row / d);
    }
    return base;
  }

  /**
   * The index of the block that holds an element (slow; for tests and error messages).
   *
   * @param index Flat element index.
   * @returns Block index in row-major order of the scale tensor.
   */
  blockOf(index: number): number {
    if (this.contiguous) return Math.floor(index / this.runLength);
    const row = Math.floor(index / this.rowLength);
    return this.rowBase(row) + Math.floor((index - row * this.rowLength) / this.columnBlock);
  }

  /**
   * Visits the elements `[offset, offset + length)` as runs of consecutive
   * elements that share a block, in order. Kernels loop over a run with its
   * block's parameters hoisted.
   *
   * @param offset Flat index of the first element.
   * @param length Number of elements.
   * @param visit Called with the run's bounds relative to `offset` and its block index.
   */
  forEachRun(offset: number, length: number, visit: (from: number, to: number, block: number) => void): void {
    let i = 0;
    if (this.contiguous) {
      const run = this.runLength;
      while (i < length) {
        const block = Math.floor((offset + i) / run);
        const to = Math.min(length, (block + 1) * run - offset);
        visit(i, to, block);
        i = to;
      }
      return;
    }
    const { rowLength, columnBlock } = this;
    let row = Math.floor(offset / rowLength);
    let column = offset - row * rowLength;
    let base = this.rowBase(row);
    while (i < length) {
      const columnBlockIndex = Math.floor(column / columnBlock);
      const to = Math.min(length, i + (columnBlockIndex + 1) * columnBlock - column);
      visit(i, to, base + columnBlockIndex);
      column += to - i;
      i = to;
      if (column === rowLength) {
        column = 0;
        base = this.rowBase(++row);
      }
    }
  }

  /**
   * Visits the elements `[offset, offset + length)` of a non-contiguous
   * layout row by row: element `i` of a visited range is in column
   * `column + (i - from)` of its row, whose block is
   * `rowBase + floor(thatColumn / columnBlock)`. Kernels that look the block
   * up per element use this where runs would be a single element long.
   *
   * @param offset Flat index of the first element.
   * @param length Number of elements.
   * @param visit Called with the range relative to `offset`, its first column and its row's base block.
   * @throws {TypeError} For a contiguous layout (use {@linkcode BlockLayout.forEachRun}).
   */
  forEachRow(
    offset: number,
    length: number,
    visit: (from: number, to: number, column: number, rowBase: number) => void,
  ): void {
    if (this.contiguous) throw new TypeError("forEachRow is for non-contiguous layouts");
    const { rowLength } = this;
    let row = Math.floor(offset / rowLength);
    let column = offset - row * rowLength;
    for (let i = 0; i < length; row++, column = 0) {
      const to = Math.min(length, i + rowLength - column);
      visit(i, to, column, this.rowBase(row));
      i = to;
    }
  }

  /**
   * Whether every block lies within one index of axis 0, so that the scales
   * can be computed slab by slab from slabs of whole rows (one pass).
   */
  get blocksFollowRows(): boolean {
    return this.shape.length > 0 && this.blockSizes[0] === 1;
  }
}
