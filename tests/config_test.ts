import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, optionsFor, parseConfig } from "@quantflow/quantflow";

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
