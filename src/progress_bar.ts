/**
 * A one-line progress bar on a terminal: bytes done of total, rate, ETA.
 * Silent when the stream is not a terminal (pipes, CI logs).
 *
 * @module
 */
import { standardError } from "./_process.ts";

/** Where the bar is drawn. */
export interface ProgressOutput {
  /** Whether the output is a terminal. */
  readonly isTTY?: boolean;
  /** Writes text. */
  write(text: string): unknown;
}

function size(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

/** A progress bar for a known number of bytes. */
export class ProgressBar {
  readonly #out: ProgressOutput;
  readonly #label: string;
  readonly #start = performance.now();
  #last = 0;
  #drawn = false;

  /**
   * @param label Text before the bar.
   * @param out Where to draw; nothing is drawn unless it is a terminal.
   */
  constructor(label: string, out: ProgressOutput = standardError()) {
    this.#label = label;
    this.#out = out;
  }

  /**
   * Redraws the bar, at most ten times a second.
   *
   * @param done Bytes done.
   * @param total Bytes in all.
   */
  update(done: number, total: number): void {
    if (!this.#out.isTTY) return;
    const now = performance.now();
    if (now - this.#last < 100 && done < total) return;
    this.#last = now;
    const fraction = total ? Math.min(1, done / total) : 1;
    const width = 30;
    const filled = Math.floor(fraction * width);
    const seconds = (now - this.#start) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? Math.max(0, (total - done) / rate) : 0;
    this.#out.write(
      `\r${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${
        (fraction * 100).toFixed(0).padStart(3)
      }% ` +
        `${size(done)}/${size(total)} ${size(rate)}/s ETA ${eta.toFixed(0)}s `,
    );
    this.#drawn = true;
  }

  /** Ends the line, if a bar was drawn. */
  finish(): void {
    if (this.#drawn) this.#out.write("\n");
    this.#drawn = false;
  }
}
