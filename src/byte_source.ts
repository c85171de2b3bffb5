/**
 * Random-access byte sources: a file or a buffer read at any position,
 * synchronously, into a buffer the caller owns (and, where that pays, off
 * this thread: `readAsync`).
 *
 * Reading a file synchronously into a caller's buffer runs at 10+ GB/s
 * from page cache, where the runtimes' own Web `ReadableStream` over a file
 * manages 0.4-1 GB/s (PITFALLS.md 14); streams in quantflow are therefore
 * built as pull-based `ReadableStream`s over a `ByteSource`.
 *
 * @module
 */
import { type OpenFile, openFile } from "./_file_io.ts";

/**
 * Whether a file source offers `readAsync` (Deno's `FsFile.read`, which copies
 * on another thread), for the caller to read the next slab while it quantizes
 * this one. In Deno that pays, though not always: with `fs.read`, over eight
 * alternating runs of the CLI's one-thread 1 GiB job it took 0.68-1.15x the
 * time (median ratio 0.82), and in the quietest minutes nothing (0.438 against
 * 0.435 s, best of 3); with `FsFile.read`, six alternating runs took
 * 0.74-0.92x (median 0.86). In Bun the same job took 1.07-1.12x: its file
 * sources stay synchronous (bench/RESULTS.md, Addenda 10 and 11).
 */
const READ_AHEAD_PAYS = "Deno" in globalThis;

/** Bytes that can be read at any position. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Copies bytes starting at `position` into `into`, filling it unless the
   * source ends first.
   *
   * @param position Absolute offset of the first byte to read.
   * @param into Destination; its whole length is requested.
   * @returns How many bytes were read: `into.length`, or fewer at the end.
   * @throws {Error} When the source is closed or the read fails.
   */
  read(position: number, into: Uint8Array): number;
  /**
   * As `read`, with the copy done off this thread, so that the caller can
   * work meanwhile: sources offer it where that is faster than `read`. Leave
   * `into` alone, and the source open, until the promise settles, and call
   * `read` only after that: a file source in Deno, which reads at the file's
   * position, throws then. Reads of this kind happen in the order called.
   */
  readAsync?(position: number, into: Uint8Array): Promise<number>;
  /** Releases the underlying resource. Idempotent. */
  close(): void;
}

/**
 * Opens a file for random-access reads, on the runtime's own file API
 * (`Deno.FsFile` in Deno, `node:fs` in Bun and Node).
 *
 * @example
 * ```ts
 * import { openFileSource } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { writeFileSync } from "node:fs";
 * import { join } from "node:path";
 * import { tmpdir } from "node:os";
 * const path = join(tmpdir(), `byte-source-example-${crypto.randomUUID()}`);
 * writeFileSync(path, new Uint8Array([1, 2, 3, 4]));
 * const source = openFileSource(path);
 * const into = new Uint8Array(2);
 * assert.equal(source.read(1, into), 2);
 * assert.deepEqual([...into], [2, 3]);
 * source.close();
 * ```
 *
 * @param path Path of the file.
 * @returns A source over the file's bytes; its `size` is the size at opening.
 * @throws {Error} When the file cannot be opened (the runtime's `ENOENT`, `EACCES`, ...).
 */
export function openFileSource(path: string): ByteSource {
  let file: OpenFile | undefined = openFile(path, "read");
  let size: number;
  try {
    size = file.size();
  } catch (e) {
    file.close();
    throw e;
  }
  const open = () => {
    if (file === undefined) throw new Error(`Cannot read "${path}": the file source is closed`);
    return file;
  };
  return {
    size,
    read(position: number, into: Uint8Array): number {
      let done = 0;
      // A read may return less than asked (large reads, pipes): loop until full or EOF.
      while (done < into.length) {
        const n = open().readAt(done ? into.subarray(done) : into, position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    },
    readAsync: READ_AHEAD_PAYS
      ? async (position: number, into: Uint8Array): Promise<number> => {
        let done = 0;
        while (done < into.length) {
          const n = await open().readAtAsync(done ? into.subarray(done) : into, position + done);
          if (n === 0) break;
          done += n;
        }
        return done;
      }
      : undefined,
    close(): void {
      file?.close();
      file = undefined;
    },
  };
}

/**
 * A byte source over bytes already in memory. The bytes are not copied:
 * changing them changes what is read.
 *
 * @example
 * ```ts
 * import { memorySource } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const source = memorySource(new Uint8Array([1, 2, 3]));
 * const into = new Uint8Array(4);
 * assert.equal(source.read(1, into), 2);
 * ```
 *
 * @param bytes The bytes to read.
 * @returns A source of `bytes.length` bytes.
 */
export function memorySource(bytes: Uint8Array): ByteSource {
  let closed = false;
  return {
    size: bytes.length,
    read(position: number, into: Uint8Array): number {
      if (closed) throw new Error("Cannot read: the memory source is closed");
      const part = bytes.subarray(Math.min(position, bytes.length), Math.min(position + into.length, bytes.length));
      into.set(part);
      return part.length;
    },
    close(): void {
      closed = true;
    },
  };
}

/**
 * A file's bytes as a pull-based stream of fresh chunks (the consumer may
 * keep them), read synchronously into each (PITFALLS.md 14: much faster than
 * the runtimes' own file streams). The file is closed at the end or on cancel.
 *
 * @example
 * ```ts
 * import { fileStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { writeFileSync } from "node:fs";
 * import { join } from "node:path";
 * import { tmpdir } from "node:os";
 * const path = join(tmpdir(), `file-stream-example-${crypto.randomUUID()}`);
 * writeFileSync(path, new Uint8Array([1, 2, 3, 4, 5]));
 * const chunks = await Array.fromAsync(fileStream(path, 2));
 * assert.deepEqual(chunks.map((c) => [...c]), [[1, 2], [3, 4], [5]]);
 * ```
 *
 * @param path The file.
 * @param chunkBytes Size of each chunk.
 * @returns The stream.
 */
export function fileStream(path: string, chunkBytes = 1 << 20): ReadableStream<Uint8Array> {
  let source: ByteSource | undefined;
  let position = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      try {
        source ??= openFileSource(path);
        const chunk = new Uint8Array(Math.min(chunkBytes, source.size - position));
        const n = chunk.length === 0 ? 0 : source.read(position, chunk);
        if (n === 0) {
          source.close();
          controller.close();
          return;
        }
        position += n;
        controller.enqueue(n === chunk.length ? chunk : chunk.subarray(0, n));
      } catch (error) {
        source?.close();
        throw error;
      }
    },
    cancel() {
      source?.close();
    },
  }, { highWaterMark: 0 });
}
