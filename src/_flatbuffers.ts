/**
 * A FlatBuffers builder with the few operations Arrow's schema message needs.
 *
 * Internal. It follows the algorithm of the `flatbuffers` package's `Builder`
 * step by step (objects written back to front, each value aligned to its size
 * counted from the end, vtables shared when equal, defaults left out), so
 * that a message built with the same calls has the same bytes as
 * apache-arrow's (tests/arrow_ipc_test.ts compares them). Offsets count from
 * the end of the buffer, which is why growing it changes nothing.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Builds one FlatBuffer, back to front. */
export class FlatBufferBuilder {
  #bytes: Uint8Array;
  #view: DataView;
  /** Index of the first byte written. */
  #space: number;
  #minAlign = 1;
  #vtable: number[] = [];
  #objectStart = 0;
  /** Offsets of the vtables written so far, oldest first. */
  #vtables: number[] = [];
  #vectorLength = 0;

  /** @param capacity Bytes to start with (the buffer doubles as needed). */
  constructor(capacity = 1024) {
    this.#bytes = new Uint8Array(capacity);
    this.#view = new DataView(this.#bytes.buffer);
    this.#space = capacity;
  }

  /** Bytes written so far: the offset of what was written last. */
  offset(): number {
    return this.#bytes.length - this.#space;
  }

  /** Zero padding so that `size` bytes written after `additional` more end aligned to `size`. */
  #prep(size: number, additional: number): void {
    if (size > this.#minAlign) this.#minAlign = size;
    const alignSize = (~(this.offset() + additional) + 1) & (size - 1);
    while (this.#space < alignSize + size + additional) this.#grow();
    for (let i = 0; i < alignSize; i++) this.#bytes[--this.#space] = 0;
  }

  #grow(): void {
    const old = this.#bytes;
    this.#bytes = new Uint8Array(2 * old.length);
    this.#bytes.set(old, old.length);
    this.#view = new DataView(this.#bytes.buffer);
    this.#space += old.length;
  }

  #addInt8(value: number): void {
    this.#prep(1, 0);
    this.#view.setInt8(--this.#space, value);
  }

  #addInt16(value: number): void {
    this.#prep(2, 0);
    this.#view.setInt16(this.#space -= 2, value, true);
  }

  #addInt32(value: number): void {
    this.#prep(4, 0);
    this.#view.setInt32(this.#space -= 4, value, true);
  }

  /** Writes a reference to what was written at `offset`, relative to where it is written. */
  addOffset(offset: number): void {
    this.#prep(4, 0);
    const relative = this.offset() - offset + 4;
    this.#view.setInt32(this.#space -= 4, relative, true);
  }

  /** Starts a table of `fields` fields. */
  startObject(fields: number): void {
    this.#vtable = new Array(fields).fill(0);
    this.#objectStart = this.offset();
  }

  /** Field `slot` of the open table, an 8-bit integer, left out when it equals its default. */
  addFieldInt8(slot: number, value: number, defaultValue: number): void {
    if (value === defaultValue) return;
    this.#addInt8(value);
    this.#vtable[slot] = this.offset();
  }

  /** As {@linkcode addFieldInt8}, 16 bits. */
  addFieldInt16(slot: number, value: number, defaultValue: number): void {
    if (value === defaultValue) return;
    this.#addInt16(value);
    this.#vtable[slot] = this.offset();
  }

  /** As {@linkcode addFieldInt8}, 32 bits. */
  addFieldInt32(slot: number, value: number, defaultValue: number): void {
    if (value === defaultValue) return;
    this.#addInt32(value);
    this.#vtable[slot] = this.offset();
  }

  /** As {@linkcode addFieldInt8}, a 64-bit integer (a non-negative safe integer here). */
  addFieldInt64(slot: number, value: number, defaultValue: number): void {
    if (value === defaultValue) return;
    this.#prep(8, 0);
    this.#writeInt64(value);
    this.#vtable[slot] = this.offset();
  }

  #writeInt64(value: number): void {
    this.#space -= 8;
    this.#view.setUint32(this.#space, value % 0x100000000, true);
    this.#view.setUint32(this.#space + 4, Math.floor(value / 0x100000000), true);
  }

  /** Field `slot` of the open table, a reference to `offset`. */
  addFieldOffset(slot: number, offset: number): void {
    this.addOffset(offset);
    this.#vtable[slot] = this.offset();
  }

  /**
   * Ends the open table: writes its vtable, or points it at an equal vtable
   * written before.
   *
   * @returns The table's offset.
   */
  endObject(): number {
    this.#addInt32(0); // the table's reference to its vtable, set below
    const table = this.offset();
    const vtable = this.#vtable;
    let last = vtable.length - 1;
    while (last >= 0 && vtable[last] === 0) last--;
    for (let i = last; i >= 0; i--) this.#addInt16(vtable[i] !== 0 ? table - vtable[i] : 0);
    this.#addInt16(table - this.#objectStart);
    const length = (last + 3) * 2;
    this.#addInt16(length);
    const view = this.#view;
    const mine = this.#space;
    const shared = this.#vtables.find((vt) => {
      const at = this.#bytes.length - vt;
      if (view.getInt16(at, true) !== length) return false;
      for (let j = 2; j < length; j += 2) {
        if (view.getInt16(mine + j, true) !== view.getInt16(at + j, true)) return false;
      }
      return true;
    });
    if (shared !== undefined) {
      this.#space = this.#bytes.length - table;
      view.setInt32(this.#space, shared - table, true);
    } else {
      this.#vtables.push(this.offset());
      view.setInt32(this.#bytes.length - table, this.offset() - table, true);
    }
    return table;
  }

  /**
   * A vector of references, the first element first.
   *
   * @param offsets What the elements refer to.
   * @returns The vector's offset.
   */
  createOffsetVector(offsets: readonly number[]): number {
    this.#startVector(4, offsets.length, 4);
    for (let i = offsets.length - 1; i >= 0; i--) this.addOffset(offsets[i]);
    return this.#endVector();
  }

  /**
   * A vector of structs of two 64-bit integers (Arrow's `FieldNode` and `Buffer`), the first element first.
   *
   * @param pairs The structs' fields, two per element, in order (non-negative safe integers here).
   * @returns The vector's offset.
   */
  createInt64PairVector(pairs: readonly number[]): number {
    const count = pairs.length / 2;
    this.#startVector(16, count, 8);
    for (let i = count - 1; i >= 0; i--) {
      this.#prep(8, 16);
      this.#writeInt64(pairs[2 * i + 1]);
      this.#writeInt64(pairs[2 * i]);
    }
    return this.#endVector();
  }

  /**
   * A string: UTF-8 bytes, then a zero byte.
   *
   * @returns The string's offset.
   */
  createString(text: string): number {
    const utf8 = encoder.encode(text);
    this.#addInt8(0);
    this.#startVector(1, utf8.length, 1);
    this.#bytes.set(utf8, this.#space -= utf8.length);
    return this.#endVector();
  }

  #startVector(elementSize: number, length: number, alignment: number): void {
    this.#vectorLength = length;
    this.#prep(4, elementSize * length);
    this.#prep(alignment, elementSize * length);
  }

  #endVector(): number {
    this.#view.setInt32(this.#space -= 4, this.#vectorLength, true);
    return this.offset();
  }

  /**
   * Ends the buffer with the reference to its root table.
   *
   * @returns The buffer's bytes.
   */
  finish(root: number): Uint8Array {
    this.#prep(this.#minAlign, 4);
    this.addOffset(root);
    return this.#bytes.subarray(this.#space);
  }
}
