/*
 * REAPI requests encoded by hand for the load generator (a request is encoded once and sent
 * many times, or encoded from a slot's own buffer without allocating), and the few fields of
 * the answers it checks. Field numbers: proto/build/bazel/remote/execution/v2/.
 *
 * Sections: buffer and writer, requests, responses.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "client/bench_internal.h"
#include "proto/frame.h"
#include "proto/wire.h"

/* ---- buffer and writer ---- */

int bench_buf_reserve(struct bench_buf *b, size_t more)
{
    if (b->size - b->len >= more) return 0;
    size_t want = b->size ? b->size : 256;
    /* Bounded: doubles until it fits (sizes stay far below SIZE_MAX). */
    while (want - b->len < more) {
        want *= 2;
    }
    uint8_t *m = realloc(b->p, want);
    if (!m) return -ENOMEM;
    b->p = m;
    b->size = want;
    return 0;
}

void bench_buf_free(struct bench_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->size = 0;
}

/* Appends without checking room (the caller reserved it). */
static void put_varint(struct bench_buf *b, uint64_t v)
{
    b->len += proto_wire_varint_put(b->p + b->len, v);
}

static void put_bytes(struct bench_buf *b, const void *p, size_t len)
{
    memcpy(b->p + b->len, p, len);
    b->len += len;
}

/* A LEN field's key and length. */
static void put_len(struct bench_buf *b, uint32_t field, size_t len)
{
    put_varint(b, proto_wire_key(field, PROTO_WIRE_LEN));
    put_varint(b, len);
}

/* The encoded size of a LEN field whose payload has <len> bytes. */
static size_t len_field_size(uint32_t field, size_t len)
{
    return proto_wire_varint_size(proto_wire_key(field, PROTO_WIRE_LEN)) +
           proto_wire_varint_size(len) + len;
}

#define HEX_LEN (2 * CLIENT_HASH_SIZE)

/* Bytes of a Digest message: hash (1) and, when non-zero, size_bytes (2). */
static size_t digest_size(const struct client_digest *d)
{
    size_t n = len_field_size(1, HEX_LEN);
    if (d->size) n += 1 + proto_wire_varint_size(d->size);
    return n;
}

static void put_digest(struct bench_buf *b, uint32_t field, const struct client_digest *d)
{
    put_len(b, field, digest_size(d));
    char hex[HEX_LEN + 1];
    proto_hex_encode(d->hash, CLIENT_HASH_SIZE, hex);
    put_len(b, 1, HEX_LEN);
    put_bytes(b, hex, HEX_LEN);
    if (d->size) {
        put_varint(b, proto_wire_key(2, PROTO_WIRE_VARINT));
        put_varint(b, d->size);
    }
}

/* Starts a framed message of <payload> bytes: reserve, frame header, instance_name (1). */
static int begin(struct bench_buf *b, const char *instance, size_t body)
{
    size_t ilen = instance ? strlen(instance) : 0;
    size_t payload = body + (ilen ? len_field_size(1, ilen) : 0);
    if (payload > UINT32_MAX) return -EMSGSIZE;
    b->len = 0;
    int rc = bench_buf_reserve(b, PROTO_FRAME_HEADER_SIZE + payload);
    if (rc < 0) return rc;
    proto_frame_header_put(b->p, (uint32_t)payload);
    b->len = PROTO_FRAME_HEADER_SIZE;
    if (ilen) {
        put_len(b, 1, ilen);
        put_bytes(b, instance, ilen);
    }
    return 0;
}

/* Checks that the message came out as long as its header says. */
static void end(const struct bench_buf *b)
{
    uint32_t want = ((uint32_t)b->p[1] << 24) | ((uint32_t)b->p[2] << 16) |
                    ((uint32_t)b->p[3] << 8) | (uint32_t)b->p[4];
    ASSERT(b->len == PROTO_FRAME_HEADER_SIZE + (size_t)want);
}

/* ---- requests ---- */

int bench_req_find_missing(struct bench_buf *b, const char *instance,
                           const struct client_digest *const *digests, size_t count)
{
    size_t body = 0;
    for (size_t i = 0; i < count; i++) {
        body += len_field_size(2, digest_size(digests[i]));
    }
    int rc = begin(b, instance, body);
    if (rc < 0) return rc;
    for (size_t i = 0; i < count; i++) {
        put_digest(b, 2, digests[i]);
    }
    end(b);
    return 0;
}

int bench_req_batch_read(struct bench_buf *b, const char *instance,
                         const struct client_digest *const *digests, size_t count, bool zstd)
{
    size_t body = zstd ? len_field_size(3, 1) : 0; /* acceptable_compressors: [ZSTD] */
    for (size_t i = 0; i < count; i++) {
        body += len_field_size(2, digest_size(digests[i]));
    }
    int rc = begin(b, instance, body);
    if (rc < 0) return rc;
    for (size_t i = 0; i < count; i++) {
        put_digest(b, 2, digests[i]);
    }
    if (zstd) {
        put_len(b, 3, 1);
        put_varint(b, 1); /* Compressor.Value ZSTD, packed */
    }
    end(b);
    return 0;
}

/* Bytes of one BatchUpdateBlobsRequest.Request. */
static size_t update_entry_size(const struct bench_req_blob *e)
{
    return len_field_size(1, digest_size(e->d)) + len_field_size(2, (size_t)e->d->size);
}

int bench_req_batch_update(struct bench_buf *b, const char *instance,
                           const struct bench_req_blob *blobs, size_t count)
{
    size_t body = 0;
    for (size_t i = 0; i < count; i++) {
        body += len_field_size(2, update_entry_size(&blobs[i]));
    }
    int rc = begin(b, instance, body);
    if (rc < 0) return rc;
    for (size_t i = 0; i < count; i++) {
        put_len(b, 2, update_entry_size(&blobs[i]));
        put_digest(b, 1, blobs[i].d);
        put_len(b, 2, (size_t)blobs[i].d->size);
        put_bytes(b, blobs[i].data, (size_t)blobs[i].d->size);
    }
    end(b);
    return 0;
}

int bench_req_ac_get(struct bench_buf *b, const char *instance, const struct client_digest *action)
{
    int rc = begin(b, instance, len_field_size(2, digest_size(action)));
    if (rc < 0) return rc;
    put_digest(b, 2, action);
    end(b);
    return 0;
}

/* An OutputFile's path: "out/<hash prefix>" keeps them distinct and short. */
#define OUT_PATH_LEN 20

static size_t output_file_size(const struct client_digest *d)
{
    return len_field_size(1, OUT_PATH_LEN) + len_field_size(2, digest_size(d));
}

int bench_req_ac_update(struct bench_buf *b, const char *instance,
                        const struct client_digest *action,
                        const struct client_digest *const *outputs, size_t count)
{
    size_t result = 0;
    for (size_t i = 0; i < count; i++) {
        result += len_field_size(2, output_file_size(outputs[i]));
    }
    size_t body = len_field_size(2, digest_size(action)) + len_field_size(3, result);
    int rc = begin(b, instance, body);
    if (rc < 0) return rc;
    put_digest(b, 2, action);
    put_len(b, 3, result);
    for (size_t i = 0; i < count; i++) {
        put_len(b, 2, output_file_size(outputs[i]));
        char hex[HEX_LEN + 1];
        proto_hex_encode(outputs[i]->hash, CLIENT_HASH_SIZE, hex);
        put_len(b, 1, OUT_PATH_LEN);
        put_bytes(b, "out/", 4);
        put_bytes(b, hex, OUT_PATH_LEN - 4);
        put_digest(b, 2, outputs[i]);
    }
    end(b);
    return 0;
}

/* ---- responses ---- */

int64_t bench_req_count_missing(const uint8_t *p, size_t len, uint64_t *sums)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int64_t missing = 0;
    int rc;
    *sums = 0;
    /* Bounded by the message's length: every field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 2 || f.type != PROTO_WIRE_LEN) continue;
        const uint8_t *hex;
        size_t hex_len;
        int64_t size;
        uint8_t hash[CLIENT_HASH_SIZE];
        if (proto_wire_digest(f.data, f.len, &hex, &hex_len, &size) < 0) return -EBADMSG;
        if (hex_len != 2 * CLIENT_HASH_SIZE) return -EBADMSG;
        if (proto_hex_decode((const char *)hex, hex_len, hash) < 0) return -EBADMSG;
        *sums += bench_digest_key(hash);
        missing++;
    }
    return rc < 0 ? rc : missing;
}

/*
 * Reads a google.rpc.Status message: its code (field 1; 0 when absent) and message (field 2)
 * go to <bad> unless an earlier blob's did. 0 when the status is OK, 1 when not, -EBADMSG.
 */
static int status_read(const uint8_t *p, size_t len, struct bench_req_bad *bad)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int code = 0;
    const uint8_t *message = NULL;
    size_t message_len = 0;
    int rc;
    /* Bounded by the message's length: every field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number == 1 && f.type == PROTO_WIRE_VARINT) code = (int)(int32_t)f.value;
        if (f.number == 2 && f.type == PROTO_WIRE_LEN) {
            message = f.data;
            message_len = f.len;
        }
    }
    if (rc < 0) return -EBADMSG;
    if (code == 0) return 0;
    if (bad->status == 0) {
        bad->status = code;
        bad->message = message;
        bad->message_len = message_len;
    }
    return 1;
}

/* Whether <data>/<len> (zstd-compressed when <compressed>) is the blob of <hash>/<size>. */
static bool entry_verified(const uint8_t *data, size_t len, bool compressed,
                           const uint8_t hash[CLIENT_HASH_SIZE], uint64_t size)
{
    const uint8_t *blob = data;
    uint8_t *plain = NULL;
    if (compressed) {
        plain = malloc(size ? (size_t)size : 1);
        if (!plain) return false;
        size_t n = ZSTD_decompress(plain, (size_t)size, data, len);
        if (ZSTD_isError(n) || n != size) {
            free(plain);
            return false;
        }
        blob = plain;
    } else if (len != size) {
        return false;
    }
    struct client_digest d;
    client_digest_buf(blob, (size_t)size, &d);
    free(plain);
    return memcmp(d.hash, hash, CLIENT_HASH_SIZE) == 0;
}

/* One BatchReadBlobsResponse.Response: 1 OK with the right bytes, 0 not OK, or -EBADMSG. */
static int read_entry(const uint8_t *p, size_t len, struct bench_req_read *rd,
                      struct bench_req_bad *bad)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int64_t size = -1;
    uint8_t hash[CLIENT_HASH_SIZE];
    const uint8_t *data = NULL;
    size_t data_len = 0;
    int not_ok = 0;
    uint64_t compressor = 0;
    int rc;
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number == 1 && f.type == PROTO_WIRE_LEN) {
            const uint8_t *hex;
            size_t hex_len;
            if (proto_wire_digest(f.data, f.len, &hex, &hex_len, &size) < 0) return -EBADMSG;
            if (hex_len != 2 * CLIENT_HASH_SIZE) return -EBADMSG;
            if (proto_hex_decode((const char *)hex, hex_len, hash) < 0) return -EBADMSG;
        } else if (f.number == 2 && f.type == PROTO_WIRE_LEN) {
            data = f.data;
            data_len = f.len;
        } else if (f.number == 3 && f.type == PROTO_WIRE_LEN) {
            not_ok = status_read(f.data, f.len, bad);
        } else if (f.number == 4 && f.type == PROTO_WIRE_VARINT) {
            compressor = f.value;
        }
    }
    if (rc < 0 || not_ok < 0) return -EBADMSG;
    if (not_ok) return 0;
    bool compressed = rd->zstd && compressor == 1;
    if (size < 0 || (!compressed && data_len != (size_t)size)) return -EBADMSG;
    if (rd->verify && !entry_verified(data, data_len, compressed, hash, (uint64_t)size)) {
        return -EBADMSG;
    }
    rd->size += (uint64_t)size;
    rd->sums += bench_digest_key(hash);
    return 1;
}

int64_t bench_req_count_read(const uint8_t *p, size_t len, struct bench_req_read *rd,
                             struct bench_req_bad *bad)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int64_t ok = 0;
    int rc;
    *bad = (struct bench_req_bad){ 0 };
    rd->size = 0;
    rd->sums = 0;
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 1 || f.type != PROTO_WIRE_LEN) continue;
        int e = read_entry(f.data, f.len, rd, bad);
        if (e < 0) return e;
        ok += e;
    }
    return rc < 0 ? rc : ok;
}

int64_t bench_req_count_outputs(const uint8_t *p, size_t len, uint64_t *sums)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int64_t files = 0;
    int rc;
    *sums = 0;
    /* Bounded by the message's length: every field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 2 || f.type != PROTO_WIRE_LEN) continue; /* ActionResult.output_files */
        struct proto_wire_reader e;
        proto_wire_reader_init(&e, f.data, f.len);
        struct proto_wire_field g;
        int erc;
        bool digest = false;
        while ((erc = proto_wire_next(&e, &g)) > 0) {
            if (g.number != 2 || g.type != PROTO_WIRE_LEN) continue; /* OutputFile.digest */
            const uint8_t *hex;
            size_t hex_len;
            int64_t size;
            uint8_t hash[CLIENT_HASH_SIZE];
            if (proto_wire_digest(g.data, g.len, &hex, &hex_len, &size) < 0) return -EBADMSG;
            if (hex_len != 2 * CLIENT_HASH_SIZE) return -EBADMSG;
            if (proto_hex_decode((const char *)hex, hex_len, hash) < 0) return -EBADMSG;
            *sums += bench_digest_key(hash);
            digest = true;
        }
        if (erc < 0 || !digest) return -EBADMSG;
        files++;
    }
    return rc < 0 ? rc : files;
}

int64_t bench_req_count_updated(const uint8_t *p, size_t len, struct bench_req_bad *bad)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, p, len);
    struct proto_wire_field f;
    int64_t ok = 0;
    int rc;
    *bad = (struct bench_req_bad){ 0 };
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 1 || f.type != PROTO_WIRE_LEN) continue;
        struct proto_wire_reader e;
        proto_wire_reader_init(&e, f.data, f.len);
        struct proto_wire_field g;
        int not_ok = 0;
        int erc;
        while ((erc = proto_wire_next(&e, &g)) > 0) {
            if (g.number == 2 && g.type == PROTO_WIRE_LEN) not_ok = status_read(g.data, g.len, bad);
        }
        if (erc < 0 || not_ok < 0) return -EBADMSG;
        if (!not_ok) ok++;
    }
    return rc < 0 ? rc : ok;
}
