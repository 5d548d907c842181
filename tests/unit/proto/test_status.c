/* Status names and grpc-message percent-encoding. */
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "proto/status.h"

Test(proto_status, names)
{
    cr_assert(eq(str, (char *)proto_status_name(0), "OK"));
    cr_assert(eq(str, (char *)proto_status_name(5), "NOT_FOUND"));
    cr_assert(eq(str, (char *)proto_status_name(16), "UNAUTHENTICATED"));
    cr_assert(eq(str, (char *)proto_status_name(17), "UNKNOWN"));
    cr_assert(eq(str, (char *)proto_status_name(-1), "UNKNOWN"));
}

Test(proto_status, percent_encoding)
{
    char out[64];
    const char in[] = "50% d\xc3\xa9j\xc3\xa0\n";
    size_t n = proto_status_encode_message(in, strlen(in), out, sizeof(out));
    cr_assert(eq(str, out, "50%25 d%C3%A9j%C3%A0%0A"));
    cr_assert(eq(sz, n, strlen(out)));
    /* Never cut an escape in half. */
    n = proto_status_encode_message("ab%", 3, out, 5);
    cr_assert(eq(str, out, "ab"));
    n = proto_status_encode_message("abcdef", 6, out, 4);
    cr_assert(eq(str, out, "abc"));
}
