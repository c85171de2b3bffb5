/**
 * The vocabulary shared by every part of quantflow: tensors, quantization
 * options and the results of quantizing.
 *
 * @module
 */

/** Float element types quantflow quantizes (SPEC.md Section 3). */
export type FloatDType = "float32" | "float16" | "bfloat16";

/** Integer element types of quantized data (SPEC.md Section 2). */
export type QuantDType = "int8" | "uint8" | "int4" | "uint4";

/** Quantization mode, named as in Core ML Tools. */
export type QuantMode = "linear" | "linear_symmetric";

/** Which elements share one scale (SPEC.md Section 4). */
export type Granularity = "per_tensor" | "per_channel" | "per_block";

/** The float type a scale is stored in: the weight's own, float32 for bfloat16. */
export type ScaleDType = "float32" | "float16";

/**
 * Raw element storage of a float tensor. float32 elements are a
 * `Float32Array`; float16 and bfloat16 elements are their raw 16-bit
 * patterns in a `Uint16Array` (decode float16 with a `Float16Array` view).
 */
export type FloatData = Float32Array | Uint16Array;

/** The identity of a tensor, without its data. */
export interface TensorInfo {
  /** Name as it appears in the checkpoint, e.g. `h.0.attn.c_attn.weight`. */
  readonly name: string;
  /** Element type. */
  readonly dtype: FloatDType;
  /** Dimensions, outermost first (row-major). */
  readonly shape: readonly number[];
}

/** A whole float tensor held in memory. */
export interface Tensor extends TensorInfo {
  /** Elements in row-major order: `Float32Array` for float32, raw bits for 16-bit types. */
  readonly data: FloatData;
}

/**
 * A slab: consecutive elements of ONE tensor, in row-major order. Slabs are
 * what flows through quantflow's streams; a tensor is the concatenation of
 * its slabs in order of `offset`.
 */
export interface Slab {
  /** Discriminant within model streams (optional: a bare `{ tensor, offset, data }` is a slab). */
  readonly kind?: "slab";
  /** The tensor these elements belong to. */
  readonly tensor: TensorInfo;
  /** Flat (row-major) index of `data[0]` within the tensor. */
  readonly offset: number;
  /** The elements; same storage convention as {@linkcode Tensor.data}. */
  readonly data: FloatData;
  /**
   * A way to read the whole tensor again from its start, when the source can
   * (a file range, a buffer). Two-pass quantization (per tensor, per channel
   * on an axis other than 0) uses it; without it the slabs are spooled to a
   * temporary file.
   */
  readonly source?: SlabSource;
}

/** A tensor that can be read again, as slabs, from its first element. */
export interface SlabSource {
  /** Returns a fresh stream of the tensor's slabs, in order. */
  slabs(): ReadableStream<Slab>;
}

/**
 * Bytes of a tensor that passes through unchanged: a non-float tensor, or a
 * float tensor the configuration leaves alone.
 */
export interface RawChunk {
  /** Discriminant. */
  readonly kind: "raw";
  /** Tensor name. */
  readonly name: string;
  /** safetensors dtype code, e.g. `F32`, `I64`, `BOOL`. */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Byte offset of `bytes[0]` within the tensor's data. */
  readonly offset: number;
  /** The bytes. */
  readonly bytes: Uint8Array;
}

/** A quantized slab: consecutive quantized elements of one tensor. */
export interface QuantizedSlab {
  /** Discriminant. */
  readonly kind: "quantized";
  /** How the tensor was quantized. */
  readonly tensor: QuantizedTensorInfo;
  /** Flat (row-major) index of `data[0]` within the tensor. */
  readonly offset: number;
  /** One quantized value per element (4-bit values unpacked). */
  readonly data: Int8Array | Uint8Array;
  /**
   * Index, in the row-major scale tensor, of `scale[0]`. Every scale of a
   * tensor is carried by exactly one of its slabs: where the scales follow the
   * rows (per channel on axis 0, per block) each slab carries those of its own
   * rows; otherwise the first slab carries them all and the others none.
   */
  readonly scaleOffset: number;
  /** Scales first carried by this slab (possibly none). */
  readonly scale: Float32Array | Uint16Array;
  /** Zero points matching `scale`; present when the tensor stores zero points. */
  readonly zeroPoint?: Int8Array | Uint8Array;
}

/** Options of a quantization, named after Core ML Tools' `OpLinearQuantizerConfig`. */
export interface QuantizeOptions {
  /**
   * `linear_symmetric` (zero point fixed) or `linear` (affine).
   * @default {"linear_symmetric"}
   */
  mode?: QuantMode;
  /**
   * Integer type of the quantized values.
   * @default {"int8"}
   */
  dtype?: QuantDType;
  /**
   * Which elements share a scale.
   * @default {"per_channel"}
   */
  granularity?: Granularity;
  /**
   * Channel axis for `per_channel` and `per_block`; negative counts from the end.
   * Use -1 for weights stored [C_in, C_out] (GPT-2 `Conv1D`, Keras `Dense`).
   * @default {0}
   */
  axis?: number;
  /**
   * Block length along the input axis for `per_block`.
   * @default {32}
   */
  blockSize?: number;
  /**
   * Tensors with this many elements or fewer are left in float.
   * @default {2048}
   */
  weightThreshold?: number;
  /**
   * Quantize rank-1 tensors (biases, norms) per tensor instead of skipping them.
   * @default {false}
   */
  quantizeRank1?: boolean;
}

/** {@linkcode QuantizeOptions} with every default filled in. */
export type ResolvedQuantizeOptions = Required<QuantizeOptions>;

/** Why a tensor was left unquantized; machine-readable. */
export type SkipReason =
  | "not_float"
  | "excluded"
  | "rank_below_2"
  | "too_small"
  | "below_threshold"
  | "block_size_mismatch";

/** The outcome for a tensor that was left as it is. */
export interface SkippedTensor {
  /** Discriminant. */
  readonly kind: "skipped";
  /** Tensor name. */
  readonly name: string;
  /** Machine-readable reason. */
  readonly reason: SkipReason;
  /** Human-readable explanation naming the numbers involved. */
  readonly message: string;
}

/** The quantization recipe of one tensor: everything needed to dequantize. */
export interface QuantizedTensorInfo {
  /** Tensor name. */
  readonly name: string;
  /** Float type of the source. */
  readonly sourceDType: FloatDType;
  /** Integer type of the quantized values. */
  readonly dtype: QuantDType;
  /** Mode used. */
  readonly mode: QuantMode;
  /** Granularity asked for (`per_tensor` also for rank-1 tensors quantized by option). */
  readonly granularity: Granularity;
  /** Channel axis, normalized to be non-negative. */
  readonly axis: number;
  /** Shape of the tensor. */
  readonly shape: readonly number[];
  /** Block size per axis, each dividing its dimension (SPEC.md Section 4). */
  readonly blockSizes: readonly number[];
  /** Shape of the scale tensor: `shape[i] / blockSizes[i]`. */
  readonly scaleShape: readonly number[];
  /** Float type of the stored scale. */
  readonly scaleDType: ScaleDType;
}

/** A quantized tensor held in memory. */
export interface QuantizedTensor extends QuantizedTensorInfo {
  /** Discriminant. */
  readonly kind: "quantized";
  /** One quantized value per element (4-bit values unpacked): `Int8Array` for signed, `Uint8Array` for unsigned. */
  readonly data: Int8Array | Uint8Array;
  /** Scales in row-major order of `scaleShape`: `Float32Array`, or float16 bits in a `Uint16Array`. */
  readonly scale: Float32Array | Uint16Array;
  /** Zero points, same layout as `scale`; absent when all are 0. */
  readonly zeroPoint?: Int8Array | Uint8Array;
  /** Blocks whose scale was 0 (all zero, or float16 underflow) and were stored with scale 1. */
  readonly zeroRangeBlocks: number;
}

/** What {@linkcode quantizeTensor} returns. */
export type QuantizeResult = QuantizedTensor | SkippedTensor;
