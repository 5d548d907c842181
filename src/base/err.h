/*
 * Error conventions. Functions return 0 (or a count >= 0) on success and -errno on failure,
 * as cqe->res already does. Each errno below has one meaning in ringcas, and rpc/ maps them
 * to gRPC and HTTP statuses in one place:
 *
 *   -EBADMSG    stored or received bytes are corrupt (checksum, framing)
 *   -EPROTO     the peer broke the protocol
 *   -EILSEQ     an upload's digest does not match its name
 *   -ECANCELED  the owner cancelled the work
 *   -ETIMEDOUT  a deadline or an I/O timeout passed
 *   -EAGAIN     a bounded queue or pool is full: answer at once, retry later
 *   -ENOSPC     the store's size budget (or the disk) cannot fit the write
 *   -ENOENT     no such blob
 *   -EMSGSIZE   a message or body exceeds its limit
 *   -EINVAL     a request's argument is malformed
 */
#ifndef RINGCAS_BASE_ERR_H
#define RINGCAS_BASE_ERR_H

#include <errno.h>

/*
 * Returns a static, thread-safe description of <err> (positive or negative errno), for logs
 * and messages; unknown values give "unknown error". Replaces strerror(), which is not
 * thread-safe.
 */
const char *base_err_str(int err);

/* Returns the symbolic name of <err> ("ENOENT"), or "E?" when unknown. */
const char *base_err_name(int err);

#endif /* RINGCAS_BASE_ERR_H */
