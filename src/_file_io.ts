/**
 * Files read and written at given positions, on each runtime's own file API:
 * `Deno.FsFile` in Deno, `node:fs` elsewhere (Bun, Node), loaded only
 * there. In Deno the first import of any `node:` module starts Node's
 * compatibility layer, which took ~35 ms of each worker's start and ~50 ms of
 * a process's (bench/RESULTS.md, Addendum 11): a file job with a worker
 * waited for it.
 *
 * @module
 */

type NodeFs = typeof import("node:fs");
type NodeOs = typeof import("node:os");

/** `node:fs` and `node:os`, outside Deno (synchronously: no top-level `await`, which `require` would refuse). */
const [nodeFs, nodeOs] = "Deno" in globalThis
  ? []
  : [process.getBuiltinModule("node:fs") as NodeFs, process.getBuiltinModule("node:os") as NodeOs];

/** An open file, read and written at positions given with each call. */
export interface OpenFile {
  /** Its size now, in bytes. */
  size(): number;
  /**
   * Reads once at `position` into `into`.
   *
   * @returns Bytes read: fewer than asked at the end of the file (0 past it), or when the system reads less.
   */
  readAt(into: Uint8Array, position: number): number;
  /**
   * As `readAt`, with the copy done on another thread. Reads of this kind
   * happen one after another, in the order asked; leave `into` alone, and the
   * file open, until the promise settles.
   */
  readAtAsync(into: Uint8Array, position: number): Promise<number>;
  /**
   * Writes once at `position` from `bytes`.
   *
   * @returns Bytes written, possibly fewer than asked.
   */
  writeAt(bytes: Uint8Array, position: number): number;
  /** Flushes the file's data to the disk. */
  sync(): void;
  /** Closes it; a `readAtAsync` in flight still completes. */
  close(): void;
}

/**
 * How a file is opened: `read` an existing file, `update` (read and write)
 * an existing file, `create` a new one (failing with `EEXIST` when the path
 * exists) with the permission bits `mode`.
 */
export type OpenHow = "read" | "update" | "create";

/**
 * Opens a file.
 *
 * @param path The file.
 * @param how What for.
 * @param mode Permission bits of a file created (before the umask).
 * @throws {Error} The runtime's error, with its `code` (`ENOENT`, `EACCES`, `EEXIST`, ...) and a message naming `path`.
 */
export function openFile(path: string, how: OpenHow, mode = 0o644): OpenFile {
  return nodeFs ? openNodeFile(nodeFs, path, how, mode) : openDenoFile(path, how, mode);
}

/**
 * Writes all of `bytes` to a file at `position` (a write may write less than asked).
 *
 * @param file The file.
 * @param bytes The bytes.
 * @param position Where.
 */
export function writeFully(file: OpenFile, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += file.writeAt(done ? bytes.subarray(done) : bytes, position + done);
}

/** The size of a file, in bytes. */
export function fileSize(path: string): number {
  return nodeFs ? nodeFs.statSync(path).size : Deno.statSync(path).size;
}

/** A whole file as UTF-8 text. */
export function readTextFile(path: string): string {
  return nodeFs ? nodeFs.readFileSync(path, "utf8") : Deno.readTextFileSync(path);
}

/** Writes a whole file (not atomically: for small files the user asked for), replacing any file at `path`. */
export function writeWholeFile(path: string, data: Uint8Array | string): void {
  if (nodeFs) nodeFs.writeFileSync(path, data);
  else if (typeof data === "string") Deno.writeTextFileSync(path, data);
  else Deno.writeFileSync(path, data);
}

/** Creates a directory and any missing parents; nothing when it exists. */
export function makeDirectory(path: string): void {
  if (nodeFs) nodeFs.mkdirSync(path, { recursive: true });
  else Deno.mkdirSync(path, { recursive: true });
}

/** Renames a file, replacing any file at `to`. */
export function renameFile(from: string, to: string): void {
  if (nodeFs) nodeFs.renameSync(from, to);
  else Deno.renameSync(from, to);
}

/** Removes a file. @throws {Error} With the runtime's `code` (`ENOENT` when there is none). */
export function removeFile(path: string): void {
  if (nodeFs) nodeFs.unlinkSync(path);
  else Deno.removeSync(path);
}

/** Creates an empty file of its own, readable and writable by its owner only, in the system's temporary directory. */
export function createTemporaryFile(prefix: string, suffix: string): { path: string; file: OpenFile } {
  if (!nodeFs) {
    // In $TMPDIR or /tmp (node:os's tmpdir() also reads $TMP and $TEMP), without asking for the env permission.
    const path = Deno.makeTempFileSync({ prefix, suffix });
    try {
      return { path, file: openDenoFile(path, "update", 0o600) };
    } catch (e) {
      try {
        Deno.removeSync(path);
      } catch { /* the error to report is the first */ }
      throw e;
    }
  }
  const path = `${nodeOs!.tmpdir()}/${prefix}${crypto.randomUUID()}${suffix}`;
  return { path, file: openNodeFile(nodeFs, path, "create", 0o600) };
}

function openNodeFile(fs: NodeFs, path: string, how: OpenHow, mode: number): OpenFile {
  const fd = fs.openSync(path, how === "read" ? "r" : how === "update" ? "r+" : "wx+", mode);
  return inOrder(path, {
    size: () => fs.fstatSync(fd).size,
    readAt: (into, position) => fs.readSync(fd, into, 0, into.length, position),
    readAtAsync: (into, position) =>
      new Promise((resolve, reject) =>
        fs.read(fd, into, 0, into.length, position, (error, n) => error ? reject(error) : resolve(n))
      ),
    writeAt: (bytes, position) => fs.writeSync(fd, bytes, 0, bytes.length, position),
    sync: () => fs.fsyncSync(fd),
    close: () => fs.closeSync(fd),
  });
}

function openDenoFile(path: string, how: OpenHow, mode: number): OpenFile {
  const file = Deno.openSync(
    path,
    how === "read"
      ? { read: true }
      : how === "update"
      ? { read: true, write: true }
      : { read: true, write: true, createNew: true, mode },
  );
  return inOrder(path, {
    size: () => file.statSync().size,
    readAt(into, position) {
      file.seekSync(position, Deno.SeekMode.Start);
      return file.readSync(into) ?? 0;
    },
    readAtAsync(into, position) {
      file.seekSync(position, Deno.SeekMode.Start);
      return file.read(into).then(orZero);
    },
    writeAt(bytes, position) {
      file.seekSync(position, Deno.SeekMode.Start);
      return file.writeSync(bytes);
    },
    sync: () => file.syncSync(),
    close: () => file.close(),
  });
}

/** A read's count, 0 where Deno says `null` (the end of the file). */
const orZero = (n: number | null) => n ?? 0;

/**
 * Asynchronous reads one after another, nothing else while one is in flight
 * (an error naming the file, rather than the runtime's own, or a wrong read),
 * and closing deferred until none is. Deno reads and writes at the file's
 * position, which an asynchronous read takes only once it runs; a closed file
 * would fail the read, or (a reused descriptor) give it another file's bytes.
 */
function inOrder(path: string, raw: OpenFile): OpenFile {
  let inFlight = 0;
  let reads: Promise<unknown> = Promise.resolve();
  const settled = () => {
    inFlight--;
  };
  const idle = () => {
    if (inFlight) throw new Error(`"${path}": a read in flight must settle before anything else is done with the file`);
  };
  // The runtimes differ on the rest: Deno rounds 1.5 down, node:fs reads -1 at the file's own position.
  const at = (position: number) => {
    if (!Number.isSafeInteger(position) || position < 0) {
      throw new RangeError(`"${path}": a position must be a non-negative integer, got ${position}`);
    }
    return position;
  };
  return {
    size() {
      idle();
      return raw.size();
    },
    readAt(into, position) {
      idle();
      return raw.readAt(into, at(position));
    },
    readAtAsync(into, position) {
      inFlight++;
      let read: Promise<number>;
      try {
        at(position);
        // After the reads in flight, if any (a promise or two fewer per read otherwise: one runs per slab).
        read = inFlight > 1 ? reads.then(() => raw.readAtAsync(into, position)) : raw.readAtAsync(into, position);
      } catch (error) {
        // In its turn, so that the next read still waits for those before.
        read = reads.then(() => Promise.reject(error));
      }
      reads = read.then(settled, settled);
      return read;
    },
    writeAt(bytes, position) {
      idle();
      return raw.writeAt(bytes, at(position));
    },
    sync() {
      idle();
      raw.sync();
    },
    close() {
      if (!inFlight) return raw.close();
      // Nobody is left to hear of a failure to close then.
      void reads.then(() => {
        try {
          raw.close();
        } catch { /* the descriptor is gone either way */ }
      });
    },
  };
}
