/*
 * The sniff that tells an opaque HTTP /ac/ value from a possible ActionResult without decoding
 * it (rpc_ac_check_may_decode): it may say "may decode" of anything, but "cannot" only of bytes
 * protobuf-c really refuses, whatever prefix of the value it sees. A wrong "cannot" would serve
 * an unchecked ActionResult (a false cache hit), so the property is checked against protobuf-c
 * itself on real results, their prefixes, and many random and mutated values.
 */
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/ac_check.h"

typedef Build__Bazel__Remote__Execution__V2__ActionResult reapi_result;

#define H "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static bool decodes(const uint8_t *p, size_t len)
{
    reapi_result *ar = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, p);
    if (ar) build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
    return ar != NULL;
}

/* A real ActionResult of <files> output files, packed into <out> (size <cap>): its length. */
static size_t result_bytes(uint8_t *out, size_t cap, size_t files)
{
    reapi_result ar;
    build__bazel__remote__execution__v2__action_result__init(&ar);
    Build__Bazel__Remote__Execution__V2__OutputFile f[16];
    Build__Bazel__Remote__Execution__V2__OutputFile *fp[16];
    Build__Bazel__Remote__Execution__V2__Digest d;
    build__bazel__remote__execution__v2__digest__init(&d);
    d.hash = (char *)H;
    d.size_bytes = 0;
    cr_assert(le(sz, files, 16));
    for (size_t i = 0; i < files; i++) {
        build__bazel__remote__execution__v2__output_file__init(&f[i]);
        f[i].path = (char *)"bazel-out/k8-fastbuild/bin/some/output.o";
        f[i].digest = &d;
        fp[i] = &f[i];
    }
    ar.n_output_files = files;
    ar.output_files = fp;
    ar.exit_code = 3;
    ar.stdout_digest = &d;
    size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
    cr_assert(le(sz, len, cap));
    build__bazel__remote__execution__v2__action_result__pack(&ar, out);
    return len;
}

/* A fixed sequence (xorshift64): the runs are the same every time. */
static uint64_t next_random(void)
{
    static uint64_t x = 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static size_t pick(size_t n)
{
    return (size_t)(next_random() % n);
}

/* Every prefix of <p>/<len> that the sniff calls hopeless must not decode as a whole. */
static void check_sound(const uint8_t *p, size_t len)
{
    bool whole = decodes(p, len);
    for (size_t cut = 0; cut <= len; cut++) {
        if (!rpc_ac_check_may_decode(p, cut, len)) {
            cr_assert(not(whole), "sniff refused a value protobuf-c decodes (len %zu cut %zu)", len,
                      cut);
        }
    }
}

Test(rpc_ac_check, real_results_may_decode_at_every_prefix)
{
    uint8_t buf[4096];
    for (size_t files = 0; files <= 16; files++) {
        size_t len = result_bytes(buf, sizeof(buf), files);
        cr_assert(decodes(buf, len));
        for (size_t cut = 0; cut <= len; cut++) {
            cr_assert(rpc_ac_check_may_decode(buf, cut, len), "files %zu cut %zu", files, cut);
        }
    }
}

Test(rpc_ac_check, opaque_values_are_told_apart_at_their_first_bytes)
{
    /* ccache's entries begin with "cC" (0x63: field 12, a group): refused at byte 0. */
    static const uint8_t ccache[] = "cCrS\x00\x01\x02\x03";
    cr_assert(not(rpc_ac_check_may_decode(ccache, 1, 1 << 20)));
    cr_assert(not(decodes(ccache, sizeof(ccache) - 1)));
    /* Text: 'o' (0x6f) is wire type 7; 'r' 'e' is a length past the end. */
    cr_assert(not(rpc_ac_check_may_decode((const uint8_t *)"obj_0", 5, 5)));
    cr_assert(not(rpc_ac_check_may_decode((const uint8_t *)"result one", 10, 10)));
    /* A fixed64 field needs 8 more bytes. */
    cr_assert(not(rpc_ac_check_may_decode((const uint8_t *)"anything", 8, 8)));
    /* A varint past 10 bytes. */
    static const uint8_t long_varint[] = { 0x20, 0x80, 0x80, 0x80, 0x80, 0x80,
                                           0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
    cr_assert(not(rpc_ac_check_may_decode(long_varint, sizeof(long_varint), 100)));
    /* The empty value is the empty ActionResult. */
    cr_assert(rpc_ac_check_may_decode(NULL, 0, 0));
    cr_assert(decodes((const uint8_t *)"", 0));
    /* A 5-byte length protobuf-c reads as 32 bits (2^32 wraps to 0): not refused. */
    static const uint8_t wrap[] = { 0x72, 0x80, 0x80, 0x80, 0x80, 0x10 };
    cr_assert(rpc_ac_check_may_decode(wrap, sizeof(wrap), sizeof(wrap)));
}

Test(rpc_ac_check, never_refuses_what_protobuf_c_decodes)
{
    /* Random values over a small alphabet of protobuf-ish bytes, and real results with bytes
     * changed: many decode, many do not; the sniff must be sound on every prefix. */
    static const uint8_t alphabet[] = { 0x00, 0x01, 0x02, 0x05, 0x08, 0x0a, 0x0d, 0x10, 0x12,
                                        0x1a, 0x20, 0x22, 0x2a, 0x32, 0x3a, 0x42, 0x72, 0x7f,
                                        0x80, 0x81, 0xff, 0x03, 0x04, 0x0b, 0x63, 0xfa };
    uint8_t buf[4096];
    /* Bounded: a fixed number of trials. */
    for (int trial = 0; trial < 20000; trial++) {
        size_t len = pick(24);
        for (size_t i = 0; i < len; i++) {
            buf[i] = alphabet[pick(sizeof(alphabet))];
        }
        check_sound(buf, len);
    }
    for (int trial = 0; trial < 2000; trial++) {
        size_t len = result_bytes(buf, sizeof(buf), pick(4));
        buf[pick(len)] = (uint8_t)next_random();
        if (trial % 2) buf[pick(len)] = alphabet[pick(sizeof(alphabet))];
        check_sound(buf, len);
    }
}
