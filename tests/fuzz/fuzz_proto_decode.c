/*
 * Fuzz target: everything that decodes client bytes before the engine sees them.
 *   - the streaming WriteRequest decoder must agree with itself whatever the cut, report data
 *     spans inside the input only, and, when it accepts a message, agree with protobuf-c;
 *   - ReadRequest, Digest, resource names and grpc-timeout never read outside the input;
 *   - the hand-written field reader (FindMissingBlobs' digests) steps through the input, every
 *     span inside it, and a Digest it and protobuf-c both accept has the same hash and size;
 *   - protobuf-c unpacks every request type the services take through the counting
 *     allocator, and gives every byte back (no leak on any input, accepted or not).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "proto/alloc.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/bytestream.h"
#include "proto/google/bytestream/bytestream.pb-c.h"
#include "proto/grpc/health/v1/health.pb-c.h"
#include "proto/resource.h"
#include "proto/timeout.h"
#include "proto/wire.h"

struct write_result {
    int rc;
    uint64_t data; /* data bytes reported */
    uint64_t hash; /* of them */
    struct proto_write_request w;
};

static void write_decode(const uint8_t *p, size_t len, size_t step, struct write_result *r)
{
    proto_write_request_begin(&r->w, (uint32_t)len);
    r->rc = 0;
    r->data = 0;
    r->hash = 0;
    size_t off = 0;
    while (off < len && r->rc >= 0) {
        size_t piece = len - off < step ? len - off : step;
        size_t used = 0;
        while (used < piece) {
            const uint8_t *d;
            size_t dl;
            int n = proto_write_request_feed(&r->w, p + off + used, piece - used, &d, &dl);
            if (n < 0) {
                r->rc = n;
                break;
            }
            ASSERT(n > 0);
            if (dl) {
                ASSERT(d == p + off + used && dl == (size_t)n);
                r->data += dl;
                for (size_t i = 0; i < dl; i++)
                    r->hash = r->hash * 31 + d[i];
            }
            used += (size_t)n;
        }
        off += piece;
    }
    if (r->rc == 0) r->rc = proto_write_request_end(&r->w);
}

static void check_write(const uint8_t *p, size_t len, size_t step, struct proto_alloc *a,
                        ProtobufCAllocator *pa)
{
    static struct write_result whole;
    static struct write_result cut;
    write_decode(p, len, len ? len : 1, &whole);
    write_decode(p, len, step, &cut);
    ASSERT(whole.rc == cut.rc);
    if (whole.rc < 0) return;
    ASSERT(whole.data == cut.data && whole.hash == cut.hash);
    ASSERT(whole.w.write_offset == cut.w.write_offset);
    ASSERT(whole.w.finish_write == cut.w.finish_write);
    /* What the hand decoder accepts, protobuf-c accepts too, with the same fields. */
    Google__Bytestream__WriteRequest *m = google__bytestream__write_request__unpack(pa, len, p);
    if (m) {
        ASSERT(m->write_offset == whole.w.write_offset);
        ASSERT(m->finish_write == whole.w.finish_write);
        ASSERT(m->data.len == whole.w.data_len);
        ASSERT(!whole.w.has_name || strlen(m->resource_name) <= whole.w.name_len);
        google__bytestream__write_request__free_unpacked(m, pa);
    }
    (void)a;
}

#define UNPACK(prefix, p, len, pa)                                                                 \
    do {                                                                                           \
        void *m_ = prefix##__unpack((pa), (len), (p));                                             \
        if (m_) prefix##__free_unpacked(m_, (pa));                                                 \
    } while (0)

static void check_protobuf_c(const uint8_t *p, size_t len, ProtobufCAllocator *pa)
{
    UNPACK(build__bazel__remote__execution__v2__find_missing_blobs_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__batch_update_blobs_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__batch_read_blobs_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__get_tree_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__get_action_result_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__update_action_result_request, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__action_result, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__tree, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__directory, p, len, pa);
    UNPACK(build__bazel__remote__execution__v2__get_capabilities_request, p, len, pa);
    UNPACK(google__bytestream__query_write_status_request, p, len, pa);
    UNPACK(grpc__health__v1__health_check_request, p, len, pa);
}

/* Every field proto_wire_next gives lies inside the input, and each takes at least a byte. */
static void check_wire(const uint8_t *p, size_t len)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    const uint8_t *before = r.p;
    /* Bounded: each field takes at least one byte of <len>. */
    while (proto_wire_next(&r, &f) > 0) {
        ASSERT(r.p > before && r.p <= p + len);
        ASSERT(f.number >= 1);
        if (f.type == PROTO_WIRE_LEN && f.len > 0) {
            ASSERT(f.data >= before && f.data + f.len <= r.p);
        }
        before = r.p;
    }
}

/* What the hand decoder takes from a Digest that protobuf-c also accepts, protobuf-c agrees
 * with: FindMissingBlobs (hand) and the other calls (protobuf-c) must name the same blob. */
static void check_digest(const uint8_t *p, size_t len, ProtobufCAllocator *pa)
{
    const uint8_t *hash;
    size_t hash_len;
    int64_t size;
    if (proto_wire_digest(p, len, &hash, &hash_len, &size) < 0) return;
    if (hash) ASSERT(hash >= p && hash + hash_len <= p + len);
    Build__Bazel__Remote__Execution__V2__Digest *d =
        build__bazel__remote__execution__v2__digest__unpack(pa, len, p);
    if (!d) return;
    ASSERT(d->size_bytes == size);
    size_t n = strlen(d->hash);
    /* protobuf-c's string ends at a NUL: compare only hashes without one. */
    if (!hash || memchr(hash, 0, hash_len) == NULL) {
        ASSERT(n == hash_len);
        ASSERT(n == 0 || memcmp(d->hash, hash, n) == 0);
    }
    build__bazel__remote__execution__v2__digest__free_unpacked(d, pa);
}

static void check_small_parsers(const uint8_t *p, size_t len)
{
    struct proto_read_request rr;
    if (proto_bytestream_read_request(p, len, &rr) == 0 && rr.resource_name_len > 0)
        ASSERT((const uint8_t *)rr.resource_name >= p &&
               (const uint8_t *)rr.resource_name + rr.resource_name_len <= p + len);
    const uint8_t *hash;
    size_t hash_len;
    int64_t size;
    if (proto_wire_digest(p, len, &hash, &hash_len, &size) == 0 && hash)
        ASSERT(hash >= p && hash + hash_len <= p + len);
    struct proto_resource res;
    const char *why;
    for (int write = 0; write < 2; write++) {
        if (proto_resource_parse((const char *)p, len, write, &res, &why) == 0) {
            ASSERT(res.size <= (uint64_t)INT64_MAX);
            ASSERT(res.instance_len <= len && res.uuid_len <= len);
            ASSERT(write || res.uuid_len == 0);
        }
    }
    uint64_t ms;
    if (proto_timeout_parse((const char *)p, len, &ms) == 0) ASSERT(ms <= PROTO_TIMEOUT_MS_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static struct proto_alloc a;
    ProtobufCAllocator pa;
    proto_alloc_init(&a);
    proto_alloc_protobuf(&a, &pa);
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    check_write(p, len, (size_t)data[0] % 13 + 1, &a, &pa);
    check_protobuf_c(p, len, &pa);
    check_small_parsers(p, len);
    check_wire(p, len);
    check_digest(p, len, &pa);
    ASSERT(base_counter_get(&a.bytes) == 0);
    ASSERT(base_counter_get(&a.blocks) == 0);
    return 0;
}
