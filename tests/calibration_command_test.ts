import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Field, Float32, List, Table, tableToIPC, Utf8, vectorFromArray } from "apache-arrow";
import { activationParams, parseActivationParams } from "../src/activation_params.ts";
import { calibrateCommand } from "../src/calibrate_command.ts";
import { CalibrationStats } from "../src/calibration_stats.ts";
import { calibrationStatsFromArrow } from "../src/calibration_stats_arrow.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-calibrate-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function samplesFile(file: string, rows: [string, number[]][]): string {
  const path = join(dir, file);
  const table = new Table({
    name: vectorFromArray(rows.map((r) => r[0]), new Utf8()),
    values: vectorFromArray(rows.map((r) => r[1]), new List(new Field("item", new Float32(), true))),
  });
  writeFileSync(path, tableToIPC(table, "stream"));
  return path;
}

const shardA = samplesFile("a.arrows", [["fc1.input", [0.5, -1.25]], ["fc2.input", [3, 0.1]]]);
const shardB = samplesFile("b.arrows", [["fc1.input", [2.2, -0.3]], ["fc2.input", [-7.5]]]);

describe("calibrateCommand", () => {
  test("writes SPEC Section 6 parameters for every activation, merging shards", async () => {
    const out = join(dir, "params.json");
    assert.equal(await calibrateCommand([shardA, shardB, "-o", out, "--mode", "linear"]), 0);
    assert.deepEqual(parseActivationParams(readFileSync(out, "utf8")), [
      activationParams("fc1.input", -1.25, Math.fround(2.2), { mode: "linear" }),
      activationParams("fc2.input", -7.5, 3, { mode: "linear" }),
    ]);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith(".tmp")), []); // no temporary file left
  });

  test("saves statistics and resumes from them like one pass", async () => {
    const stats = join(dir, "a.stats.arrow");
    const json = join(dir, "a.stats.json");
    assert.equal(
      await calibrateCommand([shardA, "-o", join(dir, "p1.json"), "--save-stats", stats, "--observer", "percentile"]),
      0,
    );
    assert.equal(await calibrateCommand(["--resume", stats, "-o", join(dir, "p2.json"), "--save-stats", json]), 0);
    const fromArrow = calibrationStatsFromArrow(readFileSync(stats));
    assert.deepEqual(CalibrationStats.fromJSON(readFileSync(json, "utf8")).toJSON(), fromArrow.toJSON());
    const resumed = join(dir, "resumed.json");
    const whole = join(dir, "whole.json");
    const logged: string[] = [];
    const log = console.error;
    console.error = (line: string) => logged.push(line);
    try {
      assert.equal(await calibrateCommand(["--resume", json, shardB, "-o", resumed, "--dtype", "uint8"]), 0);
    } finally {
      console.error = log;
    }
    assert.match(logged.join("\n"), /2 activations from 4 samples \(2 new\)/);
    assert.equal(
      await calibrateCommand([shardA, shardB, "-o", whole, "--observer", "percentile", "--dtype", "uint8"]),
      0,
    );
    assert.equal(readFileSync(resumed, "utf8"), readFileSync(whole, "utf8"));
    // Two --resume flags: both shards' statistics, each saved alone, merge like one pass.
    const statsB = join(dir, "b.stats.arrow");
    assert.equal(
      await calibrateCommand([shardB, "-o", join(dir, "p3.json"), "--save-stats", statsB, "--observer", "percentile"]),
      0,
    );
    const twoResumed = join(dir, "two-resumed.json");
    assert.equal(
      await calibrateCommand(["--resume", stats, "--resume", statsB, "-o", twoResumed, "--dtype", "uint8"]),
      0,
    );
    assert.equal(readFileSync(twoResumed, "utf8"), readFileSync(whole, "utf8"));
  });

  test("exits 2 on bad usage, 1 on bad input, leaving no output", async () => {
    const out = join(dir, "never.json");
    assert.equal(await calibrateCommand([shardA]), 2); // no -o
    assert.equal(await calibrateCommand(["-o", out]), 2); // no input
    assert.equal(await calibrateCommand([shardA, "-o", out, "--dtype", "int4"]), 2);
    assert.equal(await calibrateCommand([shardA, "-o", out, "--bogus"]), 2);
    assert.equal(await calibrateCommand([shardA, "-o", out, "--percentile", "99"]), 2); // needs --observer percentile
    assert.equal(await calibrateCommand([shardA, "-o", out, "--observer", "percentile", "--percentile", "101"]), 2);
    assert.equal(await calibrateCommand([join(dir, "missing.arrows"), "-o", out]), 1);
    const nan = samplesFile("nan.arrows", [["x", [1, NaN]]]);
    assert.equal(await calibrateCommand([nan, "-o", out]), 1);
    assert.equal(await calibrateCommand([nan, "-o", out, "--skip-non-finite"]), 0);
    rmSync(out);
    const truncated = join(dir, "cut.arrows");
    const bytes = readFileSync(shardA);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 8));
    assert.equal(await calibrateCommand([truncated, "-o", out]), 1);
    const big = samplesFile("big.arrows", [["x", [-1000, 5]]]);
    assert.equal(await calibrateCommand([big, "-o", out, "--mode", "linear"]), 1); // float16 overflow
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith("never") || f.endsWith(".tmp")), []);
  });
});
