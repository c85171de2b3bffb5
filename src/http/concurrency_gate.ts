/**
 * A counter of requests at work, so that a full server answers 503 at once
 * instead of queueing uploads it cannot serve.
 *
 * @module
 */

/**
 * Admits at most `limit` holders at a time. {@linkcode ConcurrencyGate.tryAcquire}
 * never waits: it returns a release function, or `undefined` when full.
 * Each release function frees its slot once, however often it is called,
 * because a response body may finish, error and be cancelled in any order.
 *
 * @example
 * ```ts
 * import { ConcurrencyGate } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 *
 * const gate = new ConcurrencyGate(1);
 * const release = gate.tryAcquire();
 * assert.equal(gate.tryAcquire(), undefined);
 * release!();
 * release!();
 * assert.equal(gate.active, 0);
 * ```
 */
export class ConcurrencyGate {
  readonly #limit: number;
  #active = 0;

  /**
   * Creates the gate.
   *
   * @param limit Slots; at least 1.
   * @throws {RangeError} When `limit` is not a positive safe integer.
   */
  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`limit must be a positive integer, got ${limit}`);
    }
    this.#limit = limit;
  }

  /** Slots held now. */
  get active(): number {
    return this.#active;
  }

  /** Slots in all. */
  get limit(): number {
    return this.#limit;
  }

  /**
   * Takes a slot if one is free.
   *
   * @returns A function that frees the slot (idempotent), or `undefined` when all slots are held.
   */
  tryAcquire(): (() => void) | undefined {
    if (this.#active >= this.#limit) return undefined;
    this.#active++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#active--;
    };
  }
}
