/*
 * Protobuf wire format by hand. Every read is bounded by the reader's end; lengths taken from
 * the input are compared with what is left before they are used.
 */
#include "proto/wire.h"

#include <errno.h>

int proto_wire_varint(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = len < PROTO_WIRE_VARINT_MAX ? len : PROTO_WIRE_VARINT_MAX;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = p[i];
        /* The tenth byte may only carry the top bit of a uint64. */
        if (i == PROTO_WIRE_VARINT_MAX - 1 && b > 1) return -EBADMSG;
        v |= (b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return (int)(i + 1);
        }
    }
    return len < PROTO_WIRE_VARINT_MAX ? 0 : -EBADMSG;
}

int proto_wire_varint_pbc(const uint8_t *p, size_t len, size_t max, uint64_t *out)
{
    ASSERT(max >= 1 && max <= PROTO_WIRE_VARINT_MAX);
    uint64_t v = 0;
    for (size_t i = 0; i < max; i++) {
        if (i == len) return 0;
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            *out = v;
            return (int)(i + 1);
        }
    }
    return -EBADMSG;
}

size_t proto_wire_varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

size_t proto_wire_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static int read_varint(struct proto_wire_reader *r, uint64_t *out)
{
    int n = proto_wire_varint(r->p, (size_t)(r->end - r->p), out);
    if (n <= 0) return -EBADMSG;
    r->p += n;
    return 0;
}

static int read_fixed(struct proto_wire_reader *r, size_t size, uint64_t *out)
{
    if ((size_t)(r->end - r->p) < size) return -EBADMSG;
    uint64_t v = 0;
    for (size_t i = 0; i < size; i++) {
        v |= (uint64_t)r->p[i] << (8 * i);
    }
    r->p += size;
    *out = v;
    return 0;
}

int proto_wire_next(struct proto_wire_reader *r, struct proto_wire_field *f)
{
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (read_varint(r, &key) < 0) return -EBADMSG;
    uint64_t number = key >> 3;
    if (number == 0 || number > (1u << 29) - 1) return -EBADMSG;
    f->number = (uint32_t)number;
    f->type = (uint8_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->value = 0;
    switch (f->type) {
    case PROTO_WIRE_VARINT:
        return read_varint(r, &f->value) < 0 ? -EBADMSG : 1;
    case PROTO_WIRE_I64:
        return read_fixed(r, 8, &f->value) < 0 ? -EBADMSG : 1;
    case PROTO_WIRE_I32:
        return read_fixed(r, 4, &f->value) < 0 ? -EBADMSG : 1;
    case PROTO_WIRE_LEN: {
        uint64_t len;
        if (read_varint(r, &len) < 0 || len > (uint64_t)(r->end - r->p)) return -EBADMSG;
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return 1;
    }
    default:
        return -EBADMSG; /* groups (3, 4) and the reserved types 6, 7 */
    }
}

int proto_wire_digest(const uint8_t *data, size_t len, const uint8_t **hash, size_t *hash_len,
                      int64_t *size)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, data, len);
    *hash = NULL;
    *hash_len = 0;
    *size = 0;
    struct proto_wire_field f;
    int rc;
    /* Bounded: each step consumes at least one byte of <len>. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number == 1) {
            if (f.type != PROTO_WIRE_LEN) return -EBADMSG;
            *hash = f.data;
            *hash_len = f.len;
        } else if (f.number == 2) {
            if (f.type != PROTO_WIRE_VARINT) return -EBADMSG;
            *size = (int64_t)f.value;
        }
    }
    return rc;
}

/* One more than each byte's value as a hex digit, 0 for other bytes: one load per digit
 * (FindMissingBlobs decodes 64 digits per digest, a thousand digests per call). */
static const uint8_t hex_plus1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int proto_hex_decode(const char *hex, size_t len, uint8_t *out)
{
    if (len % 2 != 0) return -EINVAL;
    for (size_t i = 0; i < len; i += 2) {
        unsigned hi = hex_plus1[(unsigned char)hex[i]];
        unsigned lo = hex_plus1[(unsigned char)hex[i + 1]];
        if (hi == 0 || lo == 0) return -EINVAL;
        out[i / 2] = (uint8_t)((hi - 1) << 4 | (lo - 1));
    }
    return 0;
}

void proto_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}
