/*
 * Whole-blob reads: open, pieces appended to a counted buffer (sized exactly for identity
 * reads, grown for zstd), close at the end. One piece is pending at a time.
 */
#include "rpc/fetch.h"

#include <errno.h>
#include <string.h>

#include "rpc/internal.h"

static struct proto_alloc *mem(const struct rpc_fetch *f)
{
    return &f->rc->pb_mem;
}

static void fetch_end(struct rpc_fetch *f, int res)
{
    blob_read_close(f->r);
    f->r = NULL;
    base_counter_dec(&f->rc->counters.bs_readers);
    f->done(f, res);
}

static int grow(struct rpc_fetch *f, size_t need)
{
    if (need <= f->cap) return 0;
    if (need > f->max) return -EMSGSIZE;
    size_t cap = f->cap ? f->cap * 2 : 64 << 10;
    if (cap < need) cap = need;
    if (cap > f->max) cap = (size_t)f->max;
    uint8_t *p = proto_alloc_realloc(mem(f), f->buf, f->reserve + cap);
    if (!p) return -ENOMEM;
    f->buf = p;
    f->cap = cap;
    return 0;
}

static void on_piece(void *ctx, int res, const uint8_t *data, size_t len);

static void next(struct rpc_fetch *f)
{
    int rc = blob_read_next(f->r, on_piece, f);
    if (rc < 0) fetch_end(f, rc);
}

static void on_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct rpc_fetch *f = ctx;
    if (res < 0 || len == 0) {
        fetch_end(f, res);
        return;
    }
    int rc = grow(f, f->len + len);
    if (rc < 0) {
        fetch_end(f, rc);
        return;
    }
    memcpy(f->buf + f->reserve + f->len, data, len);
    f->len += len;
    next(f);
}

int rpc_fetch_start(struct rpc_fetch *f, const struct blob_key *k, enum blob_encoding enc)
{
    ASSERT(f->rc && f->done);
    f->r = NULL;
    f->buf = NULL;
    f->len = 0;
    f->cap = 0;
    struct blob_core *bc = f->rc->blob;
    if (!bc) return -ENOSYS;
    int rc = blob_read_open(bc, k, 0, enc, &f->r);
    if (rc < 0) return rc;
    base_counter_inc(&f->rc->counters.bs_readers);
    uint64_t size = blob_reader_size(f->r);
    rc = size > f->max ? -EMSGSIZE : 0;
    if (rc == 0) {
        /* Identity reads know their size; a zstd stream is usually smaller. */
        size_t want = size < (1u << 20) || enc == BLOB_ENCODING_IDENTITY ? (size_t)size : 1u << 20;
        f->buf = proto_alloc_malloc(mem(f), f->reserve + (want ? want : 1));
        rc = f->buf ? 0 : -ENOMEM;
        f->cap = want;
    }
    if (rc == 0) rc = blob_read_next(f->r, on_piece, f);
    if (rc < 0) {
        blob_read_close(f->r);
        f->r = NULL;
        base_counter_dec(&f->rc->counters.bs_readers);
        rpc_fetch_release(f);
        return rc;
    }
    return 0;
}

void rpc_fetch_cancel(struct rpc_fetch *f)
{
    if (!f->r) return;
    blob_read_close(f->r);
    f->r = NULL;
    base_counter_dec(&f->rc->counters.bs_readers);
}

uint8_t *rpc_fetch_take(struct rpc_fetch *f)
{
    uint8_t *p = f->buf;
    f->buf = NULL;
    f->cap = 0;
    return p;
}

void rpc_fetch_release(struct rpc_fetch *f)
{
    proto_alloc_free(mem(f), f->buf);
    f->buf = NULL;
    f->cap = 0;
    f->len = 0;
}
