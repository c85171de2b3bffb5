/**
 * The memory of a WebAssembly instance as an arena: regions handed out once,
 * typed views that follow the memory when it grows, and leases of slab
 * buffers during which it must not grow.
 *
 * @module
 */

const PAGE = 65536;
/** Slack after every region: the vector loops read up to 16 values past a row end. */
const PAD = 256;

/**
 * Bytes a region of `n` bytes takes: padded, rounded up to 64. Arithmetic,
 * not bit operations: lease sizes can pass 2^31.
 */
export const align = (n: number): number => Math.ceil((n + PAD) / 64) * 64;

/** Thrown when the memory would have to grow while a lease is out (growing would detach the lease's views). */
export class GrowthBlocked extends Error {}

/**
 * Runs `call`, or gives `declined` when it needed the memory to grow under a
 * lease (the caller then does the work another way).
 *
 * @param call The work.
 * @param declined What to return instead.
 * @returns The work's result, or `declined`.
 */
export function unlessGrowthBlocked<T, D>(call: () => T, declined: D): T | D {
  try {
    return call();
  } catch (e) {
    if (e instanceof GrowthBlocked) return declined;
    throw e;
  }
}

/** Memory of a lease: slab buffers inside the wasm memory. */
export interface WasmLease {
  /**
   * A view of at least `byteLength` bytes inside the lease (64-byte aligned,
   * not handed out before), or of fresh JavaScript memory once the lease is
   * used up or released.
   */
  allocate(byteLength: number): Uint8Array;
  /** Ends the lease: its buffers may be reused by the next lease, and the memory may grow again. */
  release(): void;
}

/** Bump allocation in a `WebAssembly.Memory`, with views and leases. */
export class WasmArena {
  readonly memory: WebAssembly.Memory;
  #top: number;
  #buffer!: ArrayBufferLike;
  #f32!: Float32Array;
  #i32!: Int32Array;
  #u8!: Uint8Array;
  #f64!: Float64Array;
  /** The region of the last lease, reused by the next; `leased` while one is out. */
  #lease: { at: number; bytes: number; leased: boolean } | undefined;

  /**
   * @param memory The instance's memory.
   * @param start First byte the arena may hand out (what lies below is the caller's).
   */
  constructor(memory: WebAssembly.Memory, start: number) {
    this.memory = memory;
    this.#top = start;
    this.reserve(0);
  }

  /** The memory's current buffer. */
  get buffer(): ArrayBufferLike {
    return this.#views();
  }
  /** The whole memory as float32 values. */
  get f32(): Float32Array {
    this.#views();
    return this.#f32;
  }
  /** The whole memory as int32 values. */
  get i32(): Int32Array {
    this.#views();
    return this.#i32;
  }
  /** The whole memory as bytes. */
  get u8(): Uint8Array {
    this.#views();
    return this.#u8;
  }
  /** The whole memory as float64 values. */
  get f64(): Float64Array {
    this.#views();
    return this.#f64;
  }
  /** Whether a lease is out. */
  get leased(): boolean {
    return this.#lease?.leased ?? false;
  }

  #views(): ArrayBufferLike {
    const buffer = this.memory.buffer;
    if (this.#buffer !== buffer) {
      this.#buffer = buffer;
      this.#f32 = new Float32Array(buffer);
      this.#i32 = new Int32Array(buffer);
      this.#u8 = new Uint8Array(buffer);
      this.#f64 = new Float64Array(buffer);
    }
    return buffer;
  }

  /**
   * Makes sure `bytes` more bytes can be allocated without growing later
   * (so that several regions are had together, or none).
   *
   * @param bytes Bytes, as `align` counts them.
   * @throws {GrowthBlocked} When the memory would have to grow while a lease is out.
   * @throws {RangeError} When the memory cannot grow that far.
   */
  reserve(bytes: number): void {
    const need = this.#top + bytes;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      if (this.leased) throw new GrowthBlocked();
      this.memory.grow(Math.ceil((need - have) / PAGE));
    }
  }

  /**
   * A new region of `bytes` bytes (padded and 64-byte aligned).
   *
   * @param bytes Bytes needed.
   * @returns The region's address.
   * @throws {GrowthBlocked} When the memory would have to grow while a lease is out.
   * @throws {RangeError} When the memory cannot grow that far, or `bytes` is not a byte count.
   */
  alloc(bytes: number): number {
    // A NaN or negative size would move the top of the arena backwards, under regions already handed out.
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`Cannot allocate ${bytes} bytes`);
    this.reserve(align(bytes));
    const at = this.#top;
    this.#top += align(bytes);
    return at;
  }

  /**
   * Lends `byteLength` bytes for slab buffers; the memory does not grow
   * until the lease is released. One lease at a time.
   *
   * @param byteLength Bytes wanted.
   * @param slotBytes Smallest buffer handed out: a ring whose first slab is small then keeps its slot for the
   *   larger ones that follow, instead of taking another.
   * @returns The lease, or `undefined` when another lease is out or the memory cannot grow that far.
   */
  lease(byteLength: number, slotBytes = 0): WasmLease | undefined {
    if (this.leased) return undefined;
    if (!this.#lease || this.#lease.bytes < byteLength) {
      try {
        this.#lease = { at: this.alloc(byteLength), bytes: byteLength, leased: false };
      } catch (e) {
        // Memory.grow refused (an address-space or memory limit): the caller does without.
        if (e instanceof RangeError) return undefined;
        throw e;
      }
    }
    const state = this.#lease;
    state.leased = true;
    let used = 0;
    let released = false;
    return {
      allocate: (n: number): Uint8Array => {
        const length = Math.max(n, slotBytes);
        if (released || used + align(length) > state.bytes) return new Uint8Array(n);
        const view = new Uint8Array(this.memory.buffer, state.at + used, length);
        used += align(length);
        return view;
      },
      release: () => {
        if (released) return;
        released = true;
        state.leased = false;
      },
    };
  }
}
