import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTools, run, tempDir } from '../helpers/tools.js';
import { CLI, MiB, tidemark } from './cliHarness.js';

/** Strip terminal control sequences so the bar's text can be matched. */
function plain(tty: string): string {
  return tty.replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, '').replace(/\x1b[78]/g, '').replace(/\r/g, '\n');
}

test('convert shows a progress bar with percentage, sizes, throughput and ETA on a TTY, and none otherwise', async (t) => {
  if (!requireTools(t, 'script')) return;
  const dir = await tempDir(t, 'tidemark-progress-');
  const src = join(dir, 'src.raw');
  await writeFile(src, randomBytes(64 * MiB));

  // `script` runs the command on a pseudo-terminal, as an admin's shell would.
  const out = plain(run('script', ['-qec', `${process.execPath} ${CLI} disk convert ${src} ${join(dir, 'tty.vhdx')} --format vhdx`, '/dev/null']).stdout);
  assert.match(out, /convert .*\[.*\] \d+% \| [\d.]+ \w?i?B of 64\.0 MiB \| [\d.]+ \w?i?B\/s \| ETA /, 'the bar names percent, bytes done of total, rate and ETA');
  assert.match(out, /100% \| 64\.0 MiB of 64\.0 MiB/, 'the bar ends full');
  assert.match(out, /converted .* \(vhdx, 64\.0 MiB/);

  const piped = await tidemark('disk', 'convert', src, join(dir, 'pipe.vhdx'), '--format', 'vhdx');
  assert.equal(piped.status, 0, piped.stderr);
  assert.doesNotMatch(piped.stderr + piped.stdout, /ETA|%/, 'no bar when output is not a terminal');
});
