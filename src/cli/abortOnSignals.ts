/**
 * Ctrl-C / SIGTERM as cancellation for a long command: while active, either signal aborts the returned
 * signal (with `reason()` when given) so the job can stop cleanly; `dispose()` removes the handlers.
 */
export function abortOnSignals(reason?: () => unknown): { signal: AbortSignal; dispose(): void } {
  const abort = new AbortController();
  const onSignal = (): void => (reason ? abort.abort(reason()) : abort.abort());
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: abort.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
