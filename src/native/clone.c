/* ficlone / ficloneRange: share extents between files (reflink) with ioctl FICLONE / FICLONERANGE. */
#include "native.h"

#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

static void run_ficlone(Job* job) {
  if (ioctl(job->fd[0], FICLONE, job->fd[1]) != 0) job->error = errno;
}

static void run_ficlone_range(Job* job) {
  struct file_clone_range range = {
    .src_fd = job->fd[1],
    .src_offset = (uint64_t)job->arg[0],
    .src_length = (uint64_t)job->arg[1],
    .dest_offset = (uint64_t)job->arg[2],
  };
  if (ioctl(job->fd[0], FICLONERANGE, &range) != 0) job->error = errno;
}

/* ficlone(destFd, srcFd): make dest share all of src's extents. */
napi_value tm_ficlone(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int dest, src;
  if (!tm_args(env, info, 2, argv) || !tm_arg_fd(env, argv[0], "destFd", &dest) || !tm_arg_fd(env, argv[1], "srcFd", &src)) return NULL;
  Job* job = tm_job_new(env, run_ficlone, RESULT_UNDEFINED, "ioctl(FICLONE)");
  if (job == NULL) return NULL;
  job->fd[0] = dest;
  job->fd[1] = src;
  return tm_job_start(env, job);
}

/* ficloneRange(destFd, srcFd, srcOffset, length, destOffset): share one block-aligned range. */
napi_value tm_ficlone_range(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int dest, src;
  int64_t src_offset, length, dest_offset;
  if (!tm_args(env, info, 5, argv) || !tm_arg_fd(env, argv[0], "destFd", &dest) || !tm_arg_fd(env, argv[1], "srcFd", &src) ||
      !tm_arg_int64(env, argv[2], "srcOffset", &src_offset) || !tm_arg_int64(env, argv[3], "length", &length) ||
      !tm_arg_int64(env, argv[4], "destOffset", &dest_offset)) return NULL;
  Job* job = tm_job_new(env, run_ficlone_range, RESULT_UNDEFINED, "ioctl(FICLONERANGE)");
  if (job == NULL) return NULL;
  job->fd[0] = dest;
  job->fd[1] = src;
  job->arg[0] = src_offset;
  job->arg[1] = length;
  job->arg[2] = dest_offset;
  return tm_job_start(env, job);
}
