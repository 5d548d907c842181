/* Resource names: the four forms, instances, metadata, and everything malformed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "guard.h"
#include "proto/resource.h"

#define H "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int parse(const char *name, bool write, struct proto_resource *r)
{
    const char *why;
    size_t len = strlen(name);
    int rc = proto_resource_parse((const char *)guard_copy(name, len), len, write, r, &why);
    cr_assert(why != NULL);
    return rc;
}

static bool span_is(const char *p, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(p, want, len) == 0;
}

Test(proto_resource, read_names)
{
    struct proto_resource r;
    cr_assert(eq(int, parse("blobs/" H "/0", false, &r), 0));
    cr_assert(eq(sz, r.instance_len, 0));
    cr_assert(eq(u8, r.compressor, PROTO_COMPRESSOR_IDENTITY));
    cr_assert(eq(u8, r.hash[0], 0xe3));
    cr_assert(eq(u8, r.hash[31], 0x55));
    cr_assert(eq(u64, r.size, 0));
    cr_assert(eq(int, parse("main/blobs/" H "/123", false, &r), 0));
    cr_assert(span_is(r.instance, r.instance_len, "main"));
    cr_assert(eq(u64, r.size, 123));
    cr_assert(
        eq(int, parse("a/b/c/compressed-blobs/zstd/" H "/9223372036854775807", false, &r), 0));
    cr_assert(span_is(r.instance, r.instance_len, "a/b/c"));
    cr_assert(eq(u8, r.compressor, PROTO_COMPRESSOR_ZSTD));
    cr_assert(eq(u64, r.size, 9223372036854775807ULL));
    guard_free_all();
}

Test(proto_resource, write_names)
{
    struct proto_resource r;
    cr_assert(eq(int, parse("uploads/1234-abcd/blobs/" H "/5", true, &r), 0));
    cr_assert(span_is(r.uuid, r.uuid_len, "1234-abcd"));
    cr_assert(eq(sz, r.instance_len, 0));
    cr_assert(eq(int, parse("x/y/uploads/u/compressed-blobs/zstd/" H "/5/meta/data", true, &r), 0));
    cr_assert(span_is(r.instance, r.instance_len, "x/y"));
    cr_assert(span_is(r.uuid, r.uuid_len, "u"));
    cr_assert(eq(u8, r.compressor, PROTO_COMPRESSOR_ZSTD));
    /* A read name is not a write name and the other way round. */
    cr_assert(eq(int, parse("blobs/" H "/5", true, &r), -EINVAL));
    cr_assert(eq(int, parse("uploads/u/blobs/" H "/5", false, &r), -EINVAL));
    guard_free_all();
}

Test(proto_resource, unsupported_is_not_malformed)
{
    struct proto_resource r;
    cr_assert(eq(int, parse("blobs/sha256/" H "/5", false, &r), -ENOTSUP));
    cr_assert(eq(int, parse("blobs/blake3/" H "/5", false, &r), -ENOTSUP));
    cr_assert(eq(int, parse("compressed-blobs/deflate/" H "/5", false, &r), -ENOTSUP));
    cr_assert(
        eq(int, parse("blobs/da39a3ee5e6b4b0d3255bfef95601890afd80709/5", false, &r), -ENOTSUP));
    guard_free_all();
}

Test(proto_resource, malformed_names)
{
    struct proto_resource r;
    const char *bad[] = {
        "",
        "/blobs/" H "/5",
        "blobs/" H "/5/",
        "blobs//" H "/5",
        "blobs/" H,
        "blobs/" H "/-1",
        "blobs/" H "/+1",
        "blobs/" H "/5x",
        "blobs/" H "/99999999999999999999",
        "blobs/" H "/9223372036854775808",
        "blobs/zz" H "/5",
        "blobs/" H "/5/extra",
        "blobs",
        "instance/only",
        "compressed-blobs/" H "/5",
        "compressed-blobs/identity/" H "/5",
        "compressed-blobs/zstd/" H,
        "uploads/blobs/" H "/5",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(eq(int, parse(bad[i], i == 17, &r), -EINVAL), "%s", bad[i]);
    cr_assert(eq(int, parse("uploads/u", true, &r), -EINVAL));
    cr_assert(eq(int, parse("uploads/u/blobs/" H, true, &r), -EINVAL));
    guard_free_all();
}

Test(proto_resource, too_many_segments)
{
    char name[512];
    size_t n = 0;
    for (int i = 0; i < 70; i++) {
        memcpy(name + n, "a/", 2);
        n += 2;
    }
    snprintf(name + n, sizeof(name) - n, "blobs/" H "/1");
    struct proto_resource r;
    cr_assert(eq(int, parse(name, false, &r), -EINVAL));
    guard_free_all();
}

Test(proto_resource, digest)
{
    uint8_t hash[32];
    cr_assert(eq(int, proto_resource_digest(H, 64, 0, hash), 0));
    cr_assert(eq(int, proto_resource_digest(H, 64, -1, hash), -EINVAL));
    cr_assert(eq(int, proto_resource_digest(H, 63, 1, hash), -EINVAL));
    cr_assert(eq(int, proto_resource_digest(H, 40, 1, hash), -ENOTSUP));
    cr_assert(eq(int, proto_resource_digest("", 0, 1, hash), -EINVAL));
    cr_assert(eq(int, proto_resource_digest("g" H, 64, 1, hash), -EINVAL));
}
