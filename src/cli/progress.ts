import cliProgress from 'cli-progress';
import { formatSize } from '../util/size.js';

export interface Progress {
  /** Set absolute bytes done. */
  update(done: number): void;
  stop(): void;
}

/**
 * A progress bar with throughput and ETA, shown only when stderr is a TTY (and not in --json mode).
 * Elsewhere it is a no-op, so commands call it unconditionally.
 */
export function progress(label: string, total: number, enabled = process.stderr.isTTY === true): Progress {
  if (!enabled || total <= 0) return { update() {}, stop() {} };
  const started = Date.now();
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} of {all} | {rate}/s | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { done: formatSize(0), all: formatSize(total), rate: formatSize(0) });
  return {
    update(done: number) {
      const secs = Math.max((Date.now() - started) / 1000, 0.001);
      bar.update(done, { done: formatSize(done), rate: formatSize(done / secs) });
    },
    stop() {
      bar.stop();
    },
  };
}
