/* errno -> symbolic name, spelled as libuv/Node spell them (so `code` matches Node's fs errors). */
#include "native.h"

#include <errno.h>

const char* tm_errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN"; /* == EWOULDBLOCK on Linux */
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENOTTY: return "ENOTTY";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case EDEADLK: return "EDEADLK";
    case ENOLCK: return "ENOLCK";
    case ENOSYS: return "ENOSYS";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "ENOTSUP"; /* == ENOTSUP on Linux; libuv names it ENOTSUP */
    case EDQUOT: return "EDQUOT";
    case ECANCELED: return "ECANCELED";
    case EPIPE: return "EPIPE";
    default: return "UNKNOWN";
  }
}
