/**
 * A fixed set of Web Workers running one module, fed from a task queue. Each
 * worker holds one task at a time; results come back as promises, errors as
 * the same class with the same message (see `reviveError`).
 *
 * @module
 */
import { reviveError, type SerializedError } from "./_quantize_task.ts";

/** What a pool's workers post back for each task. */
export type WorkerReply<R> = { readonly ok: true; readonly result: R } | {
  readonly ok: false;
  readonly error: SerializedError;
};

interface Task<T, R> {
  readonly message: T;
  readonly transfer: Transferable[];
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

/** Workers running one module, a task queue, and promises of the results. */
export class WorkerPool<T, R> {
  readonly #idle: Worker[] = [];
  readonly #busy = new Map<Worker, Task<T, R>>();
  readonly #queue: Task<T, R>[] = [];
  #closed = false;

  /**
   * Starts the workers.
   *
   * @param module The worker module; it answers each message with one {@linkcode WorkerReply}.
   * @param size How many workers.
   * @throws {RangeError} When `size` is not a positive integer.
   */
  constructor(module: URL, size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`A WorkerPool needs at least 1 worker, got ${size}`);
    for (let i = 0; i < size; i++) {
      const worker = new Worker(module, { type: "module" });
      worker.onmessage = (event: MessageEvent<WorkerReply<R>>) => this.#settle(worker, event.data);
      worker.onerror = (event: ErrorEvent) => {
        // An uncaught error (the module failed to load): fail this task, and the pool with it.
        event.preventDefault();
        const error = new Error(`Worker failed: ${event.message}`);
        this.#busy.get(worker)?.reject(error);
        this.#busy.delete(worker);
        this.close(error);
      };
      this.#idle.push(worker);
    }
  }

  /** Workers in the pool. */
  get size(): number {
    return this.#idle.length + this.#busy.size;
  }

  /**
   * Queues a task.
   *
   * @param message The message for a worker.
   * @param transfer Buffers of `message` to transfer (they are detached here).
   * @returns The worker's result.
   * @throws {Error} (rejects) With the worker's error rebuilt, or when the pool is closed first.
   */
  run(message: T, transfer: Transferable[] = []): Promise<R> {
    if (this.#closed) return Promise.reject(new Error("WorkerPool is closed"));
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ message, transfer, resolve, reject });
      this.#dispatch();
    });
  }

  /**
   * Terminates the workers; queued and running tasks reject.
   *
   * @param reason The rejection of unfinished tasks.
   */
  close(reason: unknown = new Error("WorkerPool closed before the task finished")): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const worker of [...this.#idle, ...this.#busy.keys()]) worker.terminate();
    for (const task of [...this.#busy.values(), ...this.#queue]) task.reject(reason);
    this.#idle.length = this.#queue.length = 0;
    this.#busy.clear();
  }

  #settle(worker: Worker, reply: WorkerReply<R>): void {
    const task = this.#busy.get(worker);
    if (!task) return;
    this.#busy.delete(worker);
    this.#idle.push(worker);
    if (reply.ok) task.resolve(reply.result);
    else task.reject(reviveError(reply.error));
    this.#dispatch();
  }

  #dispatch(): void {
    while (!this.#closed && this.#idle.length && this.#queue.length) {
      const worker = this.#idle.pop()!;
      const task = this.#queue.shift()!;
      this.#busy.set(worker, task);
      worker.postMessage(task.message, task.transfer);
    }
  }
}
