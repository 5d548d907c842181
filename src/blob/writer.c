/*
 * The per-core segment writer: the active segment, a ring of aligned write buffers with
 * several writes in flight, group commit, sealing and abandoning.
 *
 * Records are appended to the current buffer. While data streams, a write sends only the
 * buffer's whole blocks (the O_DIRECT unit) and the partial last block moves to the next
 * buffer, so streaming writes never touch the same block and go out side by side. When a
 * commit waits, the write includes the partial block (zero padded) and the next buffer
 * starts with a copy of it: its next write rewrites that block with the same leading bytes,
 * so a torn rewrite (sector-atomic) never changes bytes that were already durable, and that
 * next write waits until the padded one completed, so two writes never race on one block.
 * Writes complete in any order; <written> advances in issue order only.
 *
 * Durability: a pending commit waits for the write that holds its record (wait_write), then
 * for an fdatasync (wait_sync -> syncing). Group commit issues one fdatasync at the end of a
 * loop iteration for everything written so far, only after those writes completed; commits
 * written while it runs wait for the next one. A failed or short write (a full disk: -ENOSPC)
 * or a failed fsync is never acknowledged: the segment is abandoned (kept for what was
 * acknowledged before, never written again, never trusted to a later fsync) and the next
 * reservation opens a new one.
 *
 * Sections: buffers, writes and syncs, sealing, opening, failure, the API.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "blob/internal.h"

/* A write goes out once this much is buffered even if nobody waits for it. */
#define FLUSH_BYTES (1024U * 1024U)
/* Resubmissions of one write or read that came back -EAGAIN or -EINTR. */
#define RETRIES_MAX 16U
/* A new segment without room on the disk polls for the evictor's pass this often, this many
 * times at most (a second in all: an upload waits that long rather than being refused). */
#define ROOM_POLL_MS   5U
#define ROOM_POLLS_MAX 200U

static void writer_kick(struct blob_writer *w);
static void writer_fail(struct blob_writer *w, int err);

static struct blob_store *store_of(const struct blob_writer *w)
{
    return w->bc->s;
}

static void pendings_finish(struct base_list *list, int res)
{
    struct base_list *node;
    /* Bounded by the list. */
    while ((node = base_list_pop_head(list)) != NULL) {
        struct blob_pending *p = BASE_CONTAINER_OF(node, struct blob_pending, link);
        p->done(p, res);
    }
}

static void waiters_wake(struct blob_writer *w, int res)
{
    struct base_list list;
    base_list_init(&list);
    struct base_list *node;
    while ((node = base_list_pop_head(&w->waiters)) != NULL) {
        base_list_add_tail(&list, node);
        base_counter_dec(&w->bc->counters.writer_waiters);
    }
    /* A woken waiter may queue itself again: it lands on w->waiters, not on <list>. */
    while ((node = base_list_pop_head(&list)) != NULL) {
        struct blob_waiter *wt = BASE_CONTAINER_OF(node, struct blob_waiter, link);
        wt->fn(wt, res);
    }
}

/* Bytes the footer and trailer of the active segment need with <entries> entries. */
static uint64_t footer_room(uint64_t entries)
{
    return BLOB_BLOCK_SIZE + blob_record_size(entries * sizeof(struct blob_footer_entry)) +
           BLOB_BLOCK_SIZE;
}

/* ---- writes and syncs ---- */

static uint32_t wnext(uint32_t i)
{
    return (i + 1) % BLOB_WBUFS;
}

static struct blob_wbuf *wcur(struct blob_writer *w)
{
    return &w->bufs[w->cur];
}

static uint32_t flush_bytes(const struct blob_writer *w)
{
    return w->buf_size / 2 < FLUSH_BYTES ? w->buf_size / 2 : FLUSH_BYTES;
}

/* Retires completed writes in issue order; returns true when <written> moved. */
static bool writes_retire(struct blob_writer *w)
{
    bool moved = false;
    /* Bounded by BLOB_WBUFS. */
    while (w->oldest != w->cur && w->bufs[w->oldest].state == BLOB_WBUF_DONE) {
        struct blob_wbuf *b = &w->bufs[w->oldest];
        w->written = b->end;
        w->quiet_failures = false;
        b->state = BLOB_WBUF_FREE;
        w->oldest = wnext(w->oldest);
        moved = true;
    }
    return moved;
}

/* Commits whose record is now in the file move on to their sync (or are done). */
static void pendings_written(struct blob_writer *w)
{
    while (!base_list_is_empty(&w->wait_write)) {
        struct blob_pending *p = BASE_CONTAINER_OF(w->wait_write.next, struct blob_pending, link);
        if (p->end > w->written) break;
        base_list_del(&p->link);
        if (store_of(w)->opts.sync == BLOB_SYNC_NONE) {
            p->done(p, 0);
        } else {
            base_list_add_tail(&w->wait_sync, &p->link);
        }
    }
}

/*
 * A disk operation that takes this long delays every commit behind it far past a request's
 * budget: counted, so an operator sees a stalling disk in the metrics.
 */
#define DISK_SLOW_NS (10 * BASE_NS_PER_MS)

/* Adds the time since <t0> to <ns>, and counts it in <slow> when it was slow. */
static void disk_timed(uint64_t t0, struct base_counter *ns, struct base_counter *slow)
{
    uint64_t took = base_clock_now_ns() - t0;
    base_counter_add(ns, took);
    if (took >= DISK_SLOW_NS) base_counter_inc(slow);
}

/*
 * Submits <req> on <a>, completing in <fn>(<ctx>): stamps the submission for disk_timed and
 * counts the op in flight, and a write or an fdatasync in writes or fsyncs. Returns 0, or
 * -errno when the op table is full (nothing counted).
 */
static int writer_submit(struct blob_writer *w, struct blob_aio *a, blob_aio_fn *fn, void *ctx,
                         const struct blob_io_req *req)
{
    a->fn = fn;
    a->ctx = ctx;
    a->t0 = base_clock_now_ns();
    int rc = blob_core_submit(w->bc, a, req);
    if (rc < 0) return rc;
    base_counter_inc(&w->bc->counters.io_in_flight);
    if (req->op == BLOB_IO_WRITE) base_counter_inc(&w->bc->counters.writes);
    if (req->op == BLOB_IO_FDATASYNC) base_counter_inc(&w->bc->counters.fsyncs);
    return 0;
}

static void write_done(struct blob_aio *a, int32_t res)
{
    struct blob_wbuf *b = a->ctx;
    struct blob_writer *w = b->w;
    struct blob_core *bc = w->bc;
    ASSERT(b->state == BLOB_WBUF_FLIGHT);
    if ((res == -EAGAIN || res == -EINTR) && b->retries < RETRIES_MAX) {
        /* O_DIRECT writes may bounce with -EAGAIN (a split bio, a full queue): nothing was
         * written, so the same write goes again (IO_URING_NOTES 1.9). */
        b->retries++;
        if (blob_core_submit(bc, &b->aio, &b->req) == 0) return;
    }
    ASSERT(w->flights > 0);
    w->flights--;
    b->state = BLOB_WBUF_DONE;
    disk_timed(a->t0, &bc->counters.write_ns, &bc->counters.write_slow);
    base_counter_dec(&bc->counters.io_in_flight);
    int err = blob_io_write_err(res, b->wlen);
    if (err < 0) {
        base_counter_inc(&bc->counters.write_errors);
        writer_fail(w, err);
        return;
    }
    base_counter_add(&bc->counters.bytes_stored, b->wlen);
    if (w->state == BLOB_W_FAILING) {
        writer_fail(w, w->err);
        return;
    }
    if (writes_retire(w) && w->seg) blob_segment_set_bytes(&store_of(w)->segs, w->seg, w->written);
    pendings_written(w);
    writer_kick(w);
    waiters_wake(w, 0);
}

/* True when a write from the current buffer may go: a buffer to move on to is free, and
 * the previous write does not share its first block (a padded write still in flight). */
static bool can_issue(const struct blob_writer *w)
{
    uint32_t prev = (w->cur + BLOB_WBUFS - 1) % BLOB_WBUFS;
    const struct blob_wbuf *p = &w->bufs[prev];
    if (w->bufs[wnext(w->cur)].state != BLOB_WBUF_FREE) return false;
    return !(p->state == BLOB_WBUF_FLIGHT && p->partial);
}

/*
 * Sends the current buffer's whole blocks, and with <tail> its partial last block too, then
 * moves filling to the next buffer. Returns true when a write went out.
 */
static bool writer_issue_write(struct blob_writer *w, bool tail)
{
    bool may = can_issue(w);
    ASSERT(may);
    struct blob_wbuf *b = wcur(w);
    uint32_t full = b->len & ~(BLOB_BLOCK_SIZE - 1);
    uint32_t keep = b->len - full;
    uint32_t wlen = tail ? (uint32_t)blob_align_block(b->len) : full;
    if (wlen == 0 || b->base + (tail ? b->len : full) <= w->flushed) return false;
    ASSERT(wlen <= w->buf_size);
    if (wlen > b->len) memset(b->mem + b->len, 0, wlen - b->len);
    b->req = (struct blob_io_req){
        .op = BLOB_IO_WRITE,
        .fd = w->wfd,
        .buf = b->mem,
        .len = wlen,
        .off = b->base,
    };
    b->retries = 0;
    if (writer_submit(w, &b->aio, write_done, b, &b->req) < 0) {
        return false; /* the op table is full: the next kick tries again */
    }
    w->flights++;
    b->state = BLOB_WBUF_FLIGHT;
    b->wlen = wlen;
    b->partial = tail && keep > 0;
    b->end = b->base + (tail ? b->len : full);
    w->flushed = b->end;
    /* The next buffer starts with the partial last block: written now or not, it is
     * written (again) from there. */
    struct blob_wbuf *n = &w->bufs[wnext(w->cur)];
    memcpy(n->mem, b->mem + full, keep);
    n->base = b->base + full;
    n->len = keep;
    n->state = BLOB_WBUF_FILL;
    w->cur = wnext(w->cur);
    return true;
}

static void sync_done(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    ASSERT(w->sync_busy);
    w->sync_busy = false;
    base_counter_dec(&w->bc->counters.io_in_flight);
    disk_timed(a->t0, &w->bc->counters.fsync_ns, &w->bc->counters.fsync_slow);
    if (res < 0) {
        base_counter_inc(&w->bc->counters.fsync_errors);
        pendings_finish(&w->syncing, res);
        writer_fail(w, res);
        return;
    }
    pendings_finish(&w->syncing, 0);
    writer_kick(w);
}

static void writer_issue_sync(struct blob_writer *w)
{
    ASSERT(!w->sync_busy);
    struct blob_io_req req = { .op = BLOB_IO_FDATASYNC, .fd = w->wfd };
    if (writer_submit(w, &w->sync_aio, sync_done, w, &req) < 0) return;
    w->sync_busy = true;
    w->want_sync = false;
    if (store_of(w)->opts.sync == BLOB_SYNC_ALWAYS) {
        /* One fdatasync per acknowledged write. */
        struct base_list *node = base_list_pop_head(&w->wait_sync);
        if (node) base_list_add_tail(&w->syncing, node);
        return;
    }
    struct base_list *node;
    while ((node = base_list_pop_head(&w->wait_sync)) != NULL) {
        base_list_add_tail(&w->syncing, node);
    }
}

/* ---- sealing ---- */

static void seal_finish(struct blob_writer *w);

static void seal_trimmed(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    /* Only space is at stake: a kernel before 6.9 (-EINVAL) keeps the blocks until eviction.
     * Once per seal at most, so not rate-limited. */
    if (res < 0 && res != -EINVAL) {
        LOG_WARN("segment %llu: its unused tail stays reserved: %s", (unsigned long long)w->seq,
                 base_err_str(res));
    }
    if (res == 0) blob_segment_set_reserved(w->seg, 0);
    seal_finish(w);
}

/*
 * The segment was reserved whole when it opened (fallocate); a segment sealed before it
 * filled (it fell behind, or a large record did not fit) gives the rest back, so the files'
 * blocks stay what the budget counts.
 */
static void seal_trim(struct blob_writer *w)
{
    struct blob_io_req req = { .op = BLOB_IO_TRUNCATE, .fd = w->wfd, .off = w->end };
    if (writer_submit(w, &w->ctl_aio, seal_trimmed, w, &req) < 0) seal_finish(w);
}

static void seal_synced(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    disk_timed(a->t0, &w->bc->counters.fsync_ns, &w->bc->counters.fsync_slow);
    if (res < 0) {
        base_counter_inc(&w->bc->counters.fsync_errors);
        writer_fail(w, res);
        return;
    }
    pendings_finish(&w->wait_sync, 0);
    seal_trim(w);
}

static void seal_footer_written(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    disk_timed(a->t0, &w->bc->counters.write_ns, &w->bc->counters.write_slow);
    free(w->footer_buf);
    w->footer_buf = NULL;
    int err = blob_io_write_err(res, w->ctl_len);
    if (err < 0) {
        base_counter_inc(&w->bc->counters.write_errors);
        writer_fail(w, err);
        return;
    }
    base_counter_add(&w->bc->counters.bytes_stored, w->ctl_len);
    struct blob_io_req req = { .op = BLOB_IO_FDATASYNC, .fd = w->wfd };
    if (writer_submit(w, &w->ctl_aio, seal_synced, w, &req) < 0) writer_fail(w, -EAGAIN);
}

/* Builds footer record + trailer in an aligned buffer; returns its length. */
static uint32_t seal_build(struct blob_writer *w, uint64_t footer_off, uint8_t **out)
{
    uint64_t payload = (uint64_t)w->foot_len * sizeof(struct blob_footer_entry);
    uint64_t len = blob_align_block(blob_record_size(payload) + sizeof(struct blob_seg_trailer));
    uint8_t *buf = aligned_alloc(BLOB_BLOCK_SIZE, len);
    ASSERT(buf); /* a footer is at most a few MiB; without it the segment cannot be sealed */
    memset(buf, 0, len);
    struct blob_record_header *h = (struct blob_record_header *)(void *)buf;
    if (payload > 0) memcpy(buf + sizeof(*h), w->foot, payload);
    blob_format_record_header(h, BLOB_RECORD_FOOTER, 0, buf + sizeof(*h), (uint32_t)payload, 0);
    struct blob_seg_trailer t;
    blob_format_trailer(&t, w->seq, footer_off, w->end, w->foot_len, footer_off + len);
    memcpy(buf + len - sizeof(t), &t, sizeof(t));
    *out = buf;
    return (uint32_t)len;
}

static void writer_seal_footer(struct blob_writer *w);

/*
 * The records must be durable before the footer that lists them is written: recovery trusts
 * a valid footer without reading the records, so a footer that survived a power cut while
 * the records it lists did not would index bytes that are not there.
 */
static void seal_records_synced(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    disk_timed(a->t0, &w->bc->counters.fsync_ns, &w->bc->counters.fsync_slow);
    if (res < 0) {
        base_counter_inc(&w->bc->counters.fsync_errors);
        writer_fail(w, res);
        return;
    }
    pendings_finish(&w->wait_sync, 0);
    writer_seal_footer(w);
}

static void writer_seal_sync_records(struct blob_writer *w)
{
    struct blob_io_req req = { .op = BLOB_IO_FDATASYNC, .fd = w->wfd };
    w->sealing_synced = true;
    if (writer_submit(w, &w->ctl_aio, seal_records_synced, w, &req) < 0) writer_fail(w, -EAGAIN);
}

static void writer_seal_footer(struct blob_writer *w)
{
    uint64_t footer_off = blob_align_block(w->end);
    uint32_t len = seal_build(w, footer_off, &w->footer_buf);
    struct blob_io_req req = {
        .op = BLOB_IO_WRITE,
        .fd = w->wfd,
        .buf = w->footer_buf,
        .len = len,
        .off = footer_off,
    };
    w->ctl_len = len;
    w->end = footer_off + len; /* nothing is appended after the footer */
    w->flushed = w->end;
    if (writer_submit(w, &w->ctl_aio, seal_footer_written, w, &req) < 0) {
        free(w->footer_buf);
        w->footer_buf = NULL;
        writer_fail(w, -EAGAIN);
    }
}

static void close_done(struct blob_aio *a, int32_t res)
{
    (void)res;
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    w->state = BLOB_W_NONE;
    w->wfd = -1;
    writer_kick(w);
    waiters_wake(w, 0);
}

/* Closes the write fd, then the writer has no segment (the next reservation opens one). */
static void writer_close_segment(struct blob_writer *w)
{
    struct blob_io_req req = { .op = BLOB_IO_CLOSE, .fd = w->wfd };
    w->seg = NULL; /* the table keeps its reference */
    w->foot_len = 0;
    if (writer_submit(w, &w->ctl_aio, close_done, w, &req) < 0) {
        /* No op slot: close(2) of a regular file does not touch the disk. */
        (void)store_of(w)->io->ops->close(store_of(w)->io, w->wfd);
        w->state = BLOB_W_NONE;
        w->wfd = -1;
    }
}

static void seal_finish(struct blob_writer *w)
{
    struct blob_store *s = store_of(w);
    blob_segment_set(&s->segs, w->seg, BLOB_SEG_SEALED, w->end);
    base_counter_inc(&w->bc->counters.segments_sealed);
    writer_close_segment(w);
    blob_store_changed(s);
}

/* ---- opening ---- */

static void open_step(struct blob_writer *w, int32_t res);

static void open_done(struct blob_aio *a, int32_t res)
{
    struct blob_writer *w = a->ctx;
    base_counter_dec(&w->bc->counters.io_in_flight);
    open_step(w, res);
}

static int open_submit(struct blob_writer *w, const struct blob_io_req *req)
{
    return writer_submit(w, &w->ctl_aio, open_done, w, req);
}

/*
 * The opening's reservation takes the disk from its fallocate, and the table counts it only
 * from open_ready, after the read fd and the folder's fsync: counted nowhere in between, it
 * came off the disk-bound budget, and a pass then evicted a segment more (update_budget).
 */
static void opening_count(struct blob_writer *w, bool on)
{
    if (w->opening_counted == on) return;
    w->opening_counted = on;
    struct blob_store *s = store_of(w);
    if (on) {
        atomic_fetch_add(&s->segs.opening_bytes, s->opts.segment_size);
    } else {
        atomic_fetch_sub(&s->segs.opening_bytes, s->opts.segment_size);
    }
}

static void open_failed(struct blob_writer *w, int err)
{
    struct blob_store *s = store_of(w);
    /* Every upload of the core fails while segments cannot be opened: say why, once a
     * second at most. */
    if (base_clock_every(&w->open_err_log_ns, BASE_NS_PER_S)) {
        const char *why = "";
        if (err == -EMFILE || err == -ENFILE) {
            why = "; fix: raise the open files limit (`ulimit -n`, systemd LimitNOFILE)";
        } else if (err == -ENOSPC) {
            why = " for a whole segment, even after an eviction pass: uploads are refused as a "
                  "full store (retry later) until the disk has room";
        }
        LOG_ERROR("cannot open segment %s: %s%s", w->name, base_err_str(err), why);
    }
    if (err == -EROFS) blob_store_note_read_only(s, true);
    opening_count(w, false);
    if (w->wfd >= 0) (void)s->io->ops->close(s->io, w->wfd);
    if (w->rfd >= 0) (void)s->io->ops->close(s->io, w->rfd);
    w->wfd = -1;
    w->rfd = -1;
    w->state = BLOB_W_NONE;
    /* Waiters hear of it now; with none, the next reservation does (once). */
    w->err = base_list_is_empty(&w->waiters) ? err : 0;
    waiters_wake(w, err);
}

/* Every buffer free, filling starts at buffer 0 at offset 0 (no write may be in flight). */
static void writer_reset_buffers(struct blob_writer *w)
{
    ASSERT(w->flights == 0);
    for (uint32_t i = 0; i < BLOB_WBUFS; i++) {
        w->bufs[i].state = BLOB_WBUF_FREE;
        w->bufs[i].len = 0;
        w->bufs[i].base = 0;
        w->bufs[i].partial = false;
    }
    w->cur = 0;
    w->oldest = 0;
    w->bufs[0].state = BLOB_WBUF_FILL;
}

static void open_ready(struct blob_writer *w)
{
    struct blob_store *s = store_of(w);
    w->seg = blob_segment_add(&s->segs, w->seq, w->rfd, 0, BLOB_SEG_ACTIVE);
    if (!w->seg) {
        open_failed(w, -ENOMEM);
        return;
    }
    w->rfd = -1; /* the table owns it now */
    blob_segment_set_reserved(w->seg, w->reserved ? s->opts.segment_size : 0);
    opening_count(w, false); /* after: a pass never finds it in neither */
    /* The header block is the first thing the next write sends. */
    struct blob_seg_header h;
    blob_format_seg_header(&h, w->seq, w->bc->index);
    writer_reset_buffers(w);
    struct blob_wbuf *b = wcur(w);
    memset(b->mem, 0, BLOB_SEG_HEADER_SIZE);
    memcpy(b->mem, &h, sizeof(h));
    b->len = BLOB_SEG_HEADER_SIZE;
    w->end = BLOB_SEG_HEADER_SIZE;
    w->sealing_synced = false;
    w->flushed = 0;
    w->written = 0;
    w->foot_len = 0;
    w->err = 0;
    w->state = BLOB_W_READY;
    base_counter_inc(&w->bc->counters.segments_created);
    blob_store_note_read_only(s, false); /* made, reserved and fsynced in the folder */
    blob_store_changed(s);
    waiters_wake(w, 0);
}

/*
 * The opening sequence, one step per completion: write fd (O_DIRECT, or buffered when the
 * file system refuses it), block reservation for the whole segment (appending O_DIRECT writes
 * into allocated blocks skip the allocator; a file system without it is fine; a full disk
 * waits for eviction: open_no_room), read fd, folder fsync (the new entry must be durable
 * before any commit in it is acknowledged).
 */
static void open_no_room(struct blob_writer *w);
static void open_room_poll(struct blob_writer *w);

static void open_step(struct blob_writer *w, int32_t res)
{
    ASSERT(w->state == BLOB_W_OPENING);
    struct blob_io_req req = { .op = BLOB_IO_OPEN, .name = w->name };
    switch (w->open_step) {
    case 0: /* start */
        req.flags = O_WRONLY | O_CREAT | O_EXCL | (w->direct ? O_DIRECT : 0);
        w->open_step = 1;
        break;
    case 1: /* the write fd */
        if (res == -EINVAL && w->direct) {
            w->direct = false; /* tmpfs and some file systems refuse O_DIRECT */
            req.flags = O_WRONLY | O_CREAT | O_EXCL;
            break;
        }
        if (res < 0) {
            open_failed(w, res);
            return;
        }
        w->wfd = res;
        req = (struct blob_io_req){ .op = BLOB_IO_FALLOCATE,
                                    .fd = w->wfd,
                                    .off = store_of(w)->opts.segment_size };
        w->open_step = 2;
        break;
    case 2: /* the reservation; but for a full disk, whatever came of it (the budget counts
             * what it took) */
        if (res == -ENOSPC) {
            open_no_room(w);
            return;
        }
        w->reserved = res == 0;
        if (w->reserved) opening_count(w, true);
        /* No atime updates on reads (see real_open): the server created the file, so the
         * kernel allows O_NOATIME. */
        req.flags = O_RDONLY | O_NOATIME;
        w->open_step = 3;
        break;
    case 3: /* the read fd */
        if (res < 0) {
            open_failed(w, res);
            return;
        }
        w->rfd = res;
        req = (struct blob_io_req){ .op = BLOB_IO_FSYNC_DIR };
        w->open_step = 4;
        break;
    case 5: /* a poll of the evictor while waiting for room */
        open_room_poll(w);
        return;
    default: /* the folder fsync */
        if (res < 0) {
            open_failed(w, res);
        } else {
            open_ready(w);
        }
        return;
    }
    if (open_submit(w, &req) < 0) open_failed(w, -EAGAIN);
}

static void writer_open(struct blob_writer *w)
{
    ASSERT(w->state == BLOB_W_NONE);
    struct blob_store *s = store_of(w);
    uint64_t seq = blob_segment_next_seq(&s->segs);
    if (seq == 0) {
        w->err = -ENOSPC;
        return;
    }
    w->seq = seq;
    blob_format_seg_name(seq, w->name, sizeof(w->name));
    w->state = BLOB_W_OPENING;
    w->wfd = -1;
    w->rfd = -1;
    w->direct = s->opts.direct_io && s->io->direct_ok;
    w->open_step = 0;
    w->room_waited = false;
    w->opening_counted = false;
    open_step(w, 0);
}

/* Gives the segment up: the file, empty, goes to the table as a segment that holds nothing,
 * which the evictor deletes at once (evict_empty), off the core. */
static void open_room_gone(struct blob_writer *w)
{
    struct blob_store *s = store_of(w);
    base_counter_inc(&w->bc->counters.segments_no_room);
    if (blob_segment_add(&s->segs, w->seq, w->wfd, 0, BLOB_SEG_ABANDONED)) {
        w->wfd = -1; /* the table's now */
        blob_store_changed(s);
    }
    open_failed(w, -ENOSPC);
}

/*
 * No room on the disk for the new segment (its reservation: -ENOSPC). The evictor keeps room
 * for every core's active segment, but as of its last pass: segments sealed since (it runs in
 * its own thread, and lags on a loaded machine) or another file filling the disk took it.
 * Opened anyway, the segment's first write failed: it was abandoned, counted and logged as a
 * disk error, and the uploads in it were refused after they had been taken. So the opening
 * wakes the evictor and waits for a pass that begins after this, then reserves again; with
 * still no room (or no pass within ROOM_POLLS_MAX polls) the segment is given up and the
 * uploads waiting for it are refused as a full store (-ENOSPC), which a retry passes once
 * eviction made room. While it waits, the core's other uploads wait for the segment too.
 */
static void open_no_room(struct blob_writer *w)
{
    struct blob_store *s = store_of(w);
    if (w->room_waited) {
        open_room_gone(w);
        return;
    }
    base_counter_inc(&w->bc->counters.segment_room_waits);
    base_counter_inc(&w->bc->counters.segment_room_waiting);
    w->room_waited = true;
    w->room_waiting = true;
    w->room_polls = 0;
    /* A pass under way now may have measured the disk before the segments that filled it. */
    w->room_pass = atomic_load(&s->evict_begun) + 1;
    blob_store_changed(s);
    open_room_poll(w);
}

/* The wait for the evictor's pass is over (ringcas_blob_segment_room_waiting). */
static void open_room_wait_end(struct blob_writer *w)
{
    if (!w->room_waiting) return;
    w->room_waiting = false;
    base_counter_dec(&w->bc->counters.segment_room_waiting);
}

/* The pass waited for has ended: reserve again; else poll once more, or give up. */
static void open_room_poll(struct blob_writer *w)
{
    struct blob_store *s = store_of(w);
    struct blob_io_req req;
    if (atomic_load(&s->evict_ended) >= w->room_pass) {
        open_room_wait_end(w);
        req = (struct blob_io_req){ .op = BLOB_IO_FALLOCATE,
                                    .fd = w->wfd,
                                    .off = s->opts.segment_size };
        w->open_step = 2;
    } else if (w->room_polls < ROOM_POLLS_MAX) {
        w->room_polls++;
        req = (struct blob_io_req){ .op = BLOB_IO_SLEEP, .off = ROOM_POLL_MS };
        w->open_step = 5;
    } else {
        open_room_wait_end(w);
        open_room_gone(w);
        return;
    }
    if (open_submit(w, &req) < 0) {
        open_room_wait_end(w);
        open_failed(w, -EAGAIN);
    }
}

/* ---- failure ---- */

static void writer_abandon(struct blob_writer *w, int err)
{
    struct blob_store *s = store_of(w);
    pendings_finish(&w->wait_write, err);
    pendings_finish(&w->wait_sync, err);
    bool syncing = !base_list_is_empty(&w->syncing);
    ASSERT(!syncing);
    base_counter_inc(&w->bc->counters.segments_abandoned);
    if (err == -EROFS) blob_store_note_read_only(s, true);
    /* A full disk fails every new segment's first write: one line until a write succeeds. */
    bool empty = w->written == 0;
    if (!empty || !w->quiet_failures) {
        LOG_WARN("segment %llu: a write or fsync failed (%s): abandoned with %llu bytes%s",
                 (unsigned long long)w->seq, base_err_str(err), (unsigned long long)w->written,
                 empty ? "; further empty ones are not logged until a write succeeds" : "");
    }
    w->quiet_failures = w->quiet_failures || empty;
    blob_core_segment_failed(w->bc, w->seq, err);
    /* What was acknowledged in it stays readable; recovery seals it from a scan. */
    blob_segment_set(&s->segs, w->seg, BLOB_SEG_ABANDONED, w->written);
    writer_reset_buffers(w);
    w->end = w->written;
    w->flushed = w->written;
    writer_close_segment(w);
    blob_store_changed(s);
}

static void writer_fail(struct blob_writer *w, int err)
{
    if (w->state != BLOB_W_FAILING) {
        w->state = BLOB_W_FAILING;
        w->err = err;
    }
    if (w->flights > 0 || w->sync_busy || blob_aio_is_busy(&w->ctl_aio)) {
        return; /* the other ops' completions come back here */
    }
    int e = w->err;
    w->err = 0; /* the next reservation opens a new segment; only open failures linger */
    writer_abandon(w, e);
}

/* ---- the flush policy ---- */

static void kick_task(struct ring_task *t)
{
    struct blob_writer *w = BASE_CONTAINER_OF(t, struct blob_writer, kick_task);
    writer_kick(w);
}

static bool has_unwritten(const struct blob_writer *w)
{
    return w->end > w->flushed;
}

/* A commit waits for bytes that no write covers yet. */
static bool commit_needs_write(const struct blob_writer *w)
{
    if (base_list_is_empty(&w->wait_write)) return false;
    const struct blob_pending *last =
        BASE_CONTAINER_OF(w->wait_write.prev, struct blob_pending, link);
    return last->end > w->flushed;
}

/* Sends what the policy says should go now: a commit's bytes with the partial block, room
 * for waiters, or a buffer half full. */
static void writer_flush_policy(struct blob_writer *w)
{
    bool sealing = w->state == BLOB_W_SEALING;
    bool tail = commit_needs_write(w) || sealing || w->want_sync;
    bool room = !base_list_is_empty(&w->waiters);
    /* Bounded by BLOB_WBUFS: each pass sends one buffer or stops. */
    for (uint32_t n = 0; n < BLOB_WBUFS && has_unwritten(w) && can_issue(w); n++) {
        uint32_t len = wcur(w)->len;
        if (!tail && !room && len < flush_bytes(w)) break;
        if (!writer_issue_write(w, tail)) break;
        room = false;
    }
}

static void writer_kick(struct blob_writer *w)
{
    if (w->state == BLOB_W_FAILING) {
        writer_fail(w, w->err);
        return;
    }
    if (w->state != BLOB_W_READY && w->state != BLOB_W_SEALING) return;
    writer_flush_policy(w);
    if (w->state == BLOB_W_SEALING) {
        bool quiet = w->flights == 0 && !w->sync_busy && !blob_aio_is_busy(&w->ctl_aio);
        if (quiet && !has_unwritten(w) && !w->sealing_synced) writer_seal_sync_records(w);
        return;
    }
    bool none = store_of(w)->opts.sync == BLOB_SYNC_NONE;
    bool syncable = !base_list_is_empty(&w->wait_sync) && !none;
    if (w->want_sync && w->written > 0 && w->flights == 0 && !has_unwritten(w)) {
        syncable = true; /* quiesce: one last fdatasync whatever the policy */
    }
    if (!w->sync_busy && syncable) writer_issue_sync(w);
}

/* ---- the API ---- */

int blob_writer_init(struct blob_writer *w, struct blob_core *bc, uint32_t buf_size)
{
    memset(w, 0, sizeof(*w));
    ASSERT(buf_size % BLOB_BLOCK_SIZE == 0);
    w->bc = bc;
    w->wfd = -1;
    w->rfd = -1;
    w->buf_size = buf_size;
    base_list_init(&w->wait_write);
    base_list_init(&w->wait_sync);
    base_list_init(&w->syncing);
    base_list_init(&w->waiters);
    ring_task_init(&w->kick_task, kick_task);
    for (uint32_t i = 0; i < BLOB_WBUFS; i++) {
        w->bufs[i].w = w;
        w->bufs[i].mem = aligned_alloc(BLOB_BLOCK_SIZE, buf_size);
        if (!w->bufs[i].mem) {
            for (uint32_t j = 0; j < i; j++) {
                free(w->bufs[j].mem);
            }
            return -ENOMEM;
        }
    }
    writer_reset_buffers(w);
    return 0;
}

void blob_writer_start(struct blob_writer *w)
{
    if (w->state == BLOB_W_NONE) writer_open(w);
}

void blob_writer_deinit(struct blob_writer *w)
{
    ASSERT(w->flights == 0 && !w->sync_busy);
    bool waiters = !base_list_is_empty(&w->waiters);
    bool pendings = !base_list_is_empty(&w->wait_write) || !base_list_is_empty(&w->syncing);
    ASSERT(!waiters);
    ASSERT(!pendings);
    struct blob_store *s = store_of(w);
    if (w->wfd >= 0) (void)s->io->ops->close(s->io, w->wfd);
    w->seg = NULL; /* the table keeps it ACTIVE: recovery seals it from a scan */
    ring_task_cancel(&w->kick_task);
    for (uint32_t i = 0; i < BLOB_WBUFS; i++) {
        free(w->bufs[i].mem);
    }
    free(w->foot);
    free(w->footer_buf);
}

static bool segment_has_room(const struct blob_writer *w, uint64_t len, bool commit)
{
    uint64_t entries = (uint64_t)w->foot_len + (commit ? 1 : 0);
    return w->end + blob_align8(len) + footer_room(entries) <= store_of(w)->opts.segment_size;
}

/*
 * Segments are evicted in the order they were opened, so what goes into the active segment is
 * ordered by when the segment opened, not when it was written. A core that writes much less
 * than the others (one that serves reads and refresh copies while another takes the uploads)
 * would keep a segment opened long ago, and what it wrote lately would go first once the
 * segment is sealed. So once the store has opened more than 2 x cores + 1 segments since this
 * one opened, it is sealed before anything more goes in: what a core writes is never ordered
 * more than that many segments early. Cores that write evenly open about one each while one
 * fills, and never reach it.
 */
static bool segment_is_stale(const struct blob_writer *w)
{
    const struct blob_store *s = store_of(w);
    uint64_t behind = atomic_load(&s->segs.next_seq) - 1 - w->seq;
    return behind > 2ULL * s->opts.cores_max + 1;
}

uint8_t *blob_writer_reserve(struct blob_writer *w, uint32_t len, bool commit, uint64_t *off,
                             uint64_t *seq, int *err)
{
    ASSERT((uint64_t)len + 2ULL * BLOB_BLOCK_SIZE <= (uint64_t)w->buf_size);
    *err = -EINPROGRESS;
    if (w->state == BLOB_W_NONE) {
        if (w->err < 0 && base_list_is_empty(&w->waiters)) {
            /* The last open failed: report it once, retry on the next call. */
            *err = w->err;
            w->err = 0;
            return NULL;
        }
        writer_open(w);
        if (w->state == BLOB_W_NONE) {
            *err = w->err;
            return NULL;
        }
    }
    if (w->state != BLOB_W_READY) return NULL;
    if (!segment_has_room(w, len, commit) || segment_is_stale(w)) {
        w->state = BLOB_W_SEALING;
        writer_kick(w);
        return NULL;
    }
    if (wcur(w)->len + blob_align8(len) + BLOB_BLOCK_SIZE > w->buf_size) {
        if (can_issue(w)) (void)writer_issue_write(w, false);
        if (wcur(w)->len + blob_align8(len) + BLOB_BLOCK_SIZE > w->buf_size) return NULL;
    }
    *off = w->end;
    *seq = w->seq;
    return wcur(w)->mem + wcur(w)->len;
}

void blob_writer_commit(struct blob_writer *w, uint32_t used)
{
    ASSERT(w->state == BLOB_W_READY);
    struct blob_wbuf *b = wcur(w);
    uint32_t n = (uint32_t)blob_align8(used);
    memset(b->mem + b->len + used, 0, n - used);
    b->len += n;
    w->end += n;
    ASSERT(b->base + b->len == w->end);
    if (b->len >= flush_bytes(w)) writer_kick(w);
}

void blob_writer_wait(struct blob_writer *w, struct blob_waiter *wt)
{
    bool queued = base_list_is_linked(&wt->link);
    ASSERT(!queued);
    base_list_add_tail(&w->waiters, &wt->link);
    base_counter_inc(&w->bc->counters.writer_waiters);
    blob_core_defer(w->bc, &w->kick_task);
}

void blob_writer_unwait(struct blob_writer *w, struct blob_waiter *wt)
{
    if (!base_list_is_linked(&wt->link)) return;
    base_list_del(&wt->link);
    base_counter_dec(&w->bc->counters.writer_waiters);
}

int blob_writer_add_footer(struct blob_writer *w, const struct blob_footer_entry *e)
{
    if (w->foot_len == w->foot_size) {
        uint32_t size = w->foot_size ? w->foot_size * 2 : 64;
        struct blob_footer_entry *f = realloc(w->foot, size * sizeof(*f));
        if (!f) return -ENOMEM;
        w->foot = f;
        w->foot_size = size;
    }
    w->foot[w->foot_len++] = *e;
    return 0;
}

void blob_writer_add_pending(struct blob_writer *w, struct blob_pending *p)
{
    ASSERT(w->state == BLOB_W_READY);
    ASSERT(p->end <= w->end);
    base_list_add_tail(&w->wait_write, &p->link);
    blob_core_defer(w->bc, &w->kick_task);
}

void blob_writer_flush(struct blob_writer *w)
{
    w->want_sync = true;
    writer_kick(w);
}

bool blob_writer_is_idle(const struct blob_writer *w)
{
    if (w->flights > 0 || w->sync_busy || w->state == BLOB_W_OPENING) return false;
    if (w->state == BLOB_W_SEALING || w->state == BLOB_W_FAILING) return false;
    if (base_list_is_linked(&w->kick_task.link)) return false;
    return base_list_is_empty(&w->wait_write) && base_list_is_empty(&w->wait_sync) &&
           base_list_is_empty(&w->syncing) && base_list_is_empty(&w->waiters);
}
