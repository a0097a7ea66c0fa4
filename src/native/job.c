/* Async-work plumbing and argument parsing shared by every exported function (see native.h). */
#include "native.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Job* tm_job_new(napi_env env, void (*run)(Job*), ResultKind kind, const char* syscall) {
  Job* job = calloc(1, sizeof(Job));
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "tidemark_native: out of memory");
    return NULL;
  }
  job->run = run;
  job->kind = kind;
  job->syscall = syscall;
  return job;
}

static void execute(napi_env env, void* data) {
  (void)env;
  Job* job = data;
  job->run(job);
}

static napi_value make_error(napi_env env, const Job* job) {
  const char* code = tm_errno_name(job->error);
  char message[256];
  snprintf(message, sizeof message, "%s: %s, %s", code, strerror(job->error), job->syscall);
  napi_value msg, err, value;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &err);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, err, "code", value);
  napi_create_int32(env, -job->error, &value);
  napi_set_named_property(env, err, "errno", value);
  napi_create_string_utf8(env, job->syscall, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, err, "syscall", value);
  return err;
}

static void complete(napi_env env, napi_status status, void* data) {
  Job* job = data;
  if (status == napi_cancelled) job->error = ECANCELED;
  else if (status != napi_ok && job->error == 0) job->error = EIO;
  if (job->error != 0) {
    napi_reject_deferred(env, job->deferred, make_error(env, job));
  } else {
    napi_value value;
    switch (job->kind) {
      case RESULT_NUMBER: napi_create_int64(env, job->result, &value); break;
      case RESULT_BOOLEAN: napi_get_boolean(env, job->result != 0, &value); break;
      default: napi_get_undefined(env, &value); break;
    }
    napi_resolve_deferred(env, job->deferred, value);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

napi_value tm_job_start(napi_env env, Job* job) {
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, job->syscall, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, &job->work) != napi_ok) {
    free(job);
    napi_throw_error(env, NULL, "tidemark_native: cannot create async work");
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, NULL, "tidemark_native: cannot queue async work");
    return NULL;
  }
  return promise;
}

bool tm_args(napi_env env, napi_callback_info info, size_t count, napi_value* argv) {
  size_t argc = count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < count) {
    char message[96];
    snprintf(message, sizeof message, "expected %zu arguments, got %zu", count, argc);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  return true;
}

static bool expect_type(napi_env env, napi_value value, napi_valuetype want, const char* name, const char* what) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != want) {
    char message[128];
    snprintf(message, sizeof message, "%s must be %s", name, what);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  return true;
}

bool tm_arg_fd(napi_env env, napi_value value, const char* name, int* out) {
  if (!expect_type(env, value, napi_number, name, "a file descriptor")) return false;
  int32_t fd;
  napi_get_value_int32(env, value, &fd);
  if (fd < 0) {
    char message[128];
    snprintf(message, sizeof message, "%s must be a file descriptor", name);
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = fd;
  return true;
}

bool tm_arg_int64(napi_env env, napi_value value, const char* name, int64_t* out) {
  if (!expect_type(env, value, napi_number, name, "a number")) return false;
  return napi_get_value_int64(env, value, out) == napi_ok;
}

bool tm_arg_bool(napi_env env, napi_value value, const char* name, bool* out) {
  if (!expect_type(env, value, napi_boolean, name, "a boolean")) return false;
  return napi_get_value_bool(env, value, out) == napi_ok;
}

bool tm_arg_string(napi_env env, napi_value value, const char* name, char* buf, size_t size) {
  if (!expect_type(env, value, napi_string, name, "a string")) return false;
  size_t len;
  return napi_get_value_string_utf8(env, value, buf, size, &len) == napi_ok;
}
