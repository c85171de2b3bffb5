/**
 * Validation of what an Arrow tensor stream is written from: float slabs,
 * quantized slabs and the description of a quantized tensor.
 *
 * Internal. The encoder checks every slab, not only a stream's first, since
 * any slab may be malformed and must fail with a message naming it before
 * its batch is built; the decoder checks the `quantflow.config` it reads back
 * with the same functions, so both sides reject the same descriptions.
 *
 * @module
 */
import { isSigned, storesZeroPoint } from "./ranges.ts";
import type {
  FloatDType,
  Granularity,
  QuantDType,
  QuantizedSlab,
  QuantizedTensorInfo,
  QuantMode,
  ScaleDType,
  Slab,
  TensorInfo,
} from "./types.ts";

export const FLOAT_DTYPES: readonly FloatDType[] = ["float32", "float16", "bfloat16"];
const QUANT_DTYPES: readonly QuantDType[] = ["int8", "uint8", "int4", "uint4"];
const MODES: readonly QuantMode[] = ["linear", "linear_symmetric"];
const GRANULARITIES: readonly Granularity[] = ["per_tensor", "per_channel", "per_block"];
const SCALE_DTYPES: readonly ScaleDType[] = ["float32", "float16"];

export function product(xs: readonly number[]): number {
  let p = 1;
  for (const x of xs) p *= x;
  return p;
}

export function checkSlab(slab: Slab): { tensor: TensorInfo; numel: number } {
  const { tensor, offset, data } = slab;
  if (tensor === null || typeof tensor !== "object" || typeof tensor.name !== "string") {
    throw new TypeError(`Slab has no tensor info: ${JSON.stringify(tensor)}`);
  }
  if (!FLOAT_DTYPES.includes(tensor.dtype)) {
    throw new TypeError(
      `Slab of tensor "${tensor.name}" has dtype ${
        JSON.stringify(tensor.dtype)
      }; expected float32, float16 or bfloat16`,
    );
  }
  const numel = checkShape(tensor.name, tensor.shape);
  const want = tensor.dtype === "float32" ? Float32Array : Uint16Array;
  if (!(data instanceof want)) {
    throw new TypeError(
      `Slab of ${tensor.dtype} tensor "${tensor.name}" holds a ${data?.constructor?.name}; expected a ${want.name}`,
    );
  }
  checkRange(tensor.name, offset, data.length, numel);
  return { tensor, numel };
}

export function checkShape(name: string, shape: readonly number[]): number {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(
      `Tensor "${name}" has shape ${JSON.stringify(shape)}; expected an array of non-negative integers`,
    );
  }
  return product(shape);
}

function checkRange(name: string, offset: number, length: number, numel: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > numel) {
    throw new RangeError(
      `Slab of tensor "${name}" covers elements [${offset}, ${offset + length}), outside the tensor's ${numel}`,
    );
  }
}

/** Block sizes with 0 ("whole axis", SPEC.md Section 4) replaced by the dimension. */
export function fullBlockSizes(info: QuantizedTensorInfo): number[] {
  return info.blockSizes.map((b, i) => (b === 0 ? info.shape[i] : b));
}

export function checkInfo(info: QuantizedTensorInfo): { numel: number; blockCount: number } {
  const name = info?.name;
  if (typeof name !== "string") throw new TypeError(`Quantized slab has no tensor info: ${JSON.stringify(info)}`);
  const bad = (field: string, value: unknown, want: string) =>
    new TypeError(`Quantized tensor "${name}" has ${field} ${JSON.stringify(value)}; expected ${want}`);
  if (!FLOAT_DTYPES.includes(info.sourceDType)) throw bad("sourceDType", info.sourceDType, FLOAT_DTYPES.join(" | "));
  if (!QUANT_DTYPES.includes(info.dtype)) throw bad("dtype", info.dtype, QUANT_DTYPES.join(" | "));
  if (!MODES.includes(info.mode)) throw bad("mode", info.mode, MODES.join(" | "));
  if (!GRANULARITIES.includes(info.granularity)) throw bad("granularity", info.granularity, GRANULARITIES.join(" | "));
  if (!SCALE_DTYPES.includes(info.scaleDType)) throw bad("scaleDType", info.scaleDType, SCALE_DTYPES.join(" | "));
  const numel = checkShape(name, info.shape);
  const rank = info.shape.length;
  if (!Array.isArray(info.blockSizes) || info.blockSizes.length !== rank) {
    throw bad("blockSizes", info.blockSizes, `${rank} block sizes`);
  }
  if (!Array.isArray(info.scaleShape) || info.scaleShape.length !== rank) {
    throw bad("scaleShape", info.scaleShape, `${rank} dimensions`);
  }
  const full = fullBlockSizes(info);
  for (let i = 0; i < rank; i++) {
    if (!Number.isSafeInteger(full[i]) || full[i] <= 0 || info.shape[i] % full[i] !== 0) {
      throw bad("blockSizes", info.blockSizes, `block sizes dividing shape ${JSON.stringify(info.shape)}`);
    }
    if (info.scaleShape[i] !== info.shape[i] / full[i]) {
      throw bad(
        "scaleShape",
        info.scaleShape,
        `shape / blockSizes = ${JSON.stringify(info.shape.map((d, j) => d / full[j]))}`,
      );
    }
  }
  return { numel, blockCount: product(info.scaleShape) };
}

export function checkQuantizedSlab(slab: QuantizedSlab): { numel: number; blockCount: number } {
  const { numel, blockCount } = checkInfo(slab.tensor);
  const { name, dtype, scaleDType, mode } = slab.tensor;
  const want = isSigned(dtype) ? Int8Array : Uint8Array;
  if (!(slab.data instanceof want)) {
    throw new TypeError(
      `Quantized slab of ${dtype} tensor "${name}" holds a ${slab.data?.constructor?.name}; expected a ${want.name}`,
    );
  }
  checkRange(name, slab.offset, slab.data.length, numel);
  const wantScale = scaleDType === "float32" ? Float32Array : Uint16Array;
  if (!(slab.scale instanceof wantScale)) {
    throw new TypeError(
      `Quantized slab of tensor "${name}" has ${slab.scale?.constructor?.name} scales; expected a ${wantScale.name} (${scaleDType})`,
    );
  }
  if (storesZeroPoint(dtype, mode)) {
    if (!(slab.zeroPoint instanceof want) || slab.zeroPoint.length !== slab.scale.length) {
      throw new TypeError(
        `Quantized slab of tensor "${name}" (${dtype}, ${mode}) needs a ${want.name} of ${slab.scale.length} zero points; got ${
          slab.zeroPoint === undefined ? "none" : `a ${slab.zeroPoint.constructor.name} of ${slab.zeroPoint.length}`
        }`,
      );
    }
  }
  if (
    !Number.isSafeInteger(slab.scaleOffset) || slab.scaleOffset < 0 || slab.scaleOffset + slab.scale.length > blockCount
  ) {
    throw new RangeError(
      `Quantized slab of tensor "${name}" carries scales [${slab.scaleOffset}, ${
        slab.scaleOffset + slab.scale.length
      }), outside the tensor's ${blockCount}`,
    );
  }
  return { numel, blockCount };
}
