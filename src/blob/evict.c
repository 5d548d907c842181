/*
 * Eviction: while the store is over its budget (max_size less one segment per core, so every
 * active segment can still fill), the oldest sealed segment is deleted; an abandoned segment
 * that holds no byte (a full disk refused its first write) is deleted at once. Lookups miss it at
 * once (its liveness is cleared first); its index entries are removed from its footer (or a scan,
 * for an abandoned one), only where they still point into it, so a blob refreshed to the head
 * survives; then the file is unlinked. Readers and refresh queues holding it keep their fd until
 * they finish, and until then its bytes are on disk (blob_store_used): where the disk sets the
 * budget a pass counts them and evicts that much more, so what is on disk stays under it;
 * where --max-size does, up to a quarter of the budget of them are freed soon (held_soon).
 *
 * Runs in the evictor thread (or inline in tests), never on a core: the blocking reads and the
 * unlink stay off the serving path.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "blob/internal.h"

struct evict_ctx {
    struct blob_store *s; /* the store */
    uint32_t seg32;       /* segment being evicted */
    uint64_t removed;     /* entries removed */
};

static void evict_entry(void *ctx, const struct blob_footer_entry *e)
{
    struct evict_ctx *c = ctx;
    struct blob_key k = { .kind = e->kind, .digest_fn = e->digest_fn, .size = e->size };
    memcpy(k.hash, e->hash, BLOB_HASH_SIZE);
    if (blob_index_remove_at(c->s->index, &k, c->seg32, e->off8)) c->removed++;
}

uint64_t blob_evict_segment(struct blob_store *s, struct blob_seg *seg)
{
    struct evict_ctx c = { .s = s, .seg32 = (uint32_t)seg->seq };
    struct blob_visit v = { .io = s->io,
                            .fd = seg->fd,
                            .seq = seg->seq,
                            .size = atomic_load(&seg->bytes),
                            .fn = evict_entry,
                            .ctx = &c };
    int rc = blob_recover_visit(&v);
    if (rc < 0) {
        LOG_WARN("evicting segment %llu: %s; its entries go when looked up",
                 (unsigned long long)seg->seq, base_err_str(rc));
    }
    return c.removed;
}

/*
 * Deletes the abandoned segments that hold nothing: on a full disk every new segment's first
 * write fails, and kept, each would hold a file, an fd and a mapping, one more per refused
 * upload, until the segment table was full and refused new segments after space came back.
 */
static void evict_empty(struct blob_store *s)
{
    struct blob_seg *seg;
    /* Bounded by the number of segments. */
    while ((seg = blob_segment_take_empty(&s->segs)) != NULL) {
        char name[32];
        blob_format_seg_name(seg->seq, name, sizeof(name));
        int rc = s->io->ops->unlink(s->io, name);
        if (rc < 0) LOG_WARN("unlink %s: %s", name, base_err_str(rc));
        blob_segment_put(&s->segs, seg);
    }
}

/*
 * What the log says of the disk-bound budget: when the disk first sets it, each fall an
 * eighth below the level last said, and when --max-size sets it again. Room that comes back
 * moves that level up (or, at --max-size, is said) only once the budget has stayed above it
 * for BUDGET_REARM_NS; a fall past the level said is said at once, however soon. Said at
 * once, a budget that dips and comes back at every pass was said at every pass: on XFS a
 * deleted segment's blocks are free a moment after its file is closed (the kernel frees them
 * in a worker), and a pass that measured in that moment saw them neither in the segments nor
 * free (settle() and the order in blob_store_evict now keep most passes out of it). A soak on a 336
 * MiB XFS under load, with no other file on the disk, logged "has less room" 25 times a minute with
 * --max-size 2GiB, and with --max-size 300MiB (the manifest's 90% of the volume) "holds less than
 * --max-size" and "has room for --max-size again" each twice a second.
 */
#define BUDGET_REARM_NS (60 * BASE_NS_PER_S)

/* True once the budget has stayed above the level said for BUDGET_REARM_NS. */
static bool budget_stayed_up(struct blob_store *s)
{
    uint64_t now = base_clock_now_ns();
    uint64_t up = atomic_load(&s->budget_up_ns);
    if (up == 0) {
        atomic_store(&s->budget_up_ns, now);
        return false;
    }
    return now - up >= BUDGET_REARM_NS;
}

static void budget_say(struct blob_store *s, uint64_t budget, uint64_t avail)
{
    uint64_t max_size = s->opts.max_size;
    bool bound = budget < max_size;
    bool said_bound = atomic_load(&s->budget_bound_said);
    uint64_t said = said_bound ? atomic_load(&s->budget_said) : max_size;
    uint64_t segs = atomic_load(&s->segs.disk_bytes);
    if (budget <= said) atomic_store(&s->budget_up_ns, 0);
    if (bound && !said_bound) {
        atomic_store(&s->budget_bound_said, true);
        atomic_store(&s->budget_said, budget);
        LOG_WARN("the file system of %s holds less than --max-size (%llu MiB): the store keeps "
                 "under %llu MiB (%llu MiB in segments, %llu MiB free) and evicts to stay there",
                 s->dir, (unsigned long long)(max_size >> 20), (unsigned long long)(budget >> 20),
                 (unsigned long long)(segs >> 20), (unsigned long long)(avail >> 20));
    } else if (bound && budget < said - said / 8) {
        /* Something else is filling the file system: each further eighth lost is said, since
         * the store evicts blobs for it (the first warning alone let another file take most of
         * the store without a word). */
        atomic_store(&s->budget_said, budget);
        LOG_WARN("the file system of %s has less room: the budget fell from %llu MiB to %llu MiB "
                 "(%llu MiB in segments, %llu MiB free), and the store evicts to stay under it",
                 s->dir, (unsigned long long)(said >> 20), (unsigned long long)(budget >> 20),
                 (unsigned long long)(segs >> 20), (unsigned long long)(avail >> 20));
    } else if (said_bound && budget > said && budget_stayed_up(s)) {
        atomic_store(&s->budget_up_ns, 0);
        if (bound) {
            atomic_store(&s->budget_said, budget); /* a fall is measured from here */
        } else {
            atomic_store(&s->budget_bound_said, false);
            LOG_INFO("the file system of %s has room for --max-size (%llu MiB) again", s->dir,
                     (unsigned long long)(max_size >> 20));
        }
    }
}

/*
 * Sets the budget: --max-size, or less when the folder's file system cannot hold that much:
 * what the segments hold now plus what is free, less 1/64 of the file system for whatever
 * else writes there. A budget past the disk would otherwise mean a full disk and every upload
 * refused, for good, instead of eviction. Files that eviction unlinked but someone still
 * holds are not free, and count with the segments (blob_store_used), as do those whose last
 * holder let go, which the pass closes after it measures (closing_bytes).
 */
static void update_budget(struct blob_store *s)
{
    uint64_t avail = 0;
    uint64_t total = 0;
    uint64_t budget = s->opts.max_size;
    uint64_t ceiling = s->opts.max_size;
    s->room_last = UINT64_MAX; /* no size known: the disk never sets the budget */
    s->buried_bytes = 0;       /* what is closed from now on was counted as the store's */
    int rc = s->io->ops->space ? s->io->ops->space(s->io, &avail, &total) : -ENOTSUP;
    if (rc == 0) {
        /* The active segments' reserved tails are not free, nor in the segments' bytes: left
         * out, they came off the budget, and the limit then took the active segments' room
         * off again (a segment per core less kept than the disk holds). */
        /* The openings before the table: one that goes into the table between the two
         * reads is counted twice, never not at all. */
        uint64_t opening = atomic_load(&s->segs.opening_bytes);
        uint64_t disk = blob_store_used(s) + atomic_load(&s->segs.closing_bytes) + opening +
                        blob_segment_unwritten(&s->segs);
        uint64_t margin = total / 64;
        uint64_t room = disk + avail > margin ? disk + avail - margin : 0;
        s->room_last = room;
        if (room < budget) budget = room;
        /* What the file system could give the store if it were all ours: other files come
         * and go (they set the budget, and a full disk is a retry later), its size does not. */
        uint64_t whole = total > margin ? total - margin : 0;
        if (whole < ceiling) ceiling = whole;
    } else if (rc != -ENOTSUP) {
        LOG_WARN("cannot tell the free space of %s: %s; the budget stays --max-size", s->dir,
                 base_err_str(rc));
    }
    atomic_store(&s->ceiling, ceiling);
    atomic_store(&s->budget, budget);
    bool full = blob_store_limit(s) == 0;
    if (full && !atomic_exchange(&s->no_room, true)) {
        LOG_WARN("the budget (%llu MiB) leaves no room beside the active segments (%u cores x "
                 "%llu MiB): eviction cannot make room and uploads are refused until the disk "
                 "has more; a smaller --segment-size helps",
                 (unsigned long long)(budget >> 20), s->opts.cores_max,
                 (unsigned long long)(s->opts.segment_size >> 20));
    } else if (!full) {
        atomic_store(&s->no_room, false);
    }
    budget_say(s, budget, avail);
}

/*
 * Someone deleted the data folder (rm -rf of a volume being reused, a cleanup job): the
 * segments open stay readable and the active ones writable, but no new segment can be made
 * and a restart finds nothing. It is said once, loudly, and /readyz turns 503 so that an
 * orchestrator replaces the node rather than sending it traffic it will fail. A file system
 * remounted read-only (by hand, or by the kernel after an error) fails every upload in the
 * same way, and /readyz says so too; this pass is also what finds it writable again, since
 * an unready node gets no upload that could.
 */
static void check_folder(struct blob_store *s)
{
    if (atomic_load(&s->folder_removed)) return;
    if (s->io->ops->folder_writable) {
        blob_store_note_read_only(s, s->io->ops->folder_writable(s->io) == -EROFS);
    }
    if (!s->io->ops->folder_check) return;
    int rc = s->io->ops->folder_check(s->io);
    if (rc == -ENOENT) {
        atomic_store(&s->folder_removed, true);
        LOG_ERROR("the data folder %s was removed: what is open stays readable, but no new "
                  "segment can be made and a restart starts empty; /readyz answers 503. "
                  "Restart ringcas on a data folder",
                  s->dir);
    } else if (rc < 0) {
        LOG_WARN("cannot check the data folder %s: %s", s->dir, base_err_str(rc));
    }
}

bool blob_store_folder_removed(const struct blob_store *s)
{
    return atomic_load(&s->folder_removed);
}

bool blob_store_folder_read_only(const struct blob_store *s)
{
    return atomic_load(&s->folder_read_only);
}

void blob_store_note_read_only(struct blob_store *s, bool read_only)
{
    if (atomic_exchange(&s->folder_read_only, read_only) == read_only) return;
    if (read_only) {
        LOG_ERROR("the file system of %s is read-only (mounted so, or remounted read-only after "
                  "a disk or file system error: see the kernel log): nothing can be stored, "
                  "uploads are refused and reads go on; /readyz answers 503 until it is "
                  "writable again (repair it, then remount it read-write or restart on a "
                  "good volume)",
                  s->dir);
    } else {
        LOG_INFO("the file system of %s is writable again: uploads are taken", s->dir);
    }
}

uint64_t blob_store_used(const struct blob_store *s)
{
    return atomic_load(&s->segs.disk_bytes) + atomic_load(&s->segs.held_bytes);
}

/*
 * How much more than --max-size the disk had room for when the pass last measured it
 * (room_last): UINT64_MAX when its size is unknown, 0 where the disk could set the budget.
 * Evictor only.
 */
static uint64_t room_past_max(const struct blob_store *s)
{
    if (s->room_last == UINT64_MAX) return UINT64_MAX;
    return s->room_last > s->opts.max_size ? s->room_last - s->opts.max_size : 0;
}

/*
 * Of <held>, the bytes a pass counts as freed soon: evicted segments that only wait for their
 * holders (open reads, refresh copies' pins) free their files when those let go, and a pass
 * that counted them killed the next oldest segment for each, which freed nothing more in the
 * end (a soak: 5 segments, 61 blobs, for an overshoot of 8.7 MB). Only where --max-size sets
 * the budget with room past it on the disk for them: where the disk could set it, the held
 * files really fill it, and they count as before. At most a quarter of the budget, the bound
 * on what refresh pins hold, so the files on disk pass --max-size by no more than that (the
 * disk has the room); what readers hold past it counts as before. Evictor only.
 */
static uint64_t held_soon(const struct blob_store *s, uint64_t held)
{
    uint64_t quarter = s->opts.max_size / 4; /* the budget is --max-size wherever past > 0 */
    uint64_t past = room_past_max(s);
    uint64_t soon = held < quarter ? held : quarter;
    return soon < past ? soon : past;
}

/* What a pass holds against the limit: the store's bytes less those freed soon. Read in
 * blob_store_used's order, and the held bytes once, so it never reads less than the live
 * segments hold. */
static uint64_t pass_used(const struct blob_store *s)
{
    uint64_t disk = atomic_load(&s->segs.disk_bytes);
    uint64_t held = atomic_load(&s->segs.held_bytes);
    return disk + held - held_soon(s, held);
}

/*
 * Waits until opts.evict_settle_ms after the last pass that closed segment files. The blocks of
 * a closed file are free a moment later on XFS (its inode's inactivation is queued to a
 * worker: 2-4 ms measured on a loop-mounted XFS), and under load the evictor runs passes back
 * to back (a kick per sealed or new segment): a pass right after one that closed the files
 * it evicted measured them neither free nor the store's, and evicted a segment more. The
 * evictor's own thread waits; no core does. Only where the disk could set the budget: on a
 * disk with room for --max-size past the bytes closed, a dip changes nothing, and there
 * passes back to back are what keeps a small store up with its uploads (a 1 MiB store took
 * 24 uploads of 60 KB in a row, and with every pass waiting refused them as full).
 */
static void settle(struct blob_store *s)
{
    uint64_t settle_ns = (uint64_t)s->opts.evict_settle_ms * BASE_NS_PER_MS;
    if (settle_ns == 0 || s->buried_bytes == 0) return;
    /* Measured without them, the room would still pass --max-size: the budget is the same. */
    if (room_past_max(s) >= s->buried_bytes) return;
    uint64_t since = base_clock_now_ns() - s->buried_ns;
    if (since >= settle_ns) return;
    const struct timespec ts = base_clock_timespec(settle_ns - since);
    (void)nanosleep(&ts, NULL);
}

/* Closes the graveyard's files, and notes when and how much for settle(). */
static void bury(struct blob_store *s)
{
    uint64_t bytes = blob_segment_bury(&s->segs, s->io);
    if (bytes == 0) return;
    s->buried_ns = base_clock_now_ns();
    s->buried_bytes += bytes;
}

uint32_t blob_store_evict(struct blob_store *s)
{
    uint32_t n = 0;
    atomic_fetch_add(&s->evict_begun, 1);
    /* The disk is measured before the files whose last holder went since the last pass are
     * closed, with their bytes counted as the store's: a file's blocks are free only a moment
     * after its last close on some file systems (XFS frees them in a worker), and measured
     * right after the close they were neither free nor the store's. The budget dipped by
     * them and the pass evicted that much more: on a 336 MiB XFS under load, 308 MiB, then
     * 245-266 MiB about once a second. */
    settle(s);
    check_folder(s);
    update_budget(s);
    bury(s);
    evict_empty(s);
    uint64_t limit = blob_store_limit(s);
    /* Bounded by the number of segments: a segment still held after its kill keeps counting
     * past what held_soon allows, and the next oldest goes in its place. */
    while (pass_used(s) > limit) {
        struct blob_seg *seg = blob_segment_take_oldest(&s->segs);
        if (!seg) break;
        uint64_t removed = blob_evict_segment(s, seg);
        char name[32];
        blob_format_seg_name(seg->seq, name, sizeof(name));
        int rc = s->io->ops->unlink(s->io, name);
        if (rc < 0) LOG_WARN("unlink %s: %s", name, base_err_str(rc));
        atomic_fetch_add(&s->evicted_segments, 1);
        atomic_fetch_add(&s->evicted_blobs, removed);
        blob_segment_put(&s->segs, seg);
        n++;
    }
    bury(s);
    /* The cold part: what would be evicted if the store grew by a quarter of its budget. */
    uint64_t disk = pass_used(s);
    uint64_t grow = blob_store_budget(s) / 4;
    blob_segment_update_cold(&s->segs, disk + grow > limit ? disk + grow - limit : 0);
    atomic_fetch_add(&s->evict_ended, 1);
    return n;
}
