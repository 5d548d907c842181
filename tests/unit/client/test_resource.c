/*
 * Resource names, instance names, upload ids and digests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/digest.h"
#include "client/resource.h"
#include "proto/resource.h"

static const char *EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

Test(client_resource, read_and_write_names_are_standard_reapi)
{
    struct client_digest d;
    client_digest_buf("", 0, &d);
    char name[600];
    char want[600];
    cr_assert(eq(int, client_resource_read(name, sizeof(name), "", &d, false), 66 + 6));
    snprintf(want, sizeof(want), "blobs/%s/0", EMPTY);
    cr_assert(eq(str, name, want));
    cr_assert(gt(int, client_resource_read(name, sizeof(name), "a/b", &d, true), 0));
    snprintf(want, sizeof(want), "a/b/compressed-blobs/zstd/%s/0", EMPTY);
    cr_assert(eq(str, name, want));
    cr_assert(gt(int, client_resource_write(name, sizeof(name), "inst", "u-1", &d, false), 0));
    snprintf(want, sizeof(want), "inst/uploads/u-1/blobs/%s/0", EMPTY);
    cr_assert(eq(str, name, want));
    cr_assert(gt(int, client_resource_write(name, sizeof(name), "", "u-2", &d, true), 0));
    snprintf(want, sizeof(want), "uploads/u-2/compressed-blobs/zstd/%s/0", EMPTY);
    cr_assert(eq(str, name, want));
    cr_assert(eq(int, client_resource_read(name, 20, "", &d, false), -ENAMETOOLONG));
}

Test(client_resource, names_parse_back_with_the_servers_parser)
{
    struct client_digest d;
    client_digest_buf("hello", 5, &d);
    char name[600];
    char uuid[CLIENT_UUID_SIZE];
    client_resource_uuid(uuid);
    for (int z = 0; z < 2; z++) {
        int n = client_resource_write(name, sizeof(name), "x/y", uuid, &d, z);
        struct proto_resource r;
        const char *why;
        cr_assert(eq(int, proto_resource_parse(name, (size_t)n, true, &r, &why), 0), "%s", name);
        cr_assert(eq(u64, r.size, 5));
        cr_assert(eq(int, memcmp(r.hash, d.hash, 32), 0));
        cr_assert(eq(int, r.compressor, z));
        cr_assert(eq(sz, r.instance_len, 3));
        n = client_resource_read(name, sizeof(name), "", &d, z);
        cr_assert(eq(int, proto_resource_parse(name, (size_t)n, false, &r, &why), 0), "%s", name);
    }
}

Test(client_resource, instance_names_are_checked)
{
    const char *why;
    cr_assert(eq(int, client_resource_check_instance("", &why), 0));
    cr_assert(eq(int, client_resource_check_instance("main", &why), 0));
    cr_assert(eq(int, client_resource_check_instance("a/b/c", &why), 0));
    const char *bad[] = { "/a",       "a/", "a//b", "blobs", "a/uploads/b", "compressed-blobs",
                          "x/actions" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(eq(int, client_resource_check_instance(bad[i], &why), -EINVAL), "%s", bad[i]);
    char *longname = malloc(600);
    memset(longname, 'a', 599);
    longname[599] = '\0';
    cr_assert(eq(int, client_resource_check_instance(longname, &why), -EINVAL));
    free(longname);
}

Test(client_resource, uuids_are_version_4_and_differ)
{
    char a[CLIENT_UUID_SIZE];
    char b[CLIENT_UUID_SIZE];
    client_resource_uuid(a);
    client_resource_uuid(b);
    cr_assert(eq(sz, strlen(a), 36));
    cr_assert(eq(chr, a[14], '4'));
    cr_assert(eq(chr, a[8], '-'));
    cr_assert(strchr("89ab", a[19]) != NULL);
    cr_assert(ne(str, a, b));
}

Test(client_digest, parses_and_formats_hash_size)
{
    struct client_digest d;
    const char *why;
    char text[CLIENT_DIGEST_TEXT_MAX];
    snprintf(text, sizeof(text), "%s/0", EMPTY);
    cr_assert(eq(int, client_digest_parse(text, &d, &why), 0));
    struct client_digest e;
    client_digest_buf("", 0, &e);
    cr_assert(client_digest_equal(&d, &e));
    char out[CLIENT_DIGEST_TEXT_MAX];
    client_digest_format(&d, out);
    cr_assert(eq(str, out, text));
    /* Upper case is accepted and printed lower case. */
    char upper[CLIENT_DIGEST_TEXT_MAX];
    snprintf(upper, sizeof(upper),
             "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855/0");
    cr_assert(eq(int, client_digest_parse(upper, &d, &why), 0));
    client_digest_format(&d, out);
    cr_assert(eq(str, out, text));
}

Test(client_digest, rejects_malformed_text)
{
    struct client_digest d;
    const char *why;
    const char *bad[] = {
        "",
        "abc",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/-1",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/1x",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/0",
        "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/99999999999999999999",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/9223372036854775808",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        cr_assert(eq(int, client_digest_parse(bad[i], &d, &why), -EINVAL), "%s", bad[i]);
        cr_assert(why != NULL);
    }
}

Test(client_digest, hashes_files_like_buffers)
{
    char path[] = "/tmp/ringcas-digest-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    struct client_digest a;
    struct client_digest b;
    cr_assert(eq(int, client_digest_fd(fd, &a), 0));
    client_digest_buf("", 0, &b);
    cr_assert(client_digest_equal(&a, &b));
    cr_assert(eq(int, (int)write(fd, "hello world", 11), 11));
    cr_assert(eq(int, client_digest_fd(fd, &a), 0));
    client_digest_buf("hello world", 11, &b);
    cr_assert(client_digest_equal(&a, &b));
    close(fd);
    unlink(path);
    int dfd = open("/tmp", O_RDONLY | O_DIRECTORY);
    cr_assert(eq(int, client_digest_fd(dfd, &a), -EISDIR));
    close(dfd);
    int pfd[2];
    cr_assert(eq(int, pipe(pfd), 0));
    cr_assert(eq(int, client_digest_fd(pfd[0], &a), -EINVAL));
    close(pfd[0]);
    close(pfd[1]);
}

Test(client_digest, streaming_hash_restarts_after_final)
{
    struct client_sha256 h;
    cr_assert(eq(int, client_sha256_init(&h), 0));
    uint8_t out[CLIENT_HASH_SIZE];
    client_sha256_update(&h, "junk", 4);
    client_sha256_final(&h, out);
    client_sha256_update(&h, "hello ", 6);
    client_sha256_update(&h, "world", 5);
    client_sha256_final(&h, out);
    struct client_digest d;
    client_digest_buf("hello world", 11, &d);
    cr_assert(eq(int, memcmp(out, d.hash, 32), 0));
    client_sha256_deinit(&h);
    client_sha256_deinit(&h);
}
