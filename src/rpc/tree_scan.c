/*
 * The Tree scan: a field's head (key, and a length or a varint value) is read where it lies,
 * or gathered into head[] when a piece ends inside it; a Directory field is handed over
 * where it lies, or gathered into buf when a piece ends inside it; other fields are skipped
 * by count. The checks follow protobuf-c 1.4.1's protobuf_c_message_unpack (its scan of
 * fields, parse_tag_and_wiretype, scan_length_prefixed_data and the message member's
 * wire type check), so that the scan and protobuf-c agree on what a Tree is.
 */
#include "rpc/tree_scan.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "proto/wire.h"

enum {
    SCAN_HEAD,
    SCAN_GATHER,
    SCAN_SKIP
};

enum {
    TREE_ROOT = 1,     /* Tree.root: Directory */
    TREE_CHILDREN = 2, /* Tree.children: repeated Directory */
};

enum {
    WIRE_VARINT = 0,
    WIRE_64BIT = 1,
    WIRE_LEN = 2,
    WIRE_32BIT = 5
};

#define KEY_MAX    5          /* bytes of a key (a 32-bit tag and the wire type) */
#define LENGTH_MAX 5          /* bytes of a length prefix */
#define VALUE_MAX  10         /* bytes of a varint value */
#define LENGTH_TOP 0x7fffffff /* largest length protobuf-c accepts (INT_MAX) */

static size_t min_size(size_t a, uint64_t b)
{
    return b < a ? (size_t)b : a;
}

struct head {
    uint32_t tag;  /* the field number */
    unsigned wire; /* its wire type */
    uint64_t len;  /* the bytes of the field after the head: a length, 8, 4, or 0 (a varint) */
};

/* A field's head at <p>/<n>: the bytes it takes, 0 when <n> ends inside it, -EBADMSG. */
static int parse_head(const uint8_t *p, size_t n, struct head *h)
{
    if (n == 0) return 0;
    /* protobuf-c refuses field 0 by the key's first byte alone. */
    if ((p[0] & 0xf8) == 0) return -EBADMSG;
    uint64_t key;
    int k = proto_wire_varint_pbc(p, n, KEY_MAX, &key);
    if (k <= 0) return k;
    h->tag = (uint32_t)(key >> 3); /* 5 bytes carry 32 bits of tag, as in protobuf-c */
    h->wire = (unsigned)(key & 7);
    uint64_t v = 0;
    int m = 0;
    switch (h->wire) {
    case WIRE_VARINT:
        m = proto_wire_varint_pbc(p + k, n - (size_t)k, VALUE_MAX, &v);
        h->len = 0;
        break;
    case WIRE_64BIT:
        h->len = 8;
        break;
    case WIRE_LEN:
        m = proto_wire_varint_pbc(p + k, n - (size_t)k, LENGTH_MAX, &v);
        if (m > 0 && v > LENGTH_TOP) return -EBADMSG;
        h->len = v;
        break;
    case WIRE_32BIT:
        h->len = 4;
        break;
    default: /* groups (3, 4), which protobuf-c refuses, and the unused 6, 7 */
        return -EBADMSG;
    }
    if (m < 0) return m;
    if (m == 0 && (h->wire == WIRE_VARINT || h->wire == WIRE_LEN)) return 0;
    return k + m;
}

static int fail(struct rpc_tree_scan *s, int err)
{
    s->err = err;
    rpc_tree_scan_free(s);
    return err;
}

/* Reads a field's head from <p>/<n>, n > 0: the bytes of <p> it took. */
static size_t take_head(struct rpc_tree_scan *s, const uint8_t *p, size_t n)
{
    const uint8_t *h = p;
    size_t hn = n;
    size_t old = s->head_len;
    if (old > 0 || n < RPC_TREE_SCAN_HEAD_MAX) {
        /* Possibly cut by the piece's end: parse it from head[]. */
        size_t c = min_size(n, RPC_TREE_SCAN_HEAD_MAX - old);
        memcpy(s->head + old, p, c);
        h = s->head;
        hn = old + c;
    }
    struct head f;
    int t = parse_head(h, hn, &f);
    if (t < 0) {
        fail(s, -EBADMSG);
        return n;
    }
    if (t == 0) {
        /* 15 bytes always decide a head, so the piece ended inside it: all of it is taken. */
        ASSERT(hn < RPC_TREE_SCAN_HEAD_MAX && hn - old == n);
        s->head_len = (uint8_t)hn;
        s->left -= n;
        return n;
    }
    ASSERT((size_t)t > old);
    size_t used = (size_t)t - old;
    s->head_len = 0;
    s->left -= used;
    if (f.len > s->left) {
        fail(s, -EBADMSG);
        return n;
    }
    if (f.tag != TREE_ROOT && f.tag != TREE_CHILDREN) {
        s->need = f.len;
        s->state = f.len ? SCAN_SKIP : SCAN_HEAD;
        return used;
    }
    if (f.wire != WIRE_LEN) {
        fail(s, -EBADMSG);
        return n;
    }
    if (f.len > s->dir_max) {
        fail(s, -E2BIG);
        return n;
    }
    size_t rest = n - used;
    if (f.len <= rest) {
        /* The whole Directory is in this piece. */
        s->left -= f.len;
        int rc = s->on_dir(s->ctx, p + used, (size_t)f.len);
        if (rc < 0) fail(s, rc);
        return used + (size_t)f.len;
    }
    s->buf = proto_alloc_malloc(s->mem, (size_t)f.len);
    if (!s->buf) {
        fail(s, -ENOMEM);
        return n;
    }
    s->buf_len = 0;
    s->need = f.len;
    s->state = SCAN_GATHER;
    return used;
}

/* Gathers the cut Directory's bytes from <p>/<n>, n > 0: the bytes of <p> it took. */
static size_t take_dir(struct rpc_tree_scan *s, const uint8_t *p, size_t n)
{
    size_t c = min_size(n, s->need);
    memcpy(s->buf + s->buf_len, p, c);
    s->buf_len += c;
    s->need -= c;
    s->left -= c;
    if (s->need == 0) {
        int rc = s->on_dir(s->ctx, s->buf, s->buf_len);
        rpc_tree_scan_free(s);
        s->state = SCAN_HEAD;
        if (rc < 0) fail(s, rc);
    }
    return c;
}

void rpc_tree_scan_init(struct rpc_tree_scan *s, uint64_t size)
{
    ASSERT(s->mem && s->on_dir);
    s->left = size;
    s->need = 0;
    s->buf = NULL;
    s->buf_len = 0;
    s->head_len = 0;
    s->state = SCAN_HEAD;
    s->err = 0;
}

int rpc_tree_scan_feed(struct rpc_tree_scan *s, const uint8_t *p, size_t len)
{
    if (s->err) return s->err;
    if (len > s->left) return fail(s, -EBADMSG); /* more than the Tree's size */
    size_t at = 0;
    /* Bounded: each turn takes at least one byte, or the scan failed. */
    while (at < len && s->err == 0) {
        size_t n = len - at;
        switch (s->state) {
        case SCAN_HEAD:
            at += take_head(s, p + at, n);
            break;
        case SCAN_GATHER:
            at += take_dir(s, p + at, n);
            break;
        default: { /* SCAN_SKIP */
            size_t c = min_size(n, s->need);
            s->need -= c;
            s->left -= c;
            if (s->need == 0) s->state = SCAN_HEAD;
            at += c;
            break;
        }
        }
    }
    return s->err;
}

int rpc_tree_scan_end(const struct rpc_tree_scan *s)
{
    if (s->err) return s->err;
    bool at_a_field_end = s->state == SCAN_HEAD && s->head_len == 0;
    return at_a_field_end && s->left == 0 ? 0 : -EBADMSG;
}

void rpc_tree_scan_free(struct rpc_tree_scan *s)
{
    if (s->buf) proto_alloc_free(s->mem, s->buf);
    s->buf = NULL;
    s->buf_len = 0;
}
