// One instance of OpenNext's image-optimization function in this Node process, as Lambda would
// keep it: imports its bundle once (the init phase, timed), then sends it the same Function URL
// events in order, once per pass. bench/opennext.py runs it and reads the JSON it prints.
//
//   node driver.mjs <function dir> <events.json> <out dir> <passes>
//
// Each answer's wall and CPU time (all threads) are measured, and its body is written to
// <out dir>/<pass>-<index> so that the caller can decode it.
import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [functionDir, eventsPath, outDir, passes] = process.argv.slice(2);
const events = JSON.parse(await readFile(eventsPath, 'utf8'));

const started = performance.now();
const { handler } = await import(pathToFileURL(resolve(functionDir, 'index.mjs')).href);
const initMs = performance.now() - started;

const results = [];
for (let pass = 0; pass < Number(passes); pass += 1) {
  const answers = [];
  for (const [index, event] of events.entries()) {
    const begun = performance.now();
    const cpu = process.cpuUsage();
    const response = await handler(event);
    const ms = performance.now() - begun;
    const used = process.cpuUsage(cpu);
    const body = Buffer.from(response.body ?? '', response.isBase64Encoded ? 'base64' : 'utf8');
    writeFileSync(join(outDir, `${pass}-${index}`), body);
    answers.push({
      ms,
      cpu_ms: (used.user + used.system) / 1000,
      status: response.statusCode,
      type: response.headers?.['content-type'] ?? '',
      bytes: body.length,
    });
  }
  results.push(answers);
}

process.stdout.write(
  JSON.stringify({ init_ms: initMs, passes: results, max_rss_kib: process.resourceUsage().maxRSS }),
);
