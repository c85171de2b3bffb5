import type { QuantizedSlab, RawChunk, Slab, Tensor } from "@quantflow/quantflow";

/** Cuts a tensor into slabs of `rowsPerSlab` rows (or `elements` elements), optionally re-readable. */
export function slabsOf(tensor: Tensor, cut: { rows?: number; elements?: number }, rereadable = false): Slab[] {
  const { name, dtype, shape } = tensor;
  const info = { name, dtype, shape };
  const rowLength = tensor.data.length / shape[0];
  const step = cut.elements ?? (cut.rows ?? 1) * rowLength;
  const make = (): Slab[] => {
    const out: Slab[] = [];
    for (let offset = 0; offset < tensor.data.length; offset += step) {
      out.push({ tensor: info, offset, data: tensor.data.slice(offset, offset + step) });
    }
    return out;
  };
  if (!rereadable) return make();
  const source = { slabs: () => ReadableStream.from(make()) };
  return make().map((s) => ({ ...s, source }));
}

/** Reassembles a tensor's quantized slabs into whole arrays. */
export function assemble(slabs: (QuantizedSlab | RawChunk)[], name: string) {
  const mine = slabs.filter((s): s is QuantizedSlab => s.kind === "quantized" && s.tensor.name === name);
  const info = mine[0].tensor;
  const size = info.shape.reduce((a, b) => a * b, 1);
  const blocks = info.scaleShape.reduce((a, b) => a * b, 1);
  const data = new (mine[0].data.constructor as Int8ArrayConstructor)(size);
  const scale = new (mine[0].scale.constructor as Float32ArrayConstructor)(blocks);
  const zeroPoint = mine[0].zeroPoint ? new (mine[0].zeroPoint.constructor as Int8ArrayConstructor)(blocks) : undefined;
  for (const s of mine) {
    data.set(s.data, s.offset);
    scale.set(s.scale as Float32Array, s.scaleOffset);
    if (zeroPoint && s.zeroPoint) zeroPoint.set(s.zeroPoint, s.scaleOffset);
  }
  return { info, data, scale, zeroPoint };
}
