import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  dequantizeFile,
  dequantizeShardedCheckpoint,
  encodeShardIndex,
  parseConfig,
  parseShardIndex,
  quantizeFile,
  quantizeShardedCheckpoint,
} from "@quantflow/quantflow";
import { main } from "../src/cli.ts";
import { encodeBfloat16, encodeFloat16 } from "../src/float16.ts";
import { rng } from "./_reference.ts";
import { bytesOf, checkpoint, readCheckpoint, type TestTensor } from "./_checkpoint.ts";

const INDEX = "model.safetensors.index.json";

function floats(shape: number[], seed: number): Float32Array {
  const next = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, (_, i) => (next() - 0.5) * (1 + (i % 5)));
}

/** A small model's tensors in file order: float32, float16 and bfloat16 weights, a rank-1 norm, an int64 buffer. */
function modelTensors(): [string, TestTensor][] {
  const f32 = (shape: number[], seed: number): TestTensor => ({
    dtype: "F32",
    shape,
    bytes: bytesOf(floats(shape, seed)),
  });
  const n = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  return [
    ["embed.weight", f32([64, 48], 1)],
    ["h.0.attn.weight", f32([32, 96], 2)],
    ["h.0.norm.weight", f32([32], 3)],
    ["h.0.mlp.weight", {
      dtype: "F16",
      shape: [64, 48],
      bytes: bytesOf(encodeFloat16(floats([64, 48], 4), new Uint16Array(n([64, 48])))),
    }],
    ["h.1.attn.weight", f32([32, 96], 5)],
    ["h.1.mlp.weight", {
      dtype: "BF16",
      shape: [64, 48],
      bytes: bytesOf(encodeBfloat16(floats([64, 48], 6), new Uint16Array(n([64, 48])))),
    }],
    ["position_ids", { dtype: "I64", shape: [16], bytes: bytesOf(new BigInt64Array(16).map((_, i) => BigInt(i))) }],
    ["lm_head.weight", f32([64, 48], 7)],
  ];
}

const root = mkdtempSync(join(tmpdir(), "quantflow-shards-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

/** Writes the tensors as one file and as shards of the given sizes with an index; returns the paths. */
function writeModel(
  tensors: [string, TestTensor][],
  shardSizes: number[],
  metadata: Record<string, unknown> = { total_size: 0 },
): { dir: string; full: string; index: string; shards: string[] } {
  const dir = join(root, `m${dirs++}`);
  mkdirSync(dir);
  const full = join(dir, "full.safetensors");
  writeFileSync(full, checkpoint(Object.fromEntries(tensors)));
  const model = join(dir, "model");
  mkdirSync(model);
  const weightMap: Record<string, string> = {};
  const shards: string[] = [];
  let at = 0;
  for (const [k, size] of shardSizes.entries()) {
    const name = `model-${k + 1}-of-${shardSizes.length}.safetensors`;
    const part = tensors.slice(at, at + size);
    at += size;
    writeFileSync(join(model, name), checkpoint(Object.fromEntries(part), { format: "pt" }));
    for (const [tensor] of part) weightMap[tensor] = name;
    shards.push(name);
  }
  writeFileSync(join(model, INDEX), encodeShardIndex(metadata, weightMap));
  return { dir, full, index: join(model, INDEX), shards };
}

/** Every tensor of a sharded checkpoint, found through its index, and the index. */
function readSharded(dir: string): { tensors: Record<string, TestTensor>; index: ReturnType<typeof JSON.parse> } {
  const index = JSON.parse(readFileSync(join(dir, INDEX), "utf8"));
  const tensors: Record<string, TestTensor> = {};
  for (const shard of new Set(Object.values(index.weight_map) as string[])) {
    const file = readCheckpoint(readFileSync(join(dir, shard))).tensors;
    for (const [name, t] of Object.entries(file)) {
      assert.equal(index.weight_map[name], shard, `the index puts "${name}" in the shard that holds it`);
      tensors[name] = t;
    }
  }
  assert.deepEqual(Object.keys(index.weight_map).sort(), Object.keys(tensors).sort(), "the index lists every tensor");
  return { tensors, index };
}

function quiet<T>(run: () => Promise<T>): Promise<T> {
  const [log, error] = [console.log, console.error];
  console.log = console.error = () => {};
  return run().finally(() => {
    console.log = log;
    console.error = error;
  });
}

describe("sharded checkpoints", () => {
  test("parseShardIndex lists each shard once, sorted by name", () => {
    const index = parseShardIndex(
      JSON.stringify({ weight_map: { b: "m-2.safetensors", a: "m-1.safetensors", c: "m-2.safetensors" } }),
    );
    assert.deepEqual(index.shards, ["m-1.safetensors", "m-2.safetensors"]);
    assert.deepEqual(index.metadata, {});
  });

  const badIndexes: [string, string, RegExp][] = [
    ["text that is not JSON", "{", /^idx is not JSON: /],
    ["an array", "[]", /^idx: expected a JSON object with "weight_map"$/],
    ["no weight_map", "{}", /^idx: "weight_map" must be an object of tensor names to shard files$/],
    ["metadata that is not an object", '{"metadata": 3, "weight_map": {}}', /^idx: "metadata" must be an object$/],
    ["an empty weight_map", '{"weight_map": {}}', /^idx: "weight_map" lists no tensors$/],
    [
      "a shard in another directory",
      '{"weight_map": {"w": "../m.safetensors"}}',
      /^idx: tensor "w" maps to "\.\.\/m\.safetensors"; a shard must be the name of a \.safetensors file beside/,
    ],
    [
      "a shard that is not safetensors",
      '{"weight_map": {"w": "pytorch_model-1.bin"}}',
      /maps to "pytorch_model-1\.bin"/,
    ],
    ["a shard that is not a string", '{"weight_map": {"w": 1}}', /^idx: tensor "w" maps to 1;/],
  ];
  for (const [label, text, message] of badIndexes) {
    test(`parseShardIndex refuses ${label}`, () => {
      assert.throws(() => parseShardIndex(text, "idx"), { name: "FormatError", message });
    });
  }

  test("quantizing shard by shard writes every tensor as quantizing the whole file does, with an index of them", async () => {
    const tensors = modelTensors();
    const model = writeModel(tensors, [3, 2, 3], { total_size: 12345, note: "kept" });
    const config = parseConfig({
      global: { weightThreshold: 0 },
      tensors: { "lm_head.*": null, "h.0.attn.*": { axis: -1 } },
    });
    // The same slabs: the report's float32 partial sums (within 1e-6) then add up alike.
    const whole = await quantizeFile(model.full, join(model.dir, "whole.safetensors"), { config, slabBytes: 1000 });
    const progress: [number, number][] = [];
    const out = join(model.dir, "int8");
    const report = await quantizeShardedCheckpoint(model.index, out, {
      config,
      slabBytes: 1000,
      onProgress: (done, total) => progress.push([done, total]),
    });

    const expected = readCheckpoint(readFileSync(join(model.dir, "whole.safetensors"))).tensors;
    const { tensors: written, index } = readSharded(out);
    assert.deepEqual(Object.keys(written).sort(), Object.keys(expected).sort());
    for (const [name, t] of Object.entries(expected)) assert.deepEqual(written[name], t, name);
    assert.ok(written["h.0.attn.weight.scale"], "an override applied in its shard");
    assert.equal(written["lm_head.weight"].dtype, "F32", "a tensor kept in float by the config");

    assert.equal(index.metadata.note, "kept", "the index's other metadata is kept");
    const dataBytes = Object.values(written).reduce((a, t) => a + t.bytes.length, 0);
    assert.equal(index.metadata.total_size, dataBytes, "total_size counts the new tensors");
    assert.deepEqual(report, whole, "the report is the whole file's");
    assert.deepEqual(readdirSync(out).sort(), [...model.shards, INDEX].sort(), "nothing else is left in the directory");

    const inputBytes = tensors.reduce((a, [, t]) => a + t.bytes.length, 0);
    assert.deepEqual(progress.at(-1), [inputBytes, inputBytes]);
    assert.ok(progress.every(([done], k) => k === 0 || done >= progress[k - 1][0]), "progress never goes back");
  });

  test("dequantizing a quantized sharded checkpoint gives the tensors dequantizing the whole file gives", async () => {
    const model = writeModel(modelTensors(), [4, 4]);
    const config = { weightThreshold: 0, dtype: "uint4", mode: "linear" } as const;
    await quantizeFile(model.full, join(model.dir, "whole.safetensors"), { config });
    await dequantizeFile(join(model.dir, "whole.safetensors"), join(model.dir, "whole.float.safetensors"));
    await quantizeShardedCheckpoint(model.index, join(model.dir, "q"), { config });

    const count = await dequantizeShardedCheckpoint(join(model.dir, "q", INDEX), join(model.dir, "float"));
    assert.equal(count, 6);
    const expected = readCheckpoint(readFileSync(join(model.dir, "whole.float.safetensors"))).tensors;
    const { tensors } = readSharded(join(model.dir, "float"));
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(expected).sort());
    for (const [name, t] of Object.entries(expected)) assert.deepEqual(tensors[name], t, name);
  });

  const broken: [string, (model: ReturnType<typeof writeModel>) => void, string, RegExp][] = [
    [
      "a shard is missing",
      (m) => rmSync(join(m.dir, "model", m.shards[1])),
      "FormatError",
      /^Shard "model-2-of-3\.safetensors" listed in model\.safetensors\.index\.json is missing: no file /,
    ],
    [
      "a shard is malformed",
      (m) => writeFileSync(join(m.dir, "model", m.shards[2]), new Uint8Array(4)),
      "FormatError",
      /^Shard "model-3-of-3\.safetensors": /,
    ],
    [
      "the index lists a tensor its shard lacks",
      (m) => rewriteIndex(m, (map) => (map["ghost.weight"] = m.shards[0])),
      "FormatError",
      /^model\.safetensors\.index\.json puts tensor "ghost\.weight" in "model-1-of-3\.safetensors", which does not hold it$/,
    ],
    [
      "a shard holds a tensor the index puts elsewhere",
      (m) => rewriteIndex(m, (map) => (map["embed.weight"] = m.shards[1])),
      "FormatError",
      /^Shard "model-1-of-3\.safetensors" holds tensor "embed\.weight", which model\.safetensors\.index\.json puts in "model-2-of-3\.safetensors"$/,
    ],
    [
      "a shard holds a tensor the index does not list",
      (m) => rewriteIndex(m, (map) => delete map["position_ids"]),
      "FormatError",
      /holds tensor "position_ids", which model\.safetensors\.index\.json does not list$/,
    ],
    [
      "the last shard has a NaN",
      (m) => {
        const tensors = modelTensors().slice(5);
        (tensors[2][1].bytes as Uint8Array).set(bytesOf(new Float32Array([NaN])), 40);
        writeFileSync(join(m.dir, "model", m.shards[2]), checkpoint(Object.fromEntries(tensors)));
      },
      "NonFiniteError",
      /^Cannot quantize tensor "lm_head\.weight": NaN at element 10/,
    ],
  ];
  for (const [label, breakIt, name, message] of broken) {
    test(`when ${label}, quantizing fails with the reason and writes nothing`, async () => {
      const model = writeModel(modelTensors(), [3, 2, 3]);
      breakIt(model);
      const out = join(model.dir, "int8");
      await assert.rejects(quantizeShardedCheckpoint(model.index, out), { name, message });
      assert.equal(existsSync(out), false, "the output directory it created is gone");
    });
  }

  test("a tensor named like another shard's scale is refused before any work, and other files stay", async () => {
    const [[, a], [, b]] = modelTensors();
    const model = writeModel([["w", a], ["w.scale", b]], [1, 1]);
    const out = join(model.dir, "out");
    mkdirSync(out);
    writeFileSync(join(out, "notes.txt"), "mine");
    await assert.rejects(quantizeShardedCheckpoint(model.index, out), {
      name: "FormatError",
      message: 'Tensor "w.scale" would be written to both "model-1-of-2.safetensors" and "model-2-of-2.safetensors"',
    });
    assert.deepEqual(readdirSync(out), ["notes.txt"]);
  });

  test("the input's directory reached through a directory yet to be made is refused, and nothing is made", async () => {
    const model = writeModel(modelTensors(), [4, 4]);
    const before = readdirSync(join(model.dir, "model"));
    // Not path.join, which would resolve `new/..` away.
    await assert.rejects(quantizeShardedCheckpoint(model.index, `${join(model.dir, "model")}/new/..`), {
      name: "RangeError",
      message: /its own directory/,
    });
    assert.deepEqual(readdirSync(join(model.dir, "model")), before);
  });

  test("a directory in the place of an output file is refused before any work", async () => {
    const model = writeModel(modelTensors(), [4, 4]);
    const out = join(model.dir, "out");
    mkdirSync(join(out, INDEX), { recursive: true });
    await assert.rejects(quantizeShardedCheckpoint(model.index, out), {
      name: "RangeError",
      message: `Cannot write "${join(out, INDEX)}": a directory of that name is in the way`,
    });
    assert.deepEqual(readdirSync(out), [INDEX]);
  });

  test("a file as the output directory is refused", async () => {
    const model = writeModel(modelTensors(), [8]);
    const file = join(model.dir, "afile");
    writeFileSync(file, "");
    await assert.rejects(quantizeShardedCheckpoint(model.index, file), {
      name: "RangeError",
      message: `Cannot write a sharded checkpoint into "${file}": it is a file, not a directory`,
    });
  });

  test("the input's own directory is refused as the output", async () => {
    const model = writeModel(modelTensors(), [4, 4]);
    const before = readdirSync(join(model.dir, "model"));
    await assert.rejects(quantizeShardedCheckpoint(model.index, join(model.dir, "model", ".")), {
      name: "RangeError",
      message: /^Cannot write a sharded checkpoint into its own directory .*: its shards would be replaced$/,
    });
    assert.deepEqual(readdirSync(join(model.dir, "model")), before);
  });

  test("the CLI quantizes, inspects and dequantizes an index into directories", async () => {
    const model = writeModel(modelTensors(), [3, 5]);
    const out = join(model.dir, "cli-int8");
    const printed: string[] = [];
    const log = console.log;
    console.log = (text: string) => printed.push(text);
    try {
      assert.equal(await main(["quantize", model.index, "-o", out, "--weight-threshold", "0"]), 0);
      assert.match(printed.join("\n"), /6 of 8 tensors quantized/);
      printed.length = 0;
      assert.equal(await main(["inspect", join(out, INDEX)]), 0);
      assert.match(printed[0], /^model-1-of-2\.safetensors\ntensor +dtype/);
      assert.match(printed[0], /\n\nmodel-2-of-2\.safetensors\n/);
      assert.equal(await main(["dequantize", join(out, INDEX), "-o", join(model.dir, "cli-float")]), 0);
    } finally {
      console.log = log;
    }
    assert.deepEqual(
      Object.keys(readSharded(join(model.dir, "cli-float")).tensors).sort(),
      modelTensors().map(([name]) => name).sort(),
    );
  });

  test("the CLI exits 2 for a file as the output of an index, and 1 for a bad index or output path", async () => {
    const model = writeModel(modelTensors(), [8]);
    await quiet(async () => {
      assert.equal(await main(["quantize", model.index, "-o", join(model.dir, "out.safetensors")]), 2);
      assert.equal(await main(["dequantize", model.index, "-o", join(model.dir, "out.arrows")]), 2);
      assert.equal(
        await main(["quantize", model.index, "-o", join(model.dir, "q", "model.safetensors.index.json")]),
        2,
      );
      writeFileSync(join(model.dir, "afile"), "");
      assert.equal(await main(["quantize", model.index, "-o", join(model.dir, "afile")]), 1);
      assert.equal(await main(["quantize", model.full, "-o", join(model.dir, "afile", "out.safetensors")]), 1);
      rmSync(join(model.dir, "model", model.shards[0]));
      assert.equal(await main(["quantize", model.index, "-o", join(model.dir, "out")]), 1);
      assert.equal(await main(["inspect", model.index]), 1);
    });
    assert.equal(existsSync(join(model.dir, "out.safetensors")), false);
  });
});

function rewriteIndex(model: { index: string }, edit: (map: Record<string, string>) => void): void {
  const index = JSON.parse(readFileSync(model.index, "utf8"));
  edit(index.weight_map);
  writeFileSync(model.index, JSON.stringify(index));
}
