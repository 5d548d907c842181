/*
 * What the files of src/blob share: the store, the per-core engine, the shared segment
 * table, the per-core segment writer, uploads, readers. Only src/blob and its tests include
 * this header.
 *
 * Locking (the only shared state is the index and the segment table):
 * - the index has one mutex per stripe (index.c);
 * - the segment table has one mutex for its slots, states and the graveyard; a segment's
 *   liveness is also published in an atomic array so lookups read it without the lock;
 * - everything else (writers, uploads, readers, refreshes) belongs to one core and is touched
 *   on that core's thread only; the evictor thread touches only the index and the table.
 */
#ifndef RINGCAS_BLOB_INTERNAL_H
#define RINGCAS_BLOB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/list.h"
#include "blob/chunk.h"
#include "blob/digest.h"
#include "blob/format.h"
#include "blob/index.h"
#include "blob/io.h"
#include "blob/pool.h"
#include "blob/store.h"
#include "ring/core.h"

/* ---- the shared segment table (segment.c) ---- */

enum blob_seg_state {
    BLOB_SEG_ACTIVE = 1,    /* a core appends to it */
    BLOB_SEG_SEALED = 2,    /* footer and trailer written */
    BLOB_SEG_ABANDONED = 3, /* a write or fsync failed: kept for what was acknowledged */
    BLOB_SEG_DEAD = 4,      /* evicted or dropped: unlinked, waiting for its last reference */
};

/*
 * A segment's struct is type-stable: once allocated it is only ever reused for another
 * segment (from the table's spare list), never freed before the table, so that
 * blob_segment_get can take a reference without the lock (see there). A pointer kept without
 * a reference (the writer's to its active segment, which is never evicted) is valid only
 * while that segment lives.
 */
struct blob_seg {
    _Atomic uint64_t seq;      /* store-wide number; read without the lock by blob_segment_get */
    int fd;                    /* buffered read-only fd, closed with the last reference */
    const uint8_t *map;        /* the file mapped read-only (map_len bytes), or NULL */
    _Atomic uint64_t bytes;    /* bytes on disk */
    _Atomic uint64_t reserved; /* blocks fallocate reserved (the file takes the larger of this
                                * and <bytes>); 0 once the seal gave the unused tail back */
    _Atomic uint32_t refs;     /* the table's reference + readers' + refresh queues' pins */
    uint32_t pins;             /* cores whose refresh queue pins it, under the table lock */
    uint8_t state;             /* enum blob_seg_state, under the table lock */
    struct base_list link;     /* graveyard or spare list link once dead and unreferenced */
    struct base_list pin_link; /* on the table's pinned list while pins > 0, under its lock */
};

struct blob_segs {
    pthread_mutex_t lock;              /* writes of slots, states, graveyard, spares, next_seq */
    _Atomic(struct blob_seg *) *slots; /* by seq & (cap - 1); read without the lock */
    _Atomic uint64_t *alive;           /* seq of the live segment in each slot, 0 when none */
    uint32_t cap;                      /* power of two */
    uint32_t count;                    /* live segments */
    _Atomic uint64_t next_seq;         /* next seq to hand out; written under the lock */
    _Atomic uint64_t disk_bytes;       /* bytes of every live segment */
    _Atomic uint64_t held_bytes;       /* bytes of dead segments still referenced: unlinked,
                                        * their files stay on disk until the last reference */
    _Atomic uint64_t closing_bytes;    /* bytes of the graveyard's segments: no longer the
                                        * store's to count, still on disk until buried */
    _Atomic uint64_t opening_bytes;    /* reservations of segments being opened, not yet in
                                        * the table (writer.c opening_count) */
    uint32_t pinned;                   /* segments pinned by refresh queues (pins > 0) */
    struct base_list pinned_list;      /* those segments, dead or alive (pin_link) */
    _Atomic uint64_t cold_below;       /* segments with a lower seq are in the cold (oldest) part */
    struct base_list graveyard;        /* dead segments whose fd waits to be closed off the cores */
    struct base_list spares;           /* buried segments' structs, for the next add */
    uint64_t map_len;  /* bytes of each segment to map for reads in place; 0: none */
    uint64_t map_page; /* the page size mincore(2) reports in */
    bool map_trust;    /* tests: every page counts as cached (no mincore) */
};

MUST_CHECK int blob_segment_table_init(struct blob_segs *t, uint32_t cap);
/* Closes every fd (blocking) and frees the table. */
void blob_segment_table_deinit(struct blob_segs *t, struct blob_io *io);
/* Hands out the next seq whose slot is free; 0 when the table is full. */
uint64_t blob_segment_next_seq(struct blob_segs *t);
/* Raises next_seq past <seq> (recovery). */
void blob_segment_seen_seq(struct blob_segs *t, uint64_t seq);
/* Adds a live segment (the table holds one reference); returns it or NULL (no memory/slot). */
struct blob_seg *blob_segment_add(struct blob_segs *t, uint64_t seq, int fd, uint64_t bytes,
                                  enum blob_seg_state state);
/* True when segment <seg32> (low 32 bits of a seq) is live. Lock-free; any thread. */
bool blob_segment_is_alive(struct blob_segs *t, uint32_t seg32);
/* Takes a reference to live segment <seg32>, or NULL. Any thread. */
struct blob_seg *blob_segment_get(struct blob_segs *t, uint32_t seg32);
/*
 * Takes a reference to segment <seg32> while a refresh queue pins it, alive or dead (evicted
 * after its keys were queued: its file stays open until the pins go), or NULL. Any thread.
 */
struct blob_seg *blob_segment_get_pinned(struct blob_segs *t, uint32_t seg32);
/* Drops a reference; the last one of a dead segment moves it to the graveyard. */
void blob_segment_put(struct blob_segs *t, struct blob_seg *seg);
/*
 * Pins <seg> for a core's refresh queue, once per core: the caller holds a reference, which
 * it keeps until blob_segment_unpin. True when it did; false when <seg> is pinned by no core
 * yet and <max> segments are pinned already. Any thread.
 */
MUST_CHECK bool blob_segment_pin(struct blob_segs *t, struct blob_seg *seg, uint32_t max);
/* Gives back a pin taken by blob_segment_pin. Any thread. */
void blob_segment_unpin(struct blob_segs *t, struct blob_seg *seg);
/* Segments pinned by refresh queues now. Any thread. */
uint32_t blob_segment_pinned(struct blob_segs *t);
/* Sets the state of a live segment and its size. */
void blob_segment_set(struct blob_segs *t, struct blob_seg *seg, enum blob_seg_state state,
                      uint64_t bytes);
/* Updates a live segment's size. */
void blob_segment_set_bytes(struct blob_segs *t, struct blob_seg *seg, uint64_t bytes);
/* Records the blocks fallocate reserved for <seg> (0: none, or given back by the seal). */
void blob_segment_set_reserved(struct blob_seg *seg, uint64_t reserved);
/*
 * Blocks the live segments' files take past their bytes: the unwritten tail of a segment
 * reserved whole when it opened (the active ones; sealed ones on a kernel that cannot give it
 * back). Neither free on the disk nor in disk_bytes. Takes the lock; the evictor's.
 */
uint64_t blob_segment_unwritten(struct blob_segs *t);
/*
 * Picks the oldest sealed or abandoned segment, marks it dead (lookups miss at once) and
 * returns it with a reference, or NULL.
 */
struct blob_seg *blob_segment_take_oldest(struct blob_segs *t);
/*
 * Picks an abandoned segment that holds no byte (its first write failed: nothing in it was
 * acknowledged), marks it dead and returns it with a reference, or NULL.
 */
struct blob_seg *blob_segment_take_empty(struct blob_segs *t);
/*
 * Marks a live segment dead (a corrupt or unreadable one) and drops the table's reference.
 * The caller holds a reference of its own: once buried, the struct is reused for a later
 * segment, which a second kill through a stale pointer would kill instead.
 */
void blob_segment_kill(struct blob_segs *t, struct blob_seg *seg);

/* One more reference to <seg>, which the caller already holds one of (it may be dead). */
void blob_segment_ref(struct blob_seg *seg);
/*
 * Maps every segment added from now on (<len> bytes of it, read-only, shared) so that records
 * in the page cache can be read in place (blob_segment_mapped). Before the first add.
 */
void blob_segment_table_map(struct blob_segs *t, uint64_t len);
/*
 * <len> bytes at <off> of <seg>'s mapping when every page of them is in the page cache (the
 * reader checks them in place and hands them out: no disk read and no copy), else NULL: not
 * mapped, outside the mapping, or some page would have to be read from the disk, which a
 * core must not wait for. Core thread; one mincore(2) per 128 pages.
 */
const uint8_t *blob_segment_mapped(const struct blob_segs *t, const struct blob_seg *seg,
                                   uint64_t off, uint32_t len);
/* Tests only: blob_segment_mapped skips mincore, as if every page were cached, so a read in
 * place can meet a page that is not there (the SIGBUS path). */
void blob_segment_table_trust_cache(struct blob_segs *t);

/*
 * Reads through a segment's mapping that may meet a page the kernel cannot read back (a disk
 * error after the page left the page cache), which raises SIGBUS: blob_map_guarded runs
 * <fn>(<arg>) and returns its result, or -EIO when such a page was met. Outside a guarded
 * read the SIGBUS handler stops the process with a message. blob_map_guard_install installs
 * the handler (once; blob_segment_table_map does). Core thread; not nested.
 */
typedef int blob_map_fn(void *arg);
void blob_map_guard_install(void);
MUST_CHECK int blob_map_guarded(blob_map_fn *fn, void *arg);
/* memcpy from a mapping, guarded: 0 or -EIO. */
MUST_CHECK int blob_map_copy(void *dst, const void *src, size_t n);

/* Closes the fds of the graveyard (blocking; off the cores): the bytes of their segments. */
uint64_t blob_segment_bury(struct blob_segs *t, struct blob_io *io);
/* Recomputes cold_below so that the oldest <cold_bytes> of sealed data count as cold. */
void blob_segment_update_cold(struct blob_segs *t, uint64_t cold_bytes);

/* ---- the store (store.c) ---- */

/*
 * Keys waiting for a refresh copy or copying, store-wide, and where each copy reads its key
 * (refresh.c): every core's lookups find a key there once eviction has taken its segment,
 * until its copy lands. Fixed: BLOB_REFRESH_KEYS entries in buckets, a lock per stripe.
 */
#define BLOB_REFRESH_KEYS    (1U << 16) /* entries, store-wide */
#define BLOB_REFRESH_STRIPES 64U        /* locks */

struct blob_refresh_entry {
    struct blob_key key;           /* at its real size */
    struct blob_index_value v;     /* where its copy reads it (pinned by <owner>) */
    const struct blob_core *owner; /* the core whose queue holds it; NULL: a free entry */
};

struct blob_refresh_table {
    struct blob_refresh_entry *entries;          /* BLOB_REFRESH_KEYS */
    _Atomic uint32_t count;                      /* entries used: lookups skip an empty table */
    pthread_mutex_t locks[BLOB_REFRESH_STRIPES]; /* a bucket's, by its number */
};

/*
 * The <i>th (0 or 1) of <k>'s two buckets among <buckets>, from the 4 bytes of its hash at
 * <at> + 4 i (refresh table 16, upload table 8: each its own bytes). Two choices:
 * with one, a bucket overflowed once a table was a third full (0.45% of keys refused with
 * 40,000 waiting); with a key in the first that has room, a refusal needs both full.
 */
static inline uint32_t blob_key_bucket(const struct blob_key *k, uint32_t at, uint32_t i,
                                       uint32_t buckets)
{
    uint32_t x;
    memcpy(&x, k->hash + at + (size_t)4 * i, sizeof(x));
    return x % buckets;
}

/*
 * CAS blobs being uploaded, every core's (uploading.c): a second upload of one is told to
 * wait (blob_upload_begin_shared). Fixed: BLOB_UPLOADING_KEYS entries in buckets, a lock per
 * stripe.
 */
#define BLOB_UPLOADING_KEYS    (1U << 14) /* entries, store-wide */
#define BLOB_UPLOADING_STRIPES 64U        /* locks */

struct blob_uploading_entry {
    uint8_t hash[BLOB_HASH_SIZE]; /* the blob's digest */
    uint8_t digest_fn;            /* enum blob_digest_fn */
    uint8_t kind;                 /* enum blob_kind: a CAS blob, or an AC key created once */
    uint32_t count;               /* its uploads under way; 0: a free entry */
};

struct blob_uploading {
    struct blob_uploading_entry *entries;          /* BLOB_UPLOADING_KEYS */
    pthread_mutex_t locks[BLOB_UPLOADING_STRIPES]; /* a bucket's, by its number */
};

/* Allocates the table (blob_store_open): 0 or -ENOMEM. */
MUST_CHECK int blob_uploading_init(struct blob_uploading *t);
/* Frees it: every upload ended. */
void blob_uploading_deinit(struct blob_uploading *t);
/*
 * Enters an upload of CAS blob <k>: 1 (entered), -EALREADY when another is under way and not
 * <alone>, or 0 when the table has no room for it (not entered: nothing to leave). Any core.
 * Two cores entering one key at once may, rarely, both get an entry: a missed wait, no more.
 */
MUST_CHECK int blob_uploading_enter(struct blob_uploading *t, const struct blob_key *k, bool alone);
/* Leaves what blob_uploading_enter entered (it answered 1). */
void blob_uploading_leave(struct blob_uploading *t, const struct blob_key *k);

struct blob_store {
    struct blob_store_options opts;    /* as opened; dir points at <dir> */
    char *dir;                         /* owned copy */
    struct blob_io *io;                /* the seam */
    bool io_owned;                     /* the real backend was created by open */
    struct blob_index *index;          /* shared */
    struct blob_segs segs;             /* shared */
    _Atomic uint64_t commit_seq;       /* next commit number */
    uint32_t chunk_shift;              /* log2(opts.chunk_size) */
    _Atomic uint32_t cores;            /* cores initialised */
    pthread_mutex_t evict_lock;        /* guards the evictor's flags */
    uint64_t buried_ns;                /* when a pass last closed segment files, ... */
    uint64_t buried_bytes;             /* ... their bytes since the disk was last measured, ... */
    uint64_t room_last;                /* ... and the room it measured then (evictor only) */
    pthread_cond_t evict_cond;         /* wakes the evictor */
    bool evict_stop;                   /* the evictor must end */
    bool evict_kick;                   /* a segment was sealed or created, or found no room */
    bool evict_running;                /* the thread exists */
    bool evict_held;                   /* tests: a kick only sets evict_kick, and the test runs
                                        * the pass when it likes (an evictor lagging behind) */
    pthread_t evict_thread;            /* runs blob_store_evict */
    _Atomic uint64_t evict_begun;      /* eviction passes begun (blob_store_evict) */
    _Atomic uint64_t evict_ended;      /* and ended: a core waiting for room reads them */
    _Atomic uint64_t budget;           /* max_size, or less while the disk holds less (evict.c) */
    _Atomic uint64_t ceiling;          /* the budget with the whole file system free: max_size,
                                        * or less on a smaller one; what a blob never exceeds */
    _Atomic bool budget_bound_said;    /* the log last said the disk sets the budget */
    _Atomic uint64_t budget_said;      /* the disk-bound budget last logged */
    _Atomic uint64_t budget_up_ns;     /* since when (monotonic ns) the budget has stayed above
                                        * budget_said; 0 when it has not (evict.c) */
    _Atomic bool no_room;              /* the budget was all active segments (logged once) */
    _Atomic bool folder_removed;       /* the data folder was deleted under us (logged once) */
    _Atomic bool folder_read_only;     /* its file system refuses writes (evict.c) */
    _Atomic uint64_t evicted_segments; /* stats */
    _Atomic uint64_t evicted_blobs;    /* stats */
    _Atomic uint64_t dropped_corrupt;  /* stats */
    _Atomic uint64_t recovery_cuts;    /* stats: scans cut at damage with valid records after */
    struct blob_refresh_table refreshing; /* keys queued for a refresh copy, every core's */
    struct blob_uploading uploading;      /* CAS blobs being uploaded, every core's */

    /* Deinitialised cores (blob_core.retired_next), kept for their counters; freed by close. */
    _Atomic(struct blob_core *) retired;
};

/* Tells the evictor the segment set changed (wakes the thread, or evicts inline). */
void blob_store_changed(struct blob_store *s);
/* The size budget now: --max-size, or less while the folder's file system cannot hold that
 * much (evict.c). Any thread. */
uint64_t blob_store_budget(const struct blob_store *s);
/* What eviction keeps the segments under: the budget less room for every core's active
 * segment to fill. */
uint64_t blob_store_limit(const struct blob_store *s);
/* The bytes the segment files take on disk: the live segments' and the dead ones' that are
 * still open (evict.c). Any thread. */
uint64_t blob_store_used(const struct blob_store *s);
/* Drops <k> at <loc> from the index after a read of its record found it corrupt (<err>
 * -EBADMSG) or the disk failed it (-EIO). */
void blob_store_drop_corrupt(struct blob_store *s, const struct blob_key *k,
                             const struct blob_loc *loc, int err);

/* ---- the per-core writer (writer.c) ---- */

struct blob_writer;

/* A commit record waiting to be written and synced. */
struct blob_pending {
    struct base_list link;                         /* on one of the writer's lists */
    uint64_t end;                                  /* file offset just past the commit record */
    void (*done)(struct blob_pending *p, int res); /* on the core's thread */
};

/* Someone waiting for room in the write buffer (or for a segment). */
struct blob_waiter {
    struct base_list link;                      /* on the writer's waiter list */
    void (*fn)(struct blob_waiter *w, int res); /* 0: try again; <0: the writer failed */
};

enum blob_writer_state {
    BLOB_W_NONE = 0, /* no segment: the next reservation opens one */
    BLOB_W_OPENING,  /* opening the files, fsyncing the folder */
    BLOB_W_READY,    /* appending */
    BLOB_W_SEALING,  /* flushing, writing the footer, syncing */
    BLOB_W_FAILING,  /* a write or fsync failed: waiting for the other op, then abandon */
};

/* Write buffers per core: one filling, the others in flight or free. */
#define BLOB_WBUFS 4

enum blob_wbuf_state {
    BLOB_WBUF_FREE = 0, /* unused */
    BLOB_WBUF_FILL,     /* records are appended here (the writer's cur) */
    BLOB_WBUF_FLIGHT,   /* its write is in flight */
    BLOB_WBUF_DONE,     /* its write completed; retired in issue order */
};

/* One aligned write buffer and the write that sends it. */
struct blob_wbuf {
    uint8_t *mem;           /* buf_size bytes, block-aligned */
    uint64_t base;          /* file offset of mem[0], block-aligned */
    uint32_t len;           /* bytes appended */
    uint8_t state;          /* enum blob_wbuf_state */
    bool partial;           /* its write ends in a block the next buffer writes again */
    uint32_t wlen;          /* bytes of its write (whole blocks) */
    uint64_t end;           /* logical end its write covers */
    uint32_t retries;       /* resubmissions after -EAGAIN */
    struct blob_aio aio;    /* the write */
    struct blob_io_req req; /* kept to resubmit */
    struct blob_writer *w;  /* owner */
};

struct blob_writer {
    struct blob_core *bc;              /* owner */
    uint8_t state;                     /* enum blob_writer_state */
    struct blob_seg *seg;              /* the active segment (table reference), or NULL */
    uint64_t seq;                      /* its seq */
    int wfd;                           /* write fd (O_DIRECT when possible), -1 when none */
    int rfd;                           /* read fd handed to the table */
    bool direct;                       /* wfd has O_DIRECT */
    bool reserved;                     /* the opening's fallocate reserved the whole segment */
    bool room_waited;                  /* the opening found no room and waited for eviction */
    bool room_waiting;                 /* it waits now (segment_room_waiting counts it) */
    uint32_t room_polls;               /* polls of the evictor in that wait */
    uint64_t room_pass;                /* evict_ended once the pass it waits for has ended */
    char name[32];                     /* file name being opened */
    uint8_t open_step;                 /* where the opening sequence is (writer.c open_step) */
    uint64_t end;                      /* logical end: where the next record goes */
    struct blob_wbuf bufs[BLOB_WBUFS]; /* in a ring: oldest .. cur */
    uint32_t buf_size;                 /* bytes per buffer */
    uint32_t cur;                      /* the buffer being filled */
    uint32_t oldest;                   /* the oldest buffer not yet retired (== cur when none) */
    uint32_t flights;                  /* writes in flight */
    uint64_t flushed;                  /* logical end handed to writes */
    uint64_t written;                  /* logical end whose writes (all before it) completed */
    uint32_t ctl_len;                  /* length of the footer write */
    bool sync_busy;                    /* an fdatasync is in flight */
    struct blob_aio sync_aio;          /* the fdatasync */
    struct blob_aio ctl_aio;           /* open, folder fsync, footer write, close */
    uint8_t *footer_buf;               /* the footer being written at seal */
    bool sealing_synced;               /* the seal's first fdatasync (of the records) went out */
    struct base_list wait_write;       /* pendings whose record is not written yet */
    struct base_list wait_sync;        /* pendings written, not yet in an fsync */
    struct base_list syncing;          /* pendings covered by the fsync in flight */
    struct base_list waiters;          /* struct blob_waiter: room wanted */
    struct blob_footer_entry *foot;    /* commit records in the active segment */
    uint32_t foot_len;                 /* entries used */
    uint32_t foot_size;                /* capacity */
    bool want_sync;                    /* quiesce: sync what was written */
    bool quiet_failures;               /* an empty segment's failure was logged: until a write
                                        * succeeds, the next ones are not (a full disk) */
    bool opening_counted;              /* segs.opening_bytes counts the opening's reservation
                                        * until the segment is in the table */
    int err;                           /* the last open failure, reported to waiters */
    uint64_t open_err_log_ns;          /* when an open failure was last logged */
    struct ring_task kick_task;        /* end-of-iteration flush and group commit */
};

MUST_CHECK int blob_writer_init(struct blob_writer *w, struct blob_core *bc, uint32_t buf_size);
void blob_writer_deinit(struct blob_writer *w);
/* Opens the first segment ahead of the first upload (asynchronous). */
void blob_writer_start(struct blob_writer *w);
/*
 * Reserves <len> bytes (8-aligned start) for a record of the active segment. Returns a
 * pointer and sets <off> and <seq>, or NULL with *<err> = -EINPROGRESS (queue a waiter with
 * blob_writer_wait: no room now) or another -errno. <commit> counts one footer entry more.
 */
uint8_t *blob_writer_reserve(struct blob_writer *w, uint32_t len, bool commit, uint64_t *off,
                             uint64_t *seq, int *err);
/* Keeps <used> (<= the reserved length) bytes of the last reservation. */
void blob_writer_commit(struct blob_writer *w, uint32_t used);
/* Queues <wt>; its fn runs when room may be there (or the writer failed). */
void blob_writer_wait(struct blob_writer *w, struct blob_waiter *wt);
/* Removes a queued waiter (abort). */
void blob_writer_unwait(struct blob_writer *w, struct blob_waiter *wt);
/* Lists a commit record in the active segment's footer. */
MUST_CHECK int blob_writer_add_footer(struct blob_writer *w, const struct blob_footer_entry *e);
/* Queues <p> until its record is durable per the sync policy; p->done runs later. */
void blob_writer_add_pending(struct blob_writer *w, struct blob_pending *p);
/* Flushes and syncs what is buffered (quiesce). */
void blob_writer_flush(struct blob_writer *w);
bool blob_writer_is_idle(const struct blob_writer *w);

/* ---- the per-core engine (store.c) ---- */

/* A key waiting for a refresh copy, and where its copy reads from. */
struct blob_refresh_item {
    struct blob_key key; /* the blob; size: its real size */
    struct blob_loc loc; /* where it was found: the segments of this span are pinned */
};

/* A segment that keys waiting or copying need (refresh.c). */
struct blob_refresh_pin {
    struct blob_seg *seg; /* a reference, pinned (blob_segment_pin) */
    uint32_t seg32;       /* its seq's low 32 bits */
    uint32_t keys;        /* keys waiting or copying in it (>= 1) */
};

/* Keys waiting for a refresh copy (refresh.c): a ring of keys, oldest first. */
struct blob_refresh_queue {
    struct blob_refresh_item *items; /* <cap> slots, <len> keys from <head> */
    uint32_t head;                   /* the oldest key */
    uint32_t len;                    /* keys waiting */
    uint32_t cap;                    /* slots allocated (grows up to the bound) */
    uint64_t *tags;                  /* tags of keys waiting or copying, one per slot, 0: free */
    struct blob_refresh_pin *pins;   /* the segments they need, REFRESH_PINS_MAX slots */
    uint32_t pins_len;               /* used */
    uint32_t pin_last;               /* the pin found last (a hit's keys share a few) */
    struct ring_task pump;           /* starts copies from the queue */
};

struct blob_core {
    struct blob_store *s;            /* the store */
    struct ring_core *ring;          /* this core's loop (NULL with the simulator) */
    uint32_t index;                  /* core number */
    struct blob_counters counters;   /* per core */
    struct blob_chunk_ctx zctx;      /* compression */
    struct blob_zstd_budget zbudget; /* zstd uploads' decoders: counted with zctx, limited */
    struct blob_pool pool;           /* uploads' and readers' large buffers */
    struct blob_writer writer;       /* the active segment */
    struct base_list uploads;        /* struct blob_upload.link */
    struct base_list readers;        /* struct blob_reader.link */
    struct base_list refreshes;      /* struct blob_refresh.link */
    uint32_t uploads_len;            /* open uploads (admission) */
    uint32_t readers_len;            /* open readers (admission) */
    uint32_t refreshes_len;          /* refresh copies in progress */
    struct blob_refresh_queue rq;    /* keys waiting for a refresh copy */
    uint32_t disk_reads;             /* reads in flight (admission) */
    uint64_t read_buf_bytes;         /* bytes of readers' buffers (bounded: read_buffer_max) */
    bool quiescing;                  /* no new uploads */
    struct blob_core *retired_next;  /* on the store's retired list once deinitialised */
};

/* The engine's helpers for the seam. */
static inline int blob_core_submit(struct blob_core *bc, struct blob_aio *a,
                                   const struct blob_io_req *req)
{
    return blob_io_submit(bc->s->io, bc->ring, a, req);
}

static inline void blob_core_defer(struct blob_core *bc, struct ring_task *t)
{
    bc->s->io->ops->defer(bc->s->io, bc->ring, t);
}

/* A write or fsync of segment <seq> failed: uploads with chunks there fail with <err>. */
void blob_core_segment_failed(struct blob_core *bc, uint64_t seq, int err);
/*
 * Queues a refresh of <k> found at <v>: true when a copy of it is queued or running (it was
 * already, or now), false when the core's queue is full, the core is quiescing, or the
 * segments of <v> cannot be pinned (dead by now, or the pin budget is spent). A key queued
 * pins its segments until its copy ends: the copy reads <v> even after eviction.
 */
bool blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                        const struct blob_index_value *v);
/* True when <v> lies in the cold part of the log. */
bool blob_store_is_cold(struct blob_store *s, const struct blob_index_value *v);
/* True while <loc> can be read: its commit's segment and its span's oldest are alive. Any
 * thread; takes no lock. */
bool blob_store_loc_is_alive(struct blob_store *s, const struct blob_loc *loc);
/* Looks <k> up, checking that its segments are alive. */
bool blob_store_lookup(struct blob_store *s, const struct blob_key *k,
                       struct blob_index_value *out);
/*
 * A lookup on core <bc>: the index, or where a refresh of <k> queued on any core reads it when
 * eviction took its segment meanwhile (blob_refresh_find; *<refreshing> says so).
 */
bool blob_core_lookup(struct blob_core *bc, const struct blob_key *k, struct blob_index_value *out,
                      bool *refreshing);

/* ---- uploads (upload.c) ---- */

/* Internal copy-mode upload of stored records (refresh): no hashing, index_move at the end. */
MUST_CHECK int blob_upload_begin_copy(struct blob_core *bc, const struct blob_key *k,
                                      const struct blob_loc *from, struct blob_upload **out);
/*
 * Gives a copy-mode upload the commit number of the copy it replaces: a refresh must not
 * make an old AC value newer than one written since (recovery picks the highest).
 */
void blob_upload_set_commit_seq(struct blob_upload *u, uint64_t commit_seq);
/*
 * Gives a copy-mode upload the chunk shift of the blob it copies: its records keep the chunk
 * size they were written with, which --chunk-size may have changed since.
 */
void blob_upload_set_chunk_shift(struct blob_upload *u, uint8_t chunk_shift);
/*
 * True when a copy of <chunks> records can be committed: its commit record fits one write
 * buffer (records cut at an older, smaller --chunk-size may be more than the store now counts
 * for its largest blob).
 */
bool blob_upload_copy_fits(const struct blob_upload *u, uint32_t chunks);
/* Appends one stored chunk record (header + payload) as is; -EINPROGRESS with <cb> later. */
MUST_CHECK int blob_upload_append_record(struct blob_upload *u, const uint8_t *rec, uint32_t len,
                                         blob_done_fn *cb, void *ctx);
/* Marks every upload of <bc> with a chunk in segment <seq> as failed with <err>. */
void blob_upload_fail_segment(struct blob_core *bc, uint64_t seq, int err);

/* ---- readers (reader.c) ---- */

/* The commit number of the blob being read (0 until its commit record was read). */
uint64_t blob_reader_commit_seq(const struct blob_reader *r);
/* The chunk shift of the blob being read (0 until its commit record was read). */
uint8_t blob_reader_chunk_shift(const struct blob_reader *r);
/* The version of its commit record (0 until it was read). */
uint8_t blob_reader_commit_version(const struct blob_reader *r);
/* Its chunk records (0 until its commit record was read). */
uint32_t blob_reader_chunk_count(const struct blob_reader *r);
/*
 * Opens a reader that yields the stored chunk records (header + payload) of <k> (k->size: its
 * real size) as they are, from its commit record at <loc>, which is not looked up: the index
 * may have lost it to eviction since. <segs>[i] is segment loc->seg - loc->span + i, for i up
 * to loc->span, each referenced by the caller, dead or alive; the reader takes references of
 * its own. 0, -EAGAIN (the core's readers are all in use) or -ENOMEM.
 */
MUST_CHECK int blob_read_open_records(struct blob_core *bc, const struct blob_key *k,
                                      const struct blob_loc *loc, struct blob_seg *const *segs,
                                      struct blob_reader **out);

/* ---- refresh (refresh.c) ---- */

struct blob_refresh;
void blob_refresh_init(struct blob_core *bc);
/* Drops the keys waiting (quiesce); running copies end with their I/O. */
void blob_refresh_cancel_all(struct blob_core *bc);
/* Allocates the store-wide table of keys being refreshed (blob_store_open). */
MUST_CHECK int blob_refresh_table_init(struct blob_store *s);
/* Frees it; every core's keys ended. */
void blob_refresh_table_deinit(struct blob_store *s);
/*
 * Where a refresh of <k>, queued on any core, reads it, when eviction took its segments while
 * the key waits or copies: true and *<out>; the segments stay open while the key is queued
 * (blob_segment_get_pinned). False while those segments live (the index dropped the key: a
 * read found it corrupt), or when no core has a refresh of <k>. Any core.
 */
bool blob_refresh_find(struct blob_store *s, const struct blob_key *k,
                       struct blob_index_value *out);
/* The segments of <loc> (a key of this core's queue), from seg - span up, as its refresh pins
 * them: valid while the caller holds a reference on each; NULL for a gap inside the span (a
 * segment that holds none of the blob's chunks, gone: pin_take). */
void blob_refresh_segs(struct blob_core *bc, const struct blob_loc *loc, struct blob_seg **segs);
/* Frees the queue; nothing may wait. */
void blob_refresh_deinit(struct blob_core *bc);

/* ---- recovery and eviction (recover.c, evict.c) ---- */

/* Reads footers and scans tails into the index and the table. Blocking. */
MUST_CHECK int blob_recover_run(struct blob_store *s, char *why, size_t why_size);
/* Removes the index entries of dead segment <seg> (footer or scan). Blocking. */
uint64_t blob_evict_segment(struct blob_store *s, struct blob_seg *seg);

typedef void blob_commit_visit_fn(void *ctx, const struct blob_footer_entry *e);

/* A visit of one segment's commit records (blob_recover_visit). */
struct blob_visit {
    struct blob_io *io;       /* in: the seam */
    int fd;                   /* in: the segment, open for reading */
    uint64_t seq;             /* in: its number (checked against the header) */
    uint64_t size;            /* in: its size */
    blob_commit_visit_fn *fn; /* in: called per commit record */
    void *ctx;                /* in: fn's argument */
    bool find_cut;            /* in: when a scan stops early, look past it for a valid record */
    uint64_t end;             /* out: just past the last valid record */
    bool sealed;              /* out: read from a valid footer (else scanned) */
    uint64_t cut_next;        /* out (find_cut): offset of the first valid record after the
                               * record the scan stopped at, 0 when none (a torn tail) */
};

/*
 * Calls v->fn for each commit record of the segment: from the footer when the trailer is
 * valid, else by scanning records from the header, stopping at the first invalid one.
 * Returns 0 or -errno (a read error; -EBADMSG for an invalid header).
 */
MUST_CHECK int blob_recover_visit(struct blob_visit *v);

#endif /* RINGCAS_BLOB_INTERNAL_H */
