/*
 * How engine errors become HTTP statuses on the cache routes (docs/http.md lists them).
 */
#include <errno.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/h1_cache.h"

Test(rpc_h1_cache, read_errors)
{
    cr_assert(eq(int, rpc_h1_cache_status(-ENOENT, false), 404));
    cr_assert(eq(int, rpc_h1_cache_status(-EBADMSG, false), 404)); /* corrupt: reported missing */
    cr_assert(eq(int, rpc_h1_cache_status(-EAGAIN, false), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ECANCELED, false), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ERANGE, false), 416));
    cr_assert(eq(int, rpc_h1_cache_status(-EINVAL, false), 400));
    cr_assert(eq(int, rpc_h1_cache_status(-EIO, false), 404)); /* unreadable: dropped */
    cr_assert(eq(int, rpc_h1_cache_status(-EPERM, false), 500));
}

Test(rpc_h1_cache, upload_errors)
{
    cr_assert(eq(int, rpc_h1_cache_status(-EILSEQ, true), 400));   /* digest mismatch */
    cr_assert(eq(int, rpc_h1_cache_status(-EMSGSIZE, true), 400)); /* size mismatch */
    cr_assert(eq(int, rpc_h1_cache_status(-EBADMSG, true), 400));  /* malformed zstd */
    cr_assert(eq(int, rpc_h1_cache_status(-EINVAL, true), 400));
    cr_assert(eq(int, rpc_h1_cache_status(-EAGAIN, true), 503)); /* admission full */
    cr_assert(eq(int, rpc_h1_cache_status(-ECANCELED, true), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ENOMEM, true), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ENOSPC, true), 507)); /* the store is full */
    cr_assert(eq(int, rpc_h1_cache_status(-EIO, true), 500));
}
