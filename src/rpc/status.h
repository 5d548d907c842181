/*
 * The one place where ringcas errors (src/base/err.h) become gRPC statuses. Every service
 * maps engine and parser errors through here so a given failure always reads the same.
 */
#ifndef RINGCAS_RPC_STATUS_H
#define RINGCAS_RPC_STATUS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Returns the gRPC status (enum proto_status) for <err> (0 or -errno) and sets *<message> to
 * a static description for grpc-message, never empty but for OK; a refusal a client may
 * retry (RESOURCE_EXHAUSTED, UNAVAILABLE) says what was full and that it may retry:
 *   0          OK
 *   -EINVAL, -EILSEQ (digest mismatch), -EMSGSIZE (size mismatch), -EBADMSG (malformed
 *              upload or message), -EPROTO, -ENOTSUP, -ENAMETOOLONG   INVALID_ARGUMENT
 *   -ENOENT    NOT_FOUND
 *   -ERANGE    OUT_OF_RANGE
 *   -EAGAIN    RESOURCE_EXHAUSTED (a bounded queue is full: retry)
 *   -ENOSPC    RESOURCE_EXHAUSTED (the store's size budget is full)
 *   -EFBIG     INVALID_ARGUMENT (the blob is larger than the store takes, advertised as
 *              max_cas_blob_size_bytes: REAPI names INVALID_ARGUMENT, and a retry never
 *              succeeds; the engine's blob_upload_begin)
 *   -ENOMEM    RESOURCE_EXHAUSTED (memory for the call is taken: retry)
 *   -ETIMEDOUT DEADLINE_EXCEEDED
 *   -ECANCELED UNAVAILABLE (the server is draining: retry elsewhere)
 *   -EEXIST    ALREADY_EXISTS
 *   -ENOSYS    UNIMPLEMENTED
 *   -EIO and anything else   INTERNAL
 * A corrupt stored blob on read (-EBADMSG from the engine's reader) is NOT_FOUND, not
 * DATA_LOSS: the engine never hands out a corrupt byte and drops the blob from the index, so
 * the honest answer is "not here any more, upload it again"; readers use
 * rpc_status_from_read_err for that.
 */
int rpc_status_from_err(int err, const char **message);

/*
 * The message of -EBADMSG from a zstd upload (a batch entry, a compressed-blobs Write): the
 * table's "malformed data" does not say that the bytes at fault are the zstd stream, which is
 * what a client has to look at (HTTP says "malformed zstd body").
 */
#define RPC_STATUS_ZSTD_MALFORMED "malformed zstd stream (corrupt, or its last frame cut short)"

/*
 * As rpc_status_from_err, for errors of reading a stored blob: -EBADMSG is NOT_FOUND, and
 * -EMSGSIZE (the blob is over the bound of a read into one message) INVALID_ARGUMENT "too
 * large for this call", not an upload's "size mismatch".
 */
int rpc_status_from_read_err(int err, const char **message);

/*
 * Writes into <buf> (<buf_size> bytes) why a blob of <size> bytes (UINT64_MAX: of a size not
 * known yet) is refused: "blob of N bytes is larger than this store takes (a quarter of
 * --max-size: M bytes)", where M is <limit> (blob_cas_size_max); when <limit> is not a
 * quarter of <max_size_bytes> the line says what else bounds it.
 */
void rpc_status_too_large(char *buf, size_t buf_size, uint64_t size, uint64_t limit,
                          uint64_t max_size_bytes);

#endif /* RINGCAS_RPC_STATUS_H */
