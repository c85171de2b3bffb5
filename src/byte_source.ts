/**
 * Random-access byte sources: a file or a buffer read at any position,
 * synchronously, into a buffer the caller owns (and, where that pays, off
 * this thread: `readAsync`).
 *
 * Reading a file with `fs.readSync` into a caller's buffer runs at 10+ GB/s
 * from page cache, where the runtimes' own Web `ReadableStream` over a file
 * manages 0.4-1 GB/s (PITFALLS.md 14); streams in quantflow are therefore
 * built as pull-based `ReadableStream`s over a `ByteSource`.
 *
 * @module
 */
import { closeSync, fstatSync, openSync, read, readSync } from "node:fs";

/**
 * Whether a file source offers `readAsync` (`fs.read`, which copies on
 * another thread), for the caller to read the next slab while it quantizes
 * this one. In Deno that pays, though not always: over eight alternating
 * runs of the CLI's one-thread 1 GiB job it took 0.68-1.15x the time (median
 * ratio 0.82; medians of the times 0.541 against 0.569 s), and in the
 * quietest minutes nothing (0.438 against 0.435 s, best of 3). In Bun the same
 * job took 1.07-1.12x: its file sources stay synchronous (bench/RESULTS.md,
 * Addendum 10).
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
   * `into` alone, and the source open, until the promise settles.
   */
  readAsync?(position: number, into: Uint8Array): Promise<number>;
  /** Releases the underlying resource. Idempotent. */
  close(): void;
}

/**
 * Opens a file for random-access reads through `node:fs` (portable across
 * Deno, Bun and Node).
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
  let fd: number | undefined = openSync(path, "r");
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return {
    size,
    read(position: number, into: Uint8Array): number {
      if (fd === undefined) throw new Error(`Cannot read "${path}": the file source is closed`);
      let done = 0;
      // readSync may return less than asked (large reads, pipes): loop until full or EOF.
      while (done < into.length) {
        const n = readSync(fd, into, done, into.length - done, position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    },
    readAsync: READ_AHEAD_PAYS
      ? async (position: number, into: Uint8Array): Promise<number> => {
        let done = 0;
        while (done < into.length) {
          if (fd === undefined) throw new Error(`Cannot read "${path}": the file source is closed`);
          const n = await readAt(fd, into.subarray(done), position + done);
          if (n === 0) break;
          done += n;
        }
        return done;
      }
      : undefined,
    close(): void {
      if (fd === undefined) return;
      const f = fd;
      fd = undefined;
      closeSync(f);
    },
  };
}

/** `fs.read` of all of `into` at `position`, as a promise of the bytes read. */
function readAt(fd: number, into: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    read(fd, into, 0, into.length, position, (error, n) => error ? reject(error) : resolve(n))
  );
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
