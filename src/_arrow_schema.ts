/**
 * Reading the layout of an Arrow tensor stream back from its schema
 * (README.md, "Arrow layout"), for the decoder.
 *
 * Internal. The schema comes from untrusted bytes, so everything it claims is
 * checked as the encoder checks its slabs (`_arrow_checks.ts`), and the
 * columns must be exactly those the encoder would write for the metadata:
 * the batch reader then checks only rows, lengths and nulls.
 *
 * @module
 */
import { type DataType, type FixedSizeList, Precision, type Schema, Type } from "apache-arrow";
import { checkInfo, checkShape, FLOAT_DTYPES } from "./_arrow_checks.ts";
import {
  buildSchema,
  describeType,
  META,
  planSlabLayout,
  quantizedLayout,
  rowLength,
  rowRun,
  type ScaleLayout,
  type SchemaSpec,
  slabFields,
  type StreamLayout,
} from "./_arrow_layout.ts";
import { FormatError } from "./errors.ts";
import { encodeFloat16 } from "./float16.ts";
import { isSigned, storesZeroPoint } from "./ranges.ts";
import type { FloatDType, QuantizedTensorInfo } from "./types.ts";

/** A short description of a type, spelled as `describeType` spells the layout's (ignores child field names and nullability). */
function describe(type: DataType): string {
  switch (type.typeId) {
    case Type.Int: {
      const t = type as unknown as { bitWidth: number; isSigned: boolean };
      return `${t.isSigned ? "Int" : "Uint"}${t.bitWidth}`;
    }
    case Type.Float: {
      const p = (type as unknown as { precision: Precision }).precision;
      return p === Precision.HALF ? "Float16" : p === Precision.SINGLE ? "Float32" : "Float64";
    }
    case Type.FixedSizeList: {
      const t = type as FixedSizeList;
      return `FixedSizeList<${t.listSize}, ${describe(t.children[0].type)}>`;
    }
    default:
      return String(type);
  }
}

function parseJSON(name: string, key: string, text: string | undefined): unknown {
  if (text === undefined) {
    throw new FormatError(`Arrow stream of tensor "${name}" lacks the schema metadata key ${key}`);
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FormatError(`Arrow stream of tensor "${name}" has invalid JSON in ${key}: ${text.slice(0, 80)}`, {
      cause,
    });
  }
}

function parseListSize(name: string, meta: Map<string, string>, rowLen: number): number {
  const text = meta.get(META.listSize);
  const L = Number(text);
  if (!Number.isSafeInteger(L) || L <= 0 || (rowLen > 0 && rowLen % L !== 0)) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has ${META.listSize} ${
        JSON.stringify(text)
      }; expected a divisor of the row length ${rowLen}`,
    );
  }
  return L;
}

function expectFields(name: string, schema: Schema, want: SchemaSpec): void {
  const got = schema.fields.map((f) => `${f.name}: ${describe(f.type)}`).join(", ");
  const expected = want.fields.map(([column, type]) => `${column}: ${describeType(type)}`).join(", ");
  if (got !== expected) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has columns (${got}); its metadata calls for (${expected})`,
    );
  }
}

/** The tensor name a schema announces, for error messages. */
export function schemaTensorName(schema: Schema): string | undefined {
  return schema.metadata.get(META.name);
}

/**
 * The layout a stream's schema describes.
 *
 * @throws {FormatError} If the schema is not one quantflow writes.
 */
export function layoutFromSchema(schema: Schema): StreamLayout {
  const meta = schema.metadata;
  const kind = meta.get(META.kind);
  const name = meta.get(META.name);
  if (name === undefined || (kind !== "slab" && kind !== "quantized")) {
    throw new FormatError(
      `Arrow stream is not a quantflow tensor stream: schema metadata ${META.kind}=${
        JSON.stringify(kind)
      }, ${META.name}=${JSON.stringify(name)}`,
    );
  }
  if (kind === "slab") {
    const dtype = meta.get(META.dtype) as FloatDType;
    if (!FLOAT_DTYPES.includes(dtype)) {
      throw new FormatError(
        `Arrow stream of tensor "${name}" has ${META.dtype} ${JSON.stringify(dtype)}; expected ${
          FLOAT_DTYPES.join(" | ")
        }`,
      );
    }
    const shape = parseJSON(name, META.shape, meta.get(META.shape)) as number[];
    try {
      checkShape(name, shape);
    } catch (cause) {
      throw new FormatError(`Arrow stream of tensor "${name}" has ${META.shape} ${JSON.stringify(shape)}`, { cause });
    }
    const L = parseListSize(name, meta, rowLength(shape));
    const layout = planSlabLayout({
      tensor: { name, dtype, shape },
      offset: 0,
      data: dtype === "float32" ? new Float32Array(0) : new Uint16Array(0),
    });
    const expected = buildSchema(slabFields(L, dtype), meta);
    expectFields(name, schema, expected);
    return { ...layout, listSize: L, schema: expected };
  }
  const config = parseJSON(name, META.config, meta.get(META.config)) as Omit<QuantizedTensorInfo, "name">;
  const info = { ...config, name } as QuantizedTensorInfo;
  let numel: number, blockCount: number;
  try {
    ({ numel, blockCount } = checkInfo(info));
  } catch (cause) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has an invalid ${META.config}: ${(cause as Error).message}`,
      { cause },
    );
  }
  const L = parseListSize(name, meta, rowLength(info.shape));
  const zeroPoints = storesZeroPoint(info.dtype, info.mode);
  const layoutKind = meta.get(META.scaleLayout);
  let scales: ScaleLayout;
  const run = rowRun(info);
  if (layoutKind === "column" && run !== undefined && (L % run === 0 || run % L === 0)) {
    scales = L >= run
      ? { kind: "column", perEntry: L / run, run, duplicated: false }
      : { kind: "column", perEntry: 1, run, duplicated: true };
  } else if (layoutKind === "metadata") {
    const values = parseJSON(name, META.scale, meta.get(META.scale));
    if (!Array.isArray(values) || values.length !== blockCount || !values.every((v) => typeof v === "number")) {
      throw new FormatError(
        `Arrow stream of tensor "${name}" has ${META.scale} that is not an array of ${blockCount} numbers`,
      );
    }
    // The writer stores float16 scales as their exact values, so rounding to float16 restores the bits.
    const scale = info.scaleDType === "float32"
      ? Float32Array.from(values)
      : encodeFloat16(values, new Uint16Array(values.length));
    let zeroPoint: Int8Array | Uint8Array | undefined;
    if (zeroPoints) {
      const zps = parseJSON(name, META.zeroPoint, meta.get(META.zeroPoint));
      if (!Array.isArray(zps) || zps.length !== blockCount || !zps.every((v) => Number.isInteger(v))) {
        throw new FormatError(
          `Arrow stream of tensor "${name}" has ${META.zeroPoint} that is not an array of ${blockCount} integers`,
        );
      }
      zeroPoint = isSigned(info.dtype) ? Int8Array.from(zps) : Uint8Array.from(zps);
    }
    scales = { kind: "metadata", scale, zeroPoint };
  } else {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has ${META.scaleLayout} ${
        JSON.stringify(layoutKind)
      }, which does not fit its ` +
        `${info.granularity} blockSizes ${JSON.stringify(info.blockSizes)} and list size ${L}`,
    );
  }
  const layout = quantizedLayout(info, L, numel, blockCount, scales, meta);
  expectFields(name, schema, layout.schema);
  return layout;
}
