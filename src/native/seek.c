/* seekData / seekHole: lseek(SEEK_DATA / SEEK_HOLE) to walk a sparse file's allocation. */
#include "native.h"

#include <errno.h>
#include <unistd.h>

static void run_seek(Job* job) {
  off_t pos = lseek(job->fd[0], (off_t)job->arg[0], job->flag);
  if (pos >= 0) {
    job->result = (int64_t)pos;
  } else if (errno == ENXIO && job->flag == SEEK_DATA) {
    job->result = -1; /* no data at or after offset */
  } else {
    job->error = errno;
  }
}

static napi_value seek(napi_env env, napi_callback_info info, int whence, const char* syscall) {
  napi_value argv[2];
  int fd;
  int64_t offset;
  if (!tm_args(env, info, 2, argv) || !tm_arg_fd(env, argv[0], "fd", &fd) || !tm_arg_int64(env, argv[1], "offset", &offset)) return NULL;
  Job* job = tm_job_new(env, run_seek, RESULT_NUMBER, syscall);
  if (job == NULL) return NULL;
  job->fd[0] = fd;
  job->arg[0] = offset;
  job->flag = whence;
  return tm_job_start(env, job);
}

/* seekData(fd, offset): the first data offset >= offset, or -1 when only a hole follows (ENXIO). */
napi_value tm_seek_data(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_DATA, "lseek(SEEK_DATA)");
}

/* seekHole(fd, offset): the first hole offset >= offset (EOF counts as a hole); ENXIO past EOF. */
napi_value tm_seek_hole(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_HOLE, "lseek(SEEK_HOLE)");
}
