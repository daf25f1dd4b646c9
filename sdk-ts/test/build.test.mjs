// The checked-in build output (dist/) is what `tsc --strict` makes of the checked-in sources
// (src/, themselves diffed against a fresh generation by sdk-ts-gen's tests): compile into a
// temporary directory with the pinned TypeScript and compare file by file.
//
// Run: cd sdk-ts && npm ci && node --test test/build.test.mjs
// Fix a failure with: npm run build (and commit dist/).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

function run(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, ...args], { cwd: root, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, output: stdout + stderr });
    });
  });
}

test("tsc --strict compiles the package, and dist/ is its exact output", { timeout: 150_000 }, async () => {
  const tsconfig = JSON.parse(readFileSync(join(root, "tsconfig.json"), "utf8"));
  assert.equal(tsconfig.compilerOptions.strict, true, "the package is compiled with strict checks");
  const out = mkdtempSync(join(tmpdir(), "hubcast-sdk-ts-"));
  try {
    const { code, output } = await run(["-p", "tsconfig.json", "--outDir", out]);
    assert.equal(code, 0, `tsc failed:\n${output}`);
    const built = readdirSync(out).sort();
    const checkedIn = readdirSync(join(root, "dist")).sort();
    assert.deepEqual(checkedIn, built, "dist/ holds exactly the files tsc emits (run `npm run build`)");
    for (const file of built) {
      assert.equal(
        readFileSync(join(root, "dist", file), "utf8"),
        readFileSync(join(out, file), "utf8"),
        `dist/${file} is stale: run \`npm run build\` in sdk-ts and commit dist/`,
      );
    }
    for (const name of ["index", "client", "protocol", "wire"]) {
      assert.ok(built.includes(`${name}.js`) && built.includes(`${name}.d.ts`), `${name}.js with its .d.ts`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the generator's golden output (sdk-ts-gen/tests/golden) type-checks with tsc --strict", { timeout: 150_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "hubcast-golden-ts-"));
  try {
    mkdirSync(join(dir, "src"));
    copyFileSync(join(root, "..", "sdk-ts-gen", "tests", "golden", "example", "protocol.ts"), join(dir, "src", "protocol.ts"));
    copyFileSync(join(root, "src", "wire.ts"), join(dir, "src", "wire.ts"));
    const tsconfig = JSON.parse(readFileSync(join(root, "tsconfig.json"), "utf8"));
    tsconfig.compilerOptions.noEmit = true;
    tsconfig.compilerOptions.declaration = false;
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(tsconfig));
    const { code, output } = await run(["-p", join(dir, "tsconfig.json")]);
    assert.equal(code, 0, `tsc failed on the golden output:\n${output}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
