import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, optionsFor, parseConfig, QuantizeStream, resolveConfig } from "@quantflow/quantflow";

describe("parseConfig", () => {
  test("fills defaults and applies the last matching override", () => {
    const config = parseConfig({
      global: { dtype: "int4", granularity: "per_block", blockSize: 16 },
      tensors: { "*.weight": { mode: "linear" }, "*.c_attn.weight": { axis: -1 }, "wte.weight": null },
    });
    assert.deepEqual(optionsFor(config, "h.0.attn.c_attn.weight"), {
      mode: "linear_symmetric",
      dtype: "int4",
      granularity: "per_block",
      axis: -1,
      blockSize: 16,
      weightThreshold: 2048,
      quantizeRank1: false,
    });
    assert.equal(optionsFor(config, "h.0.mlp.c_fc.weight")?.mode, "linear");
    assert.equal(optionsFor(config, "wte.weight"), null);
    assert.equal(optionsFor(config, "ln_f.bias")?.mode, "linear_symmetric");
  });

  test("patterns match whole names, with * crossing dots and ? one character", () => {
    const config = parseConfig({ tensors: { "h.?.attn.*": null } });
    assert.equal(optionsFor(config, "h.3.attn.c_proj.weight"), null);
    assert.notEqual(optionsFor(config, "h.12.attn.c_proj.weight"), null);
    assert.notEqual(optionsFor(config, "xh.3.attn.c_proj.weight"), null);
  });

  test("reports every problem with its path", () => {
    try {
      parseConfig({ global: { dtype: "int3" }, tensors: { "*.c_attn.weight": { axis: 0.5 } }, extra: 1 });
      assert.fail("expected a ConfigError");
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.issues.length, 3);
      assert.match(e.issues.join("\n"), /^global\.dtype: /m);
      assert.match(e.issues.join("\n"), /^tensors\["\*\.c_attn\.weight"\]\.axis: .*int/m);
      assert.match(e.issues.join("\n"), /extra/);
    }
  });

  test("rejects a non-object", () => {
    assert.throws(() => parseConfig([1]), ConfigError);
  });
});

describe("resolveConfig", () => {
  test("returns a parsed configuration as is and completes plain options", () => {
    const config = parseConfig({ tensors: { "lm_head.*": null } });
    assert.equal(resolveConfig(config), config);
    assert.deepEqual(resolveConfig({ dtype: "uint4" }).global, { ...resolveConfig({}).global, dtype: "uint4" });
  });

  test("checks a configuration built by hand, which the jobs then use unchecked", () => {
    const built = { global: { axis: 1 }, tensors: [{ pattern: "*.c_attn.weight", options: { dtype: "int3" } }] };
    try {
      resolveConfig(built as never);
      assert.fail("expected a ConfigError");
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      assert.match(e.issues.join("\n"), /^tensors\[0\]\.options\.dtype: /m);
    }
    // The streams check it too, before any tensor is planned.
    assert.throws(() => new QuantizeStream(built as never), ConfigError);
    const good = { ...built, tensors: [{ pattern: "*.c_attn.weight", options: { dtype: "uint8" } }] };
    const resolved = resolveConfig(good as never);
    assert.equal(resolved.global.axis, 1);
    assert.equal(resolved.global.dtype, "int8");
    assert.equal(optionsFor(resolved, "h.0.attn.c_attn.weight")?.dtype, "uint8");
    assert.equal(resolveConfig(resolved), resolved);
  });
});
