/* alignGap(view, align): bytes from the start of a typed array / Buffer to the next address that is a
 * multiple of `align` (a power of two). Synchronous: it only reads a pointer. O_DIRECT needs aligned
 * memory, and JavaScript cannot see addresses. */
#include "native.h"

napi_value tm_align_gap(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  bool is_typed = false;
  if (argc < 2 || napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed) {
    napi_throw_type_error(env, NULL, "alignGap(view, align): view must be a typed array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok) return NULL;
  int64_t align = 0;
  if (napi_get_value_int64(env, argv[1], &align) != napi_ok || align <= 0 || (align & (align - 1)) != 0 || align > (1 << 20)) {
    napi_throw_range_error(env, NULL, "alignGap(view, align): align must be a power of two up to 1 MiB");
    return NULL;
  }
  uintptr_t addr = (uintptr_t)data;
  uintptr_t gap = (uintptr_t)((align - (int64_t)(addr & (uintptr_t)(align - 1))) & (align - 1));
  napi_value out;
  if (napi_create_int64(env, (int64_t)gap, &out) != napi_ok) return NULL;
  return out;
}
