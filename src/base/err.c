/*
 * Static error descriptions: strerror() returns a buffer that other threads may overwrite,
 * and strerror_r() differs between GNU and POSIX. A table is the simplest thread-safe answer.
 */
#include "base/err.h"

#include <stddef.h>

#include "base/assert.h"

struct err_entry {
    int code;
    const char *name;
    const char *text;
};

static const struct err_entry err_table[] = {
    { 0, "OK", "success" },
    { EPERM, "EPERM", "operation not permitted" },
    { ENOENT, "ENOENT", "not found" },
    { EINTR, "EINTR", "interrupted" },
    { EIO, "EIO", "input/output error" },
    { EBADF, "EBADF", "bad file descriptor" },
    { EBADFD, "EBADFD", "file descriptor in bad state" },
    { EAGAIN, "EAGAIN", "queue full, try again" },
    { ENOMEM, "ENOMEM", "out of memory" },
    { EACCES, "EACCES", "permission denied" },
    { EFAULT, "EFAULT", "bad address" },
    { EBUSY, "EBUSY", "busy" },
    { EEXIST, "EEXIST", "already exists" },
    { ENOTDIR, "ENOTDIR", "not a directory" },
    { EISDIR, "EISDIR", "is a directory" },
    { EINVAL, "EINVAL", "invalid argument" },
    { ENFILE, "ENFILE", "too many open files in system" },
    { EMFILE, "EMFILE", "too many open files" },
    { EFBIG, "EFBIG", "file too large" },
    { ENOSPC, "ENOSPC", "no space left" },
    { EROFS, "EROFS", "read-only" },
    { EPIPE, "EPIPE", "broken pipe" },
    { ERANGE, "ERANGE", "out of range" },
    { ENOSYS, "ENOSYS", "function not implemented" },
    { EBADMSG, "EBADMSG", "corrupt data" },
    { EPROTO, "EPROTO", "protocol error" },
    { EILSEQ, "EILSEQ", "digest mismatch" },
    { EOVERFLOW, "EOVERFLOW", "value too large" },
    { EMSGSIZE, "EMSGSIZE", "message too long" },
    { EADDRINUSE, "EADDRINUSE", "address already in use" },
    { EADDRNOTAVAIL, "EADDRNOTAVAIL", "address not available" },
    { ENETDOWN, "ENETDOWN", "network is down" },
    { ENETUNREACH, "ENETUNREACH", "network unreachable" },
    { ECONNABORTED, "ECONNABORTED", "connection aborted" },
    { ECONNRESET, "ECONNRESET", "connection reset by peer" },
    { ENOBUFS, "ENOBUFS", "no buffer space available" },
    { ENOTCONN, "ENOTCONN", "not connected" },
    { ETIMEDOUT, "ETIMEDOUT", "timed out" },
    { ECONNREFUSED, "ECONNREFUSED", "connection refused" },
    { EHOSTUNREACH, "EHOSTUNREACH", "host unreachable" },
    { EALREADY, "EALREADY", "operation already in progress" },
    { ECANCELED, "ECANCELED", "cancelled" },
    { ETIME, "ETIME", "timer expired" },
    { ENOTSUP, "ENOTSUP", "not supported" },
    { ESHUTDOWN, "ESHUTDOWN", "shutting down" },
    { EDQUOT, "EDQUOT", "disk quota exceeded" },
    { EOWNERDEAD, "EOWNERDEAD", "its owner has gone" }, /* io_uring: a ring whose task exits */
};

static const struct err_entry *err_find(int err)
{
    int code = err < 0 ? -err : err;
    for (size_t i = 0; i < ARRAY_LEN(err_table); i++) {
        if (err_table[i].code == code) return &err_table[i];
    }
    return NULL;
}

const char *base_err_str(int err)
{
    const struct err_entry *e = err_find(err);
    return e ? e->text : "unknown error";
}

const char *base_err_name(int err)
{
    const struct err_entry *e = err_find(err);
    return e ? e->name : "E?";
}
