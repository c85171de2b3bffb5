/**
 * Spooling slabs to a temporary file, so that a source that cannot be read
 * twice (an HTTP body, a pipe) can still be quantized in two passes without
 * holding a tensor in memory (DESIGN.md, "The data flow").
 *
 * @module
 */
import { createTemporaryFile, type OpenFile, removeFile, writeFully } from "./_file_io.ts";
import { openFileSource } from "./byte_source.ts";
import { FormatError } from "./errors.ts";
import type { Slab, SlabSource, TensorInfo } from "./types.ts";

/** Where one appended slab sits in the spool file. */
interface SpooledSlab {
  readonly tensor: TensorInfo;
  readonly offset: number;
  readonly float32: boolean;
  readonly position: number;
  readonly byteLength: number;
}

/**
 * A temporary file of slabs: {@linkcode SlabSpool.append} writes them,
 * {@linkcode SlabSpool.source} reads them back, {@linkcode SlabSpool.dispose}
 * removes the file. The file is created on the first append in the
 * operating system's temporary directory, readable by its owner only.
 *
 * @example
 * ```ts
 * import { SlabSpool } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const spool = new SlabSpool();
 * const tensor = { name: "w", dtype: "float32", shape: [2, 2] } as const;
 * spool.append({ tensor, offset: 0, data: new Float32Array([1, 2]) });
 * spool.append({ tensor, offset: 2, data: new Float32Array([3, 4]) });
 * const slabs = await Array.fromAsync(spool.source().slabs());
 * assert.deepEqual(slabs.map((s) => [...s.data]), [[1, 2], [3, 4]]);
 * spool.dispose();
 * ```
 */
export class SlabSpool {
  #path: string | undefined;
  #file: OpenFile | undefined;
  #size = 0;
  #slabs: SpooledSlab[] = [];
  #disposed = false;

  /** Path of the temporary file, once the first slab has been appended. */
  get path(): string | undefined {
    return this.#path;
  }

  /** Bytes written so far. */
  get byteLength(): number {
    return this.#size;
  }

  /**
   * Writes a slab's elements to the file and remembers its tensor and offset.
   * The slab's memory is not kept: the caller may reuse it afterwards.
   *
   * @param slab The slab to spool.
   * @throws {Error} When the spool was disposed, or the write fails (disk
   *   full); the file is then removed.
   */
  append(slab: Slab): void {
    if (this.#disposed) throw new Error("Cannot append to a disposed SlabSpool");
    if (this.#file === undefined) {
      ({ path: this.#path, file: this.#file } = createTemporaryFile("quantflow-spool-", ".bin"));
    }
    const { data } = slab;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    try {
      writeFully(this.#file, bytes, this.#size);
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.#slabs.push({
      tensor: slab.tensor,
      offset: slab.offset,
      float32: data instanceof Float32Array,
      position: this.#size,
      byteLength: bytes.length,
    });
    this.#size += bytes.length;
  }

  /**
   * A source that reads back the slabs appended so far, in order, each with
   * the same tensor, offset and elements (and this source as its `source`).
   * Each call of `slabs()` opens its own read handle, closed at the end or on
   * cancel. A failed read disposes of the spool.
   *
   * @returns A re-readable slab source, valid until {@linkcode SlabSpool.dispose}.
   */
  source(): SlabSource {
    const slabs = this.#slabs.slice();
    const path = this.#path;
    const isDisposed = () => this.#disposed;
    const dispose = () => this.dispose();
    const source: SlabSource = {
      slabs(): ReadableStream<Slab> {
        let i = 0;
        let file: ReturnType<typeof openFileSource> | undefined;
        const close = () => {
          file?.close();
          file = undefined;
        };
        return new ReadableStream<Slab>({
          pull(controller) {
            try {
              if (i === slabs.length) {
                close();
                controller.close();
                return;
              }
              if (isDisposed()) throw new Error("Cannot read a disposed SlabSpool");
              const s = slabs[i++];
              file ??= openFileSource(path as string);
              const bytes = new Uint8Array(s.byteLength);
              const n = file.read(s.position, bytes);
              if (n < bytes.length) {
                throw new FormatError(
                  `Cannot read spooled tensor "${s.tensor.name}": spool file ends at byte ${s.position + n}, expected ${
                    s.position + s.byteLength
                  }`,
                );
              }
              const data = s.float32
                ? new Float32Array(bytes.buffer, 0, bytes.length / 4)
                : new Uint16Array(bytes.buffer, 0, bytes.length / 2);
              controller.enqueue({ kind: "slab", tensor: s.tensor, offset: s.offset, data, source });
            } catch (e) {
              close();
              dispose();
              throw e;
            }
          },
          cancel: close,
        }, { highWaterMark: 0 });
      },
    };
    return source;
  }

  /** Closes and removes the temporary file. Idempotent; later appends and reads fail. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#file !== undefined) {
      try {
        this.#file.close();
      } catch { /* already closed: nothing to release */ }
      this.#file = undefined;
    }
    if (this.#path !== undefined) {
      try {
        removeFile(this.#path);
      } catch { /* already removed */ }
    }
  }
}
