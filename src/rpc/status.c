/* Error to gRPC status mapping: one table, one place (see status.h for the rationale). */
#include "rpc/status.h"

#include <errno.h>
#include <stdio.h>

#include "base/assert.h"
#include "proto/status.h"

struct mapping {
    int err;             /* negative errno */
    int status;          /* enum proto_status */
    const char *message; /* for grpc-message */
};

static const struct mapping table[] = {
    { -EINVAL, PROTO_STATUS_INVALID_ARGUMENT, "invalid argument" },
    { -EILSEQ, PROTO_STATUS_INVALID_ARGUMENT,
      "digest mismatch: the data does not hash to its name" },
    { -EMSGSIZE, PROTO_STATUS_INVALID_ARGUMENT, "size mismatch: the data is not the named size" },
    { -EBADMSG, PROTO_STATUS_INVALID_ARGUMENT, "malformed data" },
    { -EPROTO, PROTO_STATUS_INVALID_ARGUMENT, "protocol error" },
    { -ENOTSUP, PROTO_STATUS_INVALID_ARGUMENT, "not supported" },
    { -ENAMETOOLONG, PROTO_STATUS_INVALID_ARGUMENT, "name too long" },
    { -ENOENT, PROTO_STATUS_NOT_FOUND, "not found" },
    { -ERANGE, PROTO_STATUS_OUT_OF_RANGE, "offset out of range" },
    { -EAGAIN, PROTO_STATUS_RESOURCE_EXHAUSTED,
      "server busy: a per-core queue is full (disk reads, read buffers, readers or uploads), "
      "retry later" },
    /* Transient, as -EAGAIN is: "the blob does not fit" read as a blob too large, which is
     * -EFBIG's answer (docs/storage.md "Uploads in flight share the budget"). */
    { -ENOSPC, PROTO_STATUS_RESOURCE_EXHAUSTED,
      "store full: no room in the size budget now (eviction catching up, the disk full, or "
      "uploads in flight near --max-size), retry later" },
    /* Where the sizes are at hand the answer names them (rpc_status_too_large). Not
     * RESOURCE_EXHAUSTED: REAPI's max_cas_blob_size_bytes says a server SHOULD refuse an
     * upload over it with INVALID_ARGUMENT, and Bazel retries RESOURCE_EXHAUSTED, which can
     * never succeed here (the store takes no larger blob when empty either). */
    { -EFBIG, PROTO_STATUS_INVALID_ARGUMENT,
      "blob larger than this store takes (a quarter of --max-size or of the volume)" },
    { -ENOMEM, PROTO_STATUS_RESOURCE_EXHAUSTED,
      "server busy: out of memory for this call (--message-memory or --zstd-memory is taken), "
      "retry later" },
    { -ETIMEDOUT, PROTO_STATUS_DEADLINE_EXCEEDED, "timed out" },
    { -ECANCELED, PROTO_STATUS_UNAVAILABLE, "server is shutting down: retry" },
    { -EEXIST, PROTO_STATUS_ALREADY_EXISTS, "already exists" },
    { -ENOSYS, PROTO_STATUS_UNIMPLEMENTED, "not implemented by this server" },
    { -EIO, PROTO_STATUS_INTERNAL, "disk error" },
    /* UNAVAILABLE, as a draining server: the node is out of service (/readyz says so), and a
     * client or a balancer tries another. */
    { -EROFS, PROTO_STATUS_UNAVAILABLE,
      "the data folder's file system is read-only: nothing can be stored until it is writable "
      "again, retry on another server (reads go on)" },
};

int rpc_status_from_err(int err, const char **message)
{
    if (err == 0) {
        *message = "";
        return PROTO_STATUS_OK;
    }
    for (size_t i = 0; i < ARRAY_LEN(table); i++) {
        if (table[i].err == err) {
            *message = table[i].message;
            return table[i].status;
        }
    }
    *message = "internal error";
    return PROTO_STATUS_INTERNAL;
}

int rpc_status_from_read_err(int err, const char **message)
{
    if (err == -EBADMSG) {
        *message = "stored data was corrupt: the blob was dropped, upload it again";
        return PROTO_STATUS_NOT_FOUND;
    }
    if (err == -EIO) {
        /* The engine dropped it (blob_store_drop_corrupt): a retry finds it missing, and the
         * client's upload stores it again. */
        *message = "stored data could not be read (a disk error): the blob was dropped, upload "
                   "it again";
        return PROTO_STATUS_NOT_FOUND;
    }
    if (err == -EMSGSIZE) {
        /* A read bounded by its call's message (a batch, an action result, a directory) met a
         * larger blob: not an upload's size mismatch, and a retry would meet it again. REAPI
         * answers a batch over its limit INVALID_ARGUMENT. */
        *message = "too large for this call: over its 4 MiB message limit (ByteStream reads it)";
        return PROTO_STATUS_INVALID_ARGUMENT;
    }
    return rpc_status_from_err(err, message);
}

void rpc_status_too_large(char *buf, size_t buf_size, uint64_t size, uint64_t limit,
                          uint64_t max_size_bytes)
{
    char what[64] = "the blob";
    if (size != UINT64_MAX) {
        (void)snprintf(what, sizeof(what), "blob of %llu bytes", (unsigned long long)size);
    }
    if (limit == max_size_bytes / 4) {
        (void)snprintf(buf, buf_size,
                       "%s is larger than this store takes (a quarter of --max-size: %llu bytes)",
                       what, (unsigned long long)limit);
        return;
    }
    /* Less than a quarter of --max-size: the volume is smaller than --max-size (the limit
     * follows its size, not its free space), or a chunk table for more would not fit in the
     * engine's write buffer. */
    (void)snprintf(buf, buf_size,
                   "%s is larger than this store takes (%llu bytes: a quarter of --max-size or of "
                   "the volume, whichever is smaller, less when the chunk table would not fit)",
                   what, (unsigned long long)limit);
}
