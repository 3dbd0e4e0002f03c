// Regenerates tests/kit/data/picomatch_tables.json from Next.js's own compiled picomatch.
//
//   node tests/e2e/picomatch_tables.mjs [--next-app DIR] [--write]
//
// The tables' inputs (globs, their `dot` option, candidate strings) stay as they are in the JSON;
// every output is computed again: which candidates `makeRe(glob, {dot}).test` accepts, and the
// regex source `makeRe` gives (what `images-manifest.json` holds). Next's matchRemotePattern and
// writeImagesManifest call makeRe the same way (hostnames with default options, pathnames with
// `{dot: true}`). picomatch is the copy Next compiles into `next/dist/compiled/picomatch`, as
// resolved from DIR's package.json (default tests/e2e/app, whose `npm ci` installs next 16.4.6).
// Without --write the regenerated JSON goes to stdout; tests/e2e/test_picomatch_tables.py checks
// it equals the file.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tablesPath = resolve(here, "..", "kit", "data", "picomatch_tables.json");
const args = process.argv.slice(2);
const appAt = args.indexOf("--next-app");
const app = appAt >= 0 ? resolve(args[appAt + 1]) : join(here, "app");
const require = createRequire(join(app, "package.json"));
const picomatch = require("next/dist/compiled/picomatch");
const nextVersion = require("next/package.json").version;

const tables = JSON.parse(readFileSync(tablesPath, "utf8"));
const accepted = (glob, dot, candidates) => {
  const regex = picomatch.makeRe(glob, { dot });
  return candidates.filter((candidate) => regex.test(candidate));
};

const globs = tables.globs;
globs.cases = globs.cases.map(({ glob, dot }) => ({
  glob,
  dot,
  accepted: accepted(glob, dot, dot ? globs.paths : globs.hosts),
}));
globs.sources = globs.sources.map(({ glob, dot }) => ({
  glob,
  dot,
  source: picomatch.makeRe(glob, { dot }).source,
}));
const manifest = tables.linear_regex;
manifest.cases = manifest.cases.map(({ glob, dot }) => ({
  glob,
  dot,
  source: picomatch.makeRe(glob, { dot }).source,
  accepted: accepted(glob, dot, manifest.candidates),
}));
tables.next = nextVersion;

const text = JSON.stringify(tables, null, 2) + "\n";
if (args.includes("--write")) {
  writeFileSync(tablesPath, text);
} else {
  process.stdout.write(text);
}
