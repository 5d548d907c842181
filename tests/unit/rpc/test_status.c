/* The one error-to-status mapping: every errno the engine and parsers use has its status. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "proto/status.h"
#include "rpc/status.h"

static int map(int err)
{
    const char *message = NULL;
    int status = rpc_status_from_err(err, &message);
    cr_assert(ne(ptr, (void *)message, NULL));
    return status;
}

Test(rpc_status, engine_errors)
{
    cr_assert(eq(int, map(0), PROTO_STATUS_OK));
    cr_assert(eq(int, map(-EILSEQ), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(int, map(-EINVAL), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(int, map(-EMSGSIZE), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(int, map(-EBADMSG), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(int, map(-ENOTSUP), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(int, map(-ENOENT), PROTO_STATUS_NOT_FOUND));
    cr_assert(eq(int, map(-ERANGE), PROTO_STATUS_OUT_OF_RANGE));
    cr_assert(eq(int, map(-EAGAIN), PROTO_STATUS_RESOURCE_EXHAUSTED));
    cr_assert(eq(int, map(-ENOSPC), PROTO_STATUS_RESOURCE_EXHAUSTED));
    cr_assert(eq(int, map(-ENOMEM), PROTO_STATUS_RESOURCE_EXHAUSTED));
    cr_assert(eq(int, map(-ETIMEDOUT), PROTO_STATUS_DEADLINE_EXCEEDED));
    cr_assert(eq(int, map(-ECANCELED), PROTO_STATUS_UNAVAILABLE));
    cr_assert(eq(int, map(-EEXIST), PROTO_STATUS_ALREADY_EXISTS));
    cr_assert(eq(int, map(-ENOSYS), PROTO_STATUS_UNIMPLEMENTED));
    cr_assert(eq(int, map(-EIO), PROTO_STATUS_INTERNAL));
    cr_assert(eq(int, map(-EXDEV), PROTO_STATUS_INTERNAL));
}

Test(rpc_status, budget_full_says_so)
{
    const char *message;
    (void)rpc_status_from_err(-ENOSPC, &message);
    cr_assert(ne(ptr, strstr(message, "full"), NULL));
    /* Transient: "the blob does not fit" read as a blob too large for the store (-EFBIG). */
    cr_assert(ne(ptr, strstr(message, "retry later"), NULL), "%s", message);
    cr_assert(eq(ptr, strstr(message, "does not fit"), NULL), "%s", message);
}

/* Not "store full", which an empty store answering it would contradict; and INVALID_ARGUMENT,
 * as REAPI's max_cas_blob_size_bytes names it, not RESOURCE_EXHAUSTED, which Bazel retries. */
Test(rpc_status, a_blob_over_the_limit_names_it)
{
    const char *message;
    cr_assert(eq(int, rpc_status_from_err(-EFBIG, &message), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(ptr, strstr(message, "full"), NULL), "%s", message);
    cr_assert(ne(ptr, strstr(message, "--max-size"), NULL), "%s", message);
    char buf[256];
    rpc_status_too_large(buf, sizeof(buf), 17000000, 16u << 20, 64u << 20);
    cr_assert(eq(str, buf,
                 "blob of 17000000 bytes is larger than this store takes (a quarter of "
                 "--max-size: 16777216 bytes)"));
    rpc_status_too_large(buf, sizeof(buf), UINT64_MAX, 16u << 20, (64u << 20) + 3);
    cr_assert(eq(str, buf,
                 "the blob is larger than this store takes (a quarter of --max-size: 16777216 "
                 "bytes)"));
    /* A budget below --max-size (a small disk): the limit is not a quarter of the flag. */
    rpc_status_too_large(buf, sizeof(buf), 17000000, 8u << 20, 64u << 20);
    cr_assert(ne(ptr,
                 strstr(buf, "blob of 17000000 bytes is larger than this store takes (8388608 "
                             "bytes: "),
                 NULL),
              "%s", buf);
}

Test(rpc_status, corrupt_stored_blob_reads_as_not_found)
{
    const char *message;
    cr_assert(eq(int, rpc_status_from_read_err(-EBADMSG, &message), PROTO_STATUS_NOT_FOUND));
    cr_assert(ne(ptr, strstr(message, "corrupt"), NULL));
    cr_assert(eq(int, rpc_status_from_read_err(-ENOENT, &message), PROTO_STATUS_NOT_FOUND));
    /* The disk failed the read: the engine dropped the blob, as a corrupt one. */
    cr_assert(eq(int, rpc_status_from_read_err(-EIO, &message), PROTO_STATUS_NOT_FOUND));
    cr_assert(ne(ptr, strstr(message, "upload it again"), NULL));
    cr_assert(eq(int, rpc_status_from_err(-EIO, &message), PROTO_STATUS_INTERNAL));
}

Test(rpc_status, a_read_too_large_for_its_call_is_not_a_size_mismatch)
{
    const char *message;
    cr_assert(
        eq(int, rpc_status_from_read_err(-EMSGSIZE, &message), PROTO_STATUS_INVALID_ARGUMENT));
    cr_assert(eq(ptr, strstr(message, "mismatch"), NULL), "%s", message);
    cr_assert(ne(ptr, strstr(message, "too large"), NULL), "%s", message);
    /* An upload's -EMSGSIZE is still the size mismatch it is. */
    (void)rpc_status_from_err(-EMSGSIZE, &message);
    cr_assert(ne(ptr, strstr(message, "mismatch"), NULL), "%s", message);
}

/*
 * Every status but OK carries a message (an empty grpc-message leaves a client with a bare
 * code), and every refusal a client may retry (RESOURCE_EXHAUSTED, UNAVAILABLE) says what was
 * full or going away, and that a retry may succeed.
 */
Test(rpc_status, every_error_has_a_message_and_refusals_say_retry)
{
    /* Bounded: the errno values Linux defines (EHWPOISON is 133), and some past them. */
    for (int e = 1; e <= 200; e++) {
        for (int read = 0; read < 2; read++) {
            const char *message = NULL;
            int status =
                read ? rpc_status_from_read_err(-e, &message) : rpc_status_from_err(-e, &message);
            cr_assert(ne(int, status, PROTO_STATUS_OK), "errno %d", e);
            cr_assert(ne(ptr, (void *)message, NULL), "errno %d", e);
            cr_assert(gt(sz, strlen(message), 0), "errno %d", e);
            /* A full size budget is not a busy server (budget_full_says_so checks it). */
            bool retry =
                status == PROTO_STATUS_RESOURCE_EXHAUSTED || status == PROTO_STATUS_UNAVAILABLE;
            if (retry && e != ENOSPC) {
                cr_assert(ne(ptr, strstr(message, "retry"), NULL), "errno %d: %s", e, message);
            }
        }
    }
}

Test(rpc_status, full_queues_and_memory_name_what_was_full)
{
    const char *message;
    (void)rpc_status_from_err(-EAGAIN, &message);
    cr_assert(ne(ptr, strstr(message, "queue"), NULL), "%s", message);
    (void)rpc_status_from_err(-ENOMEM, &message);
    cr_assert(ne(ptr, strstr(message, "--message-memory"), NULL), "%s", message);
}
