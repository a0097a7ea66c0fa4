/*
 * Shared plumbing for the tidemark_native addon (Node-API only).
 *
 * How this works: every exported function parses its arguments on the JS thread, fills a Job and
 * queues it with napi_async_work. Job.run executes the system call on a libuv thread-pool thread
 * (no N-API calls there), recording a result or an errno. Completion, back on the JS thread,
 * resolves the Promise with the result (converted per Job.kind) or rejects it with an Error that
 * carries `code` ('ENOTSUP', 'EAGAIN', ...), `errno` (negative, as Node does) and `syscall`.
 */
#ifndef TIDEMARK_NATIVE_H
#define TIDEMARK_NATIVE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum { RESULT_UNDEFINED, RESULT_NUMBER, RESULT_BOOLEAN } ResultKind;

typedef struct Job Job;

struct Job {
  napi_async_work work;
  napi_deferred deferred;
  /* Runs on a thread-pool thread: performs the syscall, sets result or error. */
  void (*run)(Job* job);
  ResultKind kind;
  int fd[2];
  int64_t arg[3];
  int flag;
  int64_t result;
  int error;           /* errno; 0 on success */
  const char* syscall; /* reported in the rejection */
};

/* Allocate a zeroed job. Returns NULL (with a pending JS exception) on allocation failure. */
Job* tm_job_new(napi_env env, void (*run)(Job*), ResultKind kind, const char* syscall);
/* Queue the job and return its Promise; frees the job on failure (with a pending exception). */
napi_value tm_job_start(napi_env env, Job* job);
/* Fetch exactly `count` arguments; throws TypeError (returns false) when fewer are given. */
bool tm_args(napi_env env, napi_callback_info info, size_t count, napi_value* argv);
/* A non-negative int32 file descriptor, or TypeError. */
bool tm_arg_fd(napi_env env, napi_value value, const char* name, int* out);
/* A number as int64 (callers validate ranges in TypeScript), or TypeError. */
bool tm_arg_int64(napi_env env, napi_value value, const char* name, int64_t* out);
bool tm_arg_bool(napi_env env, napi_value value, const char* name, bool* out);
/* Copy a short string argument into buf (NUL-terminated), or TypeError. */
bool tm_arg_string(napi_env env, napi_value value, const char* name, char* buf, size_t size);
/* The symbolic errno name ("ENOTSUP", "EAGAIN", ...), or "UNKNOWN". */
const char* tm_errno_name(int err);

/* The exported functions, one file per concept. */
napi_value tm_seek_data(napi_env env, napi_callback_info info);
napi_value tm_seek_hole(napi_env env, napi_callback_info info);
napi_value tm_punch_hole(napi_env env, napi_callback_info info);
napi_value tm_zero_range(napi_env env, napi_callback_info info);
napi_value tm_allocate(napi_env env, napi_callback_info info);
napi_value tm_ficlone(napi_env env, napi_callback_info info);
napi_value tm_ficlone_range(napi_env env, napi_callback_info info);
napi_value tm_flock(napi_env env, napi_callback_info info);
napi_value tm_align_gap(napi_env env, napi_callback_info info);

#endif
