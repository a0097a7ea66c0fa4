/* tidemark_native: Linux file primitives Node lacks, each returning a Promise (see native.h, native.ts). */
#include "native.h"

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
    {"seekData", NULL, tm_seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seekHole", NULL, tm_seek_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"punchHole", NULL, tm_punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zeroRange", NULL, tm_zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"allocate", NULL, tm_allocate, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ficlone", NULL, tm_ficlone, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ficloneRange", NULL, tm_ficlone_range, NULL, NULL, NULL, napi_enumerable, NULL},
    {"flock", NULL, tm_flock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"alignGap", NULL, tm_align_gap, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
