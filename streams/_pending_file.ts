/**
 * A file written under a temporary name in its final directory and renamed
 * into place only when complete, so that a reader never sees half of it.
 *
 * @module
 */
import { type OpenFile, openFile, removeFile, renameFile, writeFully } from "../src/_file_io.ts";

/** A file being written under `path + ".<random>.tmp"`, until {@linkcode PendingFile.commit}. */
export class PendingFile {
  /** The name it will have. */
  readonly path: string;
  /** The name it has while being written; other threads may open it to write their parts. */
  readonly temp: string;
  #file: OpenFile | undefined;
  #end = 0;

  /**
   * Creates the temporary file at once, so that a missing directory or a
   * permission problem shows before any work is done.
   *
   * @param path Final path of the file.
   * @throws {Error} When the file cannot be created, naming `path`, with the runtime's `code` (`ENOENT`, `EACCES`, ...).
   */
  constructor(path: string) {
    this.path = path;
    this.temp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    try {
      this.#file = openFile(this.temp, "create");
    } catch (cause) {
      // The runtime's message names the temporary file: lead with the path the caller gave, keep the code.
      const { code } = cause as { code?: string };
      throw Object.assign(new Error(`Cannot write "${path}": ${(cause as Error).message}`, { cause }), { code });
    }
  }

  /** The open file. */
  get #open(): OpenFile {
    if (this.#file === undefined) throw new Error(`"${this.temp}" is no longer open`);
    return this.#file;
  }

  /**
   * Writes all of `bytes`; on failure the file is discarded.
   *
   * @param bytes The bytes.
   * @param position Where; by default right after the furthest byte written so far.
   */
  write(bytes: Uint8Array, position = this.#end): void {
    try {
      writeFully(this.#open, bytes, position);
      this.#end = Math.max(this.#end, position + bytes.length);
    } catch (e) {
      this.discard();
      throw e;
    }
  }

  /**
   * Closes the file and renames it to its final path (replacing any previous
   * file); on failure the file is discarded.
   *
   * @param fsync Flush the data to disk first, so that after a crash the name holds nothing or the whole file.
   */
  commit(fsync: boolean): void {
    try {
      if (fsync) this.#open.sync();
      this.#open.close();
      this.#file = undefined;
      renameFile(this.temp, this.path);
    } catch (e) {
      this.discard();
      throw e;
    }
  }

  /** Closes and removes the temporary file. Idempotent; never throws. */
  discard(): void {
    if (this.#file !== undefined) {
      try {
        this.#file.close();
      } catch { /* already closed */ }
      this.#file = undefined;
    }
    try {
      removeFile(this.temp);
    } catch { /* never created, or already removed */ }
  }
}

/**
 * Writes pieces of a file in order, each as it comes (so that it may sit in a
 * reused buffer), under a temporary name renamed into place once all are
 * written and flushed to disk; on failure nothing is left.
 *
 * @param pieces The file's bytes, in order; stopped early (`return`) on failure.
 * @param path Final path of the file.
 * @throws {Error} When the file cannot be created or written, or `pieces` throws.
 */
export async function writeFileFrom(pieces: AsyncIterable<Uint8Array>, path: string): Promise<void> {
  const file = new PendingFile(path);
  try {
    for await (const piece of pieces) file.write(piece);
    file.commit(true);
  } catch (e) {
    file.discard();
    throw e;
  }
}
