/* flock: whole-file advisory lock (BSD flock semantics: per open file description, gone on close/exit). */
#include "native.h"

#include <errno.h>
#include <string.h>
#include <sys/file.h>

static void run_flock(Job* job) {
  int rc;
  do {
    rc = flock(job->fd[0], job->flag);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) job->result = 1;
  else if (errno == EWOULDBLOCK && (job->flag & LOCK_NB)) job->result = 0; /* held by someone else */
  else job->error = errno;
}

/*
 * flock(fd, mode, wait): mode is "exclusive", "shared" or "unlock". Resolves true when done, false when
 * `wait` is false and another open file description holds a conflicting lock. With `wait` true the call
 * blocks a thread-pool thread until the lock is granted.
 */
napi_value tm_flock(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  char mode[16];
  bool wait;
  if (!tm_args(env, info, 3, argv) || !tm_arg_fd(env, argv[0], "fd", &fd) ||
      !tm_arg_string(env, argv[1], "mode", mode, sizeof mode) || !tm_arg_bool(env, argv[2], "wait", &wait)) return NULL;
  int op;
  if (strcmp(mode, "exclusive") == 0) op = LOCK_EX;
  else if (strcmp(mode, "shared") == 0) op = LOCK_SH;
  else if (strcmp(mode, "unlock") == 0) op = LOCK_UN;
  else {
    napi_throw_type_error(env, NULL, "mode must be 'exclusive', 'shared' or 'unlock'");
    return NULL;
  }
  Job* job = tm_job_new(env, run_flock, RESULT_BOOLEAN, "flock");
  if (job == NULL) return NULL;
  job->fd[0] = fd;
  job->flag = op | (wait ? 0 : LOCK_NB);
  return tm_job_start(env, job);
}
