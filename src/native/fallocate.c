/* punchHole / zeroRange / allocate: fallocate(2) modes on a byte range. */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>

static void run_fallocate(Job* job) {
  int rc;
  do {
    rc = fallocate(job->fd[0], job->flag, (off_t)job->arg[0], (off_t)job->arg[1]);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) job->error = errno;
}

static napi_value range_op(napi_env env, napi_callback_info info, int mode, const char* syscall) {
  napi_value argv[3];
  int fd;
  int64_t offset, length;
  if (!tm_args(env, info, 3, argv) || !tm_arg_fd(env, argv[0], "fd", &fd) ||
      !tm_arg_int64(env, argv[1], "offset", &offset) || !tm_arg_int64(env, argv[2], "length", &length)) return NULL;
  Job* job = tm_job_new(env, run_fallocate, RESULT_UNDEFINED, syscall);
  if (job == NULL) return NULL;
  job->fd[0] = fd;
  job->arg[0] = offset;
  job->arg[1] = length;
  job->flag = mode;
  return tm_job_start(env, job);
}

/* punchHole(fd, offset, length): deallocate; the range reads as zeros; file size unchanged. */
napi_value tm_punch_hole(napi_env env, napi_callback_info info) {
  return range_op(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "fallocate(PUNCH_HOLE)");
}

/* zeroRange(fd, offset, length): the range reads as zeros and stays allocated; file size unchanged. */
napi_value tm_zero_range(napi_env env, napi_callback_info info) {
  return range_op(env, info, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "fallocate(ZERO_RANGE)");
}

/* allocate(fd, offset, length): reserve storage (mode 0); extends the file when past EOF. */
napi_value tm_allocate(napi_env env, napi_callback_info info) {
  return range_op(env, info, 0, "fallocate");
}
