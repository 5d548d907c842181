/*
 * Digests: SHA-256 test vectors (FIPS 180-2), incremental updates equal one shot, unknown
 * digest functions are refused.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/digest.h"

static void hex(const uint8_t *h, char *out)
{
    blob_hash_to_hex(h, out);
}

Test(blob_digest, sha256_test_vectors)
{
    uint8_t h[32];
    char s[65];
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, "abc", 3, h), 0));
    hex(h, s);
    cr_assert(eq(str, s, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, "", 0, h), 0));
    cr_assert(memcmp(h, blob_empty_sha256, 32) == 0);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, m, strlen(m), h), 0));
    hex(h, s);
    cr_assert(eq(str, s, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

Test(blob_digest, incremental_equals_one_shot)
{
    static uint8_t data[100000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 3);
    uint8_t want[32];
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, data, sizeof(data), want), 0));
    size_t steps[] = { 1, 63, 64, 65, 4096, 99999 };
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        struct blob_digest d;
        cr_assert(eq(int, blob_digest_init(&d, BLOB_DIGEST_SHA256), 0));
        for (size_t off = 0; off < sizeof(data); off += steps[s]) {
            size_t n = sizeof(data) - off < steps[s] ? sizeof(data) - off : steps[s];
            blob_digest_update(&d, data + off, n);
        }
        blob_digest_update(&d, data, 0);
        uint8_t got[32];
        blob_digest_final(&d, got);
        blob_digest_deinit(&d);
        cr_assert(memcmp(got, want, 32) == 0, "step %zu", steps[s]);
    }
}

Test(blob_digest, unknown_functions_are_refused)
{
    struct blob_digest d;
    cr_assert(eq(int, blob_digest_init(&d, 0), -EINVAL));
    cr_assert(eq(int, blob_digest_init(&d, 2), -EINVAL), "SHA-1 is not built in");
    cr_assert(not(blob_digest_is_supported(99)));
    cr_assert(blob_digest_is_supported(BLOB_DIGEST_SHA256));
    uint8_t h[32];
    cr_assert(eq(int, blob_digest_oneshot(7, "x", 1, h), -EINVAL));
    blob_digest_deinit(&d); /* safe after a failed init */
    blob_digest_deinit(&d);
}

Test(blob_digest, large_inputs_hash_like_openssl_says)
{
    /* FIPS 180-2: one million 'a' characters. */
    static uint8_t a[1000000];
    memset(a, 'a', sizeof(a));
    uint8_t h[32];
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, a, sizeof(a), h), 0));
    char s[65];
    hex(h, s);
    cr_assert(eq(str, s, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

Test(blob_digest, a_digest_can_be_started_again_after_it_ended)
{
    struct blob_digest d;
    uint8_t a[32];
    uint8_t b[32];
    for (int round = 0; round < 3; round++) {
        cr_assert(eq(int, blob_digest_init(&d, BLOB_DIGEST_SHA256), 0));
        blob_digest_update(&d, "abc", 3);
        blob_digest_final(&d, round ? b : a);
        blob_digest_deinit(&d);
    }
    cr_assert(memcmp(a, b, 32) == 0);
    char s[65];
    hex(a, s);
    cr_assert(eq(str, s, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}
