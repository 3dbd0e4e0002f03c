// Regenerates tests/kit/data/loader_cases.json from Next.js's own default image loader.
//
//   node tests/e2e/loader_cases.mjs [--next-app DIR] [--write]
//
// Three tables of inputs: every src on every platform (deployment id, whether the platform serves
// immutable assets), every quality under every config (basePath, qualities), and widths. Each
// case's `expected` is what next/dist/shared/lib/image-loader.js (Next 16.4.6, resolved from DIR's
// package.json, default tests/e2e/app) returns for it in a production build, whose config is the
// images config Next inlines into the bundle (path `${basePath}/_next/image`, qualities; no
// localPatterns). Next's deployment-id module reads the id when it loads, so the modules are
// loaded again for each case. Without --write the JSON goes to stdout;
// tests/e2e/test_static_export.py checks it equals the file, and tests/system/test_loader.py checks
// the shipped handler/commands/loader/next-image-loader.js gives `expected` for every case.

import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const casesPath = resolve(here, "..", "kit", "data", "loader_cases.json");
const args = process.argv.slice(2);
const appAt = args.indexOf("--next-app");
const app = appAt >= 0 ? resolve(args[appAt + 1]) : join(here, "app");
const require = createRequire(join(app, "package.json"));
const nextVersion = require("next/package.json").version;

const SRCS = [
  "/a.jpg",
  "/images/a b.jpg",
  "/img/ü & co.png",
  "/a.jpg?v=1",
  "/a.jpg?dpl=from-src",
  "/a.jpg?x=1&dpl=from-src",
  "/_next/static/media/photo.0utmkz_tx1srp.jpg",
  "/_next/static/immutable/media/photo.jpg",
  "https://example.com/a.jpg?x=1&y=2",
  "//cdn.example.com/a.jpg",
];
const QUALITIES = [undefined, 1, 50, 62, 80, 100];
const CONFIGS = [
  { basePath: "", qualities: [75] },
  { basePath: "/docs", qualities: [50, 75, 90] },
  { basePath: "", qualities: undefined },
];
const PLATFORMS = [
  { deploymentId: undefined, immutableAssets: false },
  { deploymentId: "dpl_123", immutableAssets: false },
  { deploymentId: "dpl_123", immutableAssets: true },
];
const PLAIN = { src: "/a.jpg", width: 640, quality: undefined, ...CONFIGS[0], ...PLATFORMS[0] };
// Three tables: every src on every platform; qualities and basePaths; widths.
const INPUTS = [
  ...PLATFORMS.flatMap((platform) => SRCS.map((src) => ({ ...PLAIN, src, ...platform }))),
  ...CONFIGS.flatMap((config) =>
    QUALITIES.map((quality) => ({ ...PLAIN, src: "/images/a b.jpg", quality, ...config }))),
  ...[16, 3840].map((width) => ({ ...PLAIN, width, ...CONFIGS[1], ...PLATFORMS[1] })),
];

process.env.NODE_ENV = "production";

function nextLoader({ deploymentId, immutableAssets }) {
  for (const module of ["image-loader", "deployment-id", "find-closest-quality"]) {
    delete require.cache[require.resolve(`next/dist/shared/lib/${module}`)];
  }
  delete process.env.NEXT_DEPLOYMENT_ID;
  delete process.env.NEXT_SUPPORTS_IMMUTABLE_ASSETS;
  if (deploymentId) process.env.NEXT_DEPLOYMENT_ID = deploymentId;
  if (immutableAssets) process.env.NEXT_SUPPORTS_IMMUTABLE_ASSETS = "1";
  return require("next/dist/shared/lib/image-loader").default;
}

const cases = INPUTS.map((input) => {
  const { src, width, quality, basePath, qualities } = input;
  const loader = nextLoader(input);
  const expected = loader({ config: { path: `${basePath}/_next/image`, qualities }, src, width,
                            quality });
  const nulls = { quality: quality ?? null, qualities: qualities ?? null,
                  deploymentId: input.deploymentId ?? null };
  return JSON.stringify({ ...input, ...nulls, expected });
});
const text = `{"next": ${JSON.stringify(nextVersion)}, "cases": [\n${cases.join(",\n")}\n]}\n`;
if (args.includes("--write")) writeFileSync(casesPath, text);
else process.stdout.write(text);
