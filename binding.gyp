{
  "targets": [
    {
      "target_name": "tidemark_native",
      "sources": [
        "src/native/addon.c",
        "src/native/align.c",
        "src/native/clone.c",
        "src/native/errno_name.c",
        "src/native/fallocate.c",
        "src/native/job.c",
        "src/native/lock.c",
        "src/native/seek.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
      "cflags_c": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    }
  ]
}
