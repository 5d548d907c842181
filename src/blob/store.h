/*
 * The storage engine's public API: one store per process, one engine per core.
 *
 * A store (struct blob_store) is opened on the main thread before the cores start; opening
 * runs recovery (footers of sealed segments, a scan of unsealed tails). Each core then calls
 * blob_core_init() on its own thread and uses only its own struct blob_core: uploads, readers
 * and lookups made through a blob_core belong to that core and must be used, continued and
 * released on that core's thread only. The index and the set of sealed segments are shared
 * by every core (striped locks, see docs/index.md); nothing else is.
 *
 * Callbacks never run inside the call that arms them: they run later from the core's loop
 * (an io_uring completion or a task deferred to the end of the loop iteration). A function
 * that finishes at once says so by its return value instead (blob_upload_append returns 0).
 *
 * Keys: CAS keys are (digest function, hash, size) and are verified on commit; AC keys are
 * 32 opaque bytes chosen by the caller (newest write wins, stored as given, no verification).
 * The rpc layer derives AC keys with domain-separated hashes, e.g.
 * SHA-256("ringcas/ac\0" || instance || "\0" || action hash) for REAPI and
 * SHA-256("ringcas/http\0" || path) for HTTP plain keys: the engine never looks inside.
 *
 * Errors follow src/base/err.h: -EILSEQ digest mismatch, -EBADMSG corrupt bytes on disk,
 * -ENOSPC the size budget (or the disk) cannot fit the write, -EAGAIN a bounded per-core
 * queue is full (answer RESOURCE_EXHAUSTED / 503 at once), -ENOENT no such blob, -ECANCELED
 * the caller cancelled, -EIO the disk failed, -EINVAL a malformed argument.
 */
#ifndef RINGCAS_BLOB_STORE_H
#define RINGCAS_BLOB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "base/counter.h"

struct ring_core;
struct blob_store;
struct blob_core;
struct blob_upload;
struct blob_reader;
struct blob_io;

/* ---- keys ---- */

enum blob_kind {
    BLOB_KIND_CAS = 1, /* content-addressed: verified, immutable, size is part of the key */
    BLOB_KIND_AC = 2,  /* opaque 32-byte key -> value; the newest write wins */
};

/* Digest functions, numbered as REAPI's DigestFunction.Value. Only SHA-256 is built in. */
enum blob_digest_fn {
    BLOB_DIGEST_SHA256 = 1,
};

#define BLOB_HASH_SIZE 32

struct blob_key {
    uint8_t kind;                 /* enum blob_kind */
    uint8_t digest_fn;            /* enum blob_digest_fn (CAS); BLOB_DIGEST_SHA256 for AC */
    uint8_t hash[BLOB_HASH_SIZE]; /* CAS: the digest's hash; AC: the caller's opaque key */
    uint64_t size;                /* CAS: blob size (part of the key; BLOB_SIZE_ANY in
                                     lookups by hash); AC: value size on put, ignored by
                                     lookups; BLOB_SIZE_UNKNOWN: an upload sized at commit */
};

/*
 * A CAS key's size for lookups by hash alone (HTTP names blobs without their size):
 * blob_stat, blob_exists, blob_exists_many and blob_read_open accept it and find the blob
 * whatever its size; blob_stat and blob_reader_size then tell the size. Uploads refuse it
 * (-EINVAL). AC lookups ignore the size anyway.
 */
#define BLOB_SIZE_ANY UINT64_MAX

/*
 * A key's size for an upload whose size is known only when it ends (an HTTP chunked or
 * zstd-encoded body): blob_upload_begin accepts it for CAS and AC keys and the size is fixed
 * at commit (see blob_upload_begin). Lookups refuse it (not found).
 */
#define BLOB_SIZE_UNKNOWN (UINT64_MAX - 1)

/* The SHA-256 of the empty string: CAS (sha256, e3b0c442..., 0) is always present. */
extern const uint8_t blob_empty_sha256[BLOB_HASH_SIZE];

/* Fills <k> as a CAS SHA-256 key. */
void blob_key_cas(struct blob_key *k, const uint8_t hash[BLOB_HASH_SIZE], uint64_t size);

/* Fills <k> as an AC key; <size> is the size of the value about to be put (0 for lookups). */
void blob_key_ac(struct blob_key *k, const uint8_t key[BLOB_HASH_SIZE], uint64_t size);

/* True for the empty CAS blob (size 0 or BLOB_SIZE_ANY), which never needs the disk. */
bool blob_key_is_empty(const struct blob_key *k);

/*
 * Parses 64 lower- or upper-case hex digits into <hash>; returns 0 or -EINVAL. Writes 65
 * bytes (with the NUL) into <hex> for the other direction.
 */
MUST_CHECK int blob_hash_from_hex(const char *hex, size_t len, uint8_t hash[BLOB_HASH_SIZE]);
void blob_hash_to_hex(const uint8_t hash[BLOB_HASH_SIZE], char hex[2 * BLOB_HASH_SIZE + 1]);

/* ---- the store ---- */

enum blob_sync {
    BLOB_SYNC_GROUP = 0,  /* ack after one fdatasync per core per batch (default) */
    BLOB_SYNC_ALWAYS = 1, /* ack after an fdatasync of its own */
    BLOB_SYNC_NONE = 2,   /* ack once written to the file; a power loss may lose it */
};

/* Parses "group", "always" or "none"; returns 0 or -EINVAL. */
MUST_CHECK int blob_sync_parse(const char *name, enum blob_sync *out);

#define BLOB_READ_AHEAD_MAX 8 /* the bound of blob_store_options.read_ahead */
/*
 * The bounds of blob_store_options.zstd_level: zstd's regular levels, 1 to ZSTD_maxCLevel()
 * (22 in every libzstd since 1.0). Not 0, which zstd takes as its default level 3 (an
 * operator who writes 0 may mean "no compression", which the engine has no way to do), nor
 * zstd's negative (fast) levels, which --zstd-level (a count) cannot express.
 */
#define BLOB_ZSTD_LEVEL_MIN 1
#define BLOB_ZSTD_LEVEL_MAX 22

struct blob_store_options {
    const char *dir;            /* data folder (must exist); borrowed until open returns */
    uint64_t max_size;          /* size budget in bytes: segments past it are evicted */
    uint64_t segment_size;      /* a segment is sealed when it reaches this many bytes */
    uint32_t chunk_size;        /* logical chunk, power of two, 4 KiB .. 1 MiB */
    int zstd_level;             /* compression level of stored chunks (1: fast), within the
                                   BLOB_ZSTD_LEVEL_ bounds */
    enum blob_sync sync;        /* durability of an acknowledgement */
    uint32_t uploads_max;       /* per core: open uploads (admission) */
    uint32_t readers_max;       /* per core: open readers (admission) */
    uint32_t disk_queue_max;    /* per core: disk reads in flight + waiting (admission) */
    uint64_t read_buffer_max;   /* per core: bytes of readers' chunk buffers (admission) */
    uint64_t zstd_memory_max;   /* per core: bytes zstd contexts may hold, the decoders of
                                   compressed uploads included (their windows: up to 128 MiB
                                   each); past it a zstd upload fails -ENOMEM */
    uint32_t read_ahead;        /* chunks a reader reads ahead or holds, 1 (none ahead) ..
                                   BLOB_READ_AHEAD_MAX */
    uint32_t write_buffer_size; /* per core: bytes of each of the writer's 4 buffers */
    uint32_t cores_max;         /* cores that will call blob_core_init (the budget keeps one
                                   segment per core free) */
    bool direct_io;             /* O_DIRECT segment writes (falls back when refused) */
    bool map_reads;             /* records already in the page cache are read in place through
                                   a read-only mapping of their segment (no disk read, no copy) */
    bool evict_thread;          /* evict in a background thread (false: tests evict inline) */
    uint32_t evict_settle_ms;   /* a pass that follows a close of segment files this soon
                                   waits out the rest before it measures the disk (evict.c) */
    struct blob_io *io;         /* the I/O seam; NULL: the real file system and rings */
};

/* Fills the defaults: 10 GiB, 256 MiB segments, 256 KiB chunks, zstd 1, group commit,
 * 1 core, 4 x 2 MiB write buffers, O_DIRECT, mapped reads, an evictor thread. */
void blob_store_options_default(struct blob_store_options *o);

/*
 * Checks the sizes and bounds of <o> without touching the folder: 0, or -EINVAL with one line
 * naming the flag at fault and its fix in <why>. blob_store_open checks them too.
 */
MUST_CHECK int blob_store_options_check(const struct blob_store_options *o, char *why,
                                        size_t why_size);

/*
 * Opens the store in o->dir: reads every sealed segment's footer, scans unsealed tails (a
 * torn tail is cut at the last valid record and the segment sealed), builds the index and
 * starts the evictor. Main thread, before any core calls blob_core_init; blocking I/O.
 * Returns 0 and *<out> (release with blob_store_close), or -errno with one line naming the
 * cause and the fix in <why> (<why_size> bytes).
 */
MUST_CHECK int blob_store_open(const struct blob_store_options *o, struct blob_store **out,
                               char *why, size_t why_size);

/*
 * Stops the evictor, closes the segments, frees the index and the deinitialised cores. Every
 * blob_core must have been deinitialised, and no thread may still read their counters. Main
 * thread. NULL is accepted.
 */
void blob_store_close(struct blob_store *s);

/*
 * Creates the engine of the calling core (server hook core_init): its active segment (opened
 * through the ring), write buffers, zstd contexts and queues. Core thread. Returns 0 and
 * *<out>, or -errno. <core> is NULL only with a simulated I/O backend.
 */
MUST_CHECK int blob_core_init(struct blob_store *s, struct ring_core *core, struct blob_core **out);

/*
 * Server hook core_quiesce: flushes and syncs what is buffered (whatever the sync policy),
 * seals nothing, stops taking new uploads (-ECANCELED) and refreshes. Every upload and reader
 * must be finished or aborted by the caller first; the engine's own ops (flush, fsync, a
 * refresh already reading) complete in the background: the loop must run until the ring's
 * ops are zero (blob_core_is_idle() tells). Core thread.
 */
void blob_core_quiesce(struct blob_core *bc);

/* True when the core has no I/O in flight and nothing buffered (tests and drain). */
bool blob_core_is_idle(const struct blob_core *bc);

/*
 * Releases the core's engine after its loop ended (server hook core_deinit): asserts that no
 * upload, reader or I/O is left. The active segment stays unsealed (recovery seals it). Its
 * counters (blob_core_counters) stay readable by any thread, with their last values, until
 * blob_store_close frees what is left of <bc>: another core may be rendering GET /metrics
 * over them at this very moment. Core thread. NULL is accepted.
 */
void blob_core_deinit(struct blob_core *bc);

/* ---- lookups ---- */

struct blob_info {
    uint64_t size; /* uncompressed bytes */
    bool cold;     /* stored in the oldest part of the log (would be refreshed) */
};

/*
 * True when <k> is present (exact, in memory, no I/O; a CAS key with BLOB_SIZE_ANY matches
 * the blob of that hash at whatever size). With <refresh>, a present blob that
 * sits in the oldest part of the log is rewritten to this core's head in the background so
 * eviction keeps it (at most 16 copies run per core; up to 65536 keys wait their turn, past
 * that the refresh is skipped and counted in `refreshes_dropped`).
 * The empty CAS blob is always present. Core thread.
 */
bool blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh);

/*
 * Batched blob_exists: sets <present>[i] for each of <count> keys and returns how many are
 * present (FindMissingBlobs, and the AC completeness check with <refresh> set). Core thread.
 */
size_t blob_exists_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                        bool refresh, bool *present);

/*
 * blob_exists_many with refresh, for a cache hit that promises its blobs: a present blob in
 * the oldest part of the log whose refresh cannot be queued (the core's queue is full, the
 * core is quiescing) counts as missing, since eviction may take it next. Returns how many are
 * present and kept. Core thread.
 */
size_t blob_keep_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                      bool *present);

/*
 * Fills <out> for <k>; returns 0 or -ENOENT. A CAS key with BLOB_SIZE_ANY finds the blob by
 * its hash and <out>->size tells its size. In memory, no I/O. Core thread.
 */
MUST_CHECK int blob_stat(struct blob_core *bc, const struct blob_key *k, struct blob_info *out);

/* ---- uploads ---- */

enum blob_encoding {
    BLOB_ENCODING_IDENTITY = 0, /* the blob's own bytes */
    BLOB_ENCODING_ZSTD = 1,     /* a zstd stream (REAPI compressed-blobs/zstd) */
};

/*
 * Completion of an append or a commit: <res> is 0 or -errno. Runs on the core's thread,
 * never inside the call that armed it.
 */
typedef void blob_done_fn(void *ctx, int res);

/*
 * Begins an upload of <k> (k->size bytes once decoded) whose bytes arrive as <incoming>.
 * Core thread. Returns 0 and *<out>, owned by the caller until blob_upload_commit's callback
 * ran or blob_upload_abort was called; or:
 *   -EEXIST  a CAS blob with this key is present (the caller ends the upload early; for CAS
 *            the caller reports committed_size = size for identity, -1 for zstd uploads);
 *   -EAGAIN  uploads_max uploads are open on this core;
 *   -EFBIG   the blob is larger than the store takes (blob_cas_size_max: a quarter of the
 *            budget with the whole file system free, less for a chunk table past one write
 *            buffer): a retry never stores it;
 *   -ENOSPC  the store is over its size budget now, or the blob is over a quarter of it
 *            (other files fill the disk): a retry may store it;
 *   -ECANCELED the core is quiescing;
 *   -EINVAL  a malformed key (kind, digest function, BLOB_SIZE_ANY), or an AC value larger
 *            than 64 MiB.
 * AC uploads never answer -EEXIST: a new value replaces the old one on commit.
 *
 * With k->size == BLOB_SIZE_UNKNOWN the size is what arrives, fixed at commit: a CAS blob of
 * that hash at any size answers -EEXIST at once; the bytes stream into the segment as they
 * arrive (nothing is held back but the last, partial chunk); an append that takes the upload
 * past the largest blob the store takes (a quarter of max_size, a chunk table that fits a
 * write buffer; AC: 64 MiB) answers -EMSGSIZE, and one whose chunk finds the store over its
 * budget -ENOSPC: either ends the upload (abort it). The commit then verifies the digest of
 * exactly what arrived; nothing is visible before.
 */
MUST_CHECK int blob_upload_begin(struct blob_core *bc, const struct blob_key *k,
                                 enum blob_encoding incoming, struct blob_upload **out);

/*
 * blob_upload_begin for a caller that can wait: a CAS blob that another upload (on any core)
 * is writing answers -EALREADY, and nothing is begun. The caller holds its client's bytes and
 * asks again later: -EEXIST once that upload committed (the bytes are not needed), 0 once it
 * failed (this one writes the blob). Concurrent uploads of one blob (CI runners building the
 * same commit) then store it once. A caller that waited long enough (a first upload as slow
 * as its client may be) calls blob_upload_begin, which never waits.
 */
MUST_CHECK int blob_upload_begin_shared(struct blob_core *bc, const struct blob_key *k,
                                        enum blob_encoding incoming, struct blob_upload **out);

/*
 * blob_upload_begin for a create-only write of action-cache key <k> (HTTP's PUT with
 * If-None-Match: *): -EEXIST when <k> is present; -EALREADY while another create-only upload
 * of <k> (on any core) is under way, and nothing is begun: ask again later (-EEXIST once it
 * committed); -EAGAIN also when the table of keys being uploaded has no room for <k>; -EINVAL
 * for a CAS key. Its commit answers -EEXIST, and writes no commit record, when <k> was
 * stored meanwhile (by a plain upload): of two create-only writes of one key, however they
 * overlap, one succeeds, and a refused value is never in the log for recovery to find.
 */
MUST_CHECK int blob_upload_begin_create(struct blob_core *bc, const struct blob_key *k,
                                        enum blob_encoding incoming, struct blob_upload **out);

/*
 * Takes <u> out of the store's table of blobs being uploaded: other uploads of its blob no
 * longer wait for it (blob_upload_begin_shared begins them). For an upload whose client left
 * and that is kept for a resumption that may never come (a parked ByteStream upload): a
 * client that left must not hold back those still here. <u> stays the caller's and may go on
 * (append, commit, abort) as before; if another upload commits the blob meanwhile, <u>'s
 * commit still succeeds and the index keeps the first copy. No-op for an upload not in the
 * table (AC, refresh copies, a key the table had no room for, or unshared already). Core
 * thread.
 */
void blob_upload_unshare(struct blob_upload *u);

/*
 * Puts <u> back in the table after blob_upload_unshare (a parked upload resumed): uploads of
 * its blob that begin from now on wait for it again. It never waits itself (its client's
 * bytes are half in the log already); with no room in the table it stays out. No-op for an
 * upload in the table already, or one that never was (AC, refresh copies). Core thread.
 */
void blob_upload_reshare(struct blob_upload *u);

/*
 * Feeds the next <len> bytes of the upload. The engine hashes them (after decoding zstd),
 * cuts them into chunks, compresses each chunk into the core's write buffer and writes it to
 * the active segment as the buffer fills. <data> is borrowed:
 *   0            everything was consumed; the caller may reuse <data>; <cb> will not run.
 *   -EINPROGRESS the write buffer is full (backpressure): <data> must stay valid and
 *                unchanged until <cb>(<ctx>, res) runs, with 0 once all of it was consumed or
 *                -errno; no other call on <u> but abort is allowed meanwhile.
 *   -EMSGSIZE    more bytes than k->size (identity) or a decoded size past it (zstd); for
 *                BLOB_SIZE_UNKNOWN, past the largest blob the store takes; zstd: compressed
 *                bytes past twice the size (or that largest blob) plus 1 MiB (a stream of
 *                skippable or empty frames that decodes to nothing);
 *   -ENOSPC      BLOB_SIZE_UNKNOWN: the store is over its budget (eviction is behind);
 *   -EBADMSG     the zstd stream is malformed;
 *   -EIO/-ENOSPC a write of this upload failed: the upload is dead, abort it.
 * Core thread.
 */
MUST_CHECK int blob_upload_append(struct blob_upload *u, const void *data, size_t len,
                                  blob_done_fn *cb, void *ctx);

/*
 * Ends the upload: verifies the size and (CAS) the digest, writes the commit record and makes
 * the blob visible once the record is durable per the sync policy. An upload begun with
 * BLOB_SIZE_UNKNOWN takes the size of what arrived (blob_upload_bytes_decoded). Returns 0 and <cb>
 * runs later with 0 (durable and visible), -EILSEQ (digest mismatch), -EMSGSIZE (size mismatch),
 * -EIO/-ENOSPC (the disk failed), -EBADMSG (a zstd upload's stream did not end), -EEXIST (a
 * create-only upload whose key was stored meanwhile); in every
 * case the engine owns <u> from this call on and has freed it by the time <cb> runs, and
 * nothing is visible on failure. With 0 the blob is visible to every core when <cb> runs.
 * Returns -EBUSY (and <u> stays the caller's) when an append is still pending. Core thread.
 */
MUST_CHECK int blob_upload_commit(struct blob_upload *u, blob_done_fn *cb, void *ctx);

/*
 * Cancels the upload: no callback of it runs any more (a pending append's <cb> included),
 * nothing becomes visible, chunks already written stay as unindexed garbage. Memory and
 * in-flight I/O are released in the background. <u> must not be used after. Core thread.
 */
void blob_upload_abort(struct blob_upload *u);

/* The largest CAS blob the store takes (uncompressed bytes): a quarter of the budget with the
 * whole file system free (--max-size, or less on a smaller volume), less
 * when a chunk table of more would not fit in one write buffer. Any thread. */
uint64_t blob_cas_size_max(const struct blob_core *bc);

/* Bytes of the core's zstd memory (store option zstd_memory_max) the upload's decoder holds:
 * 0 for an identity upload. Core thread. */
uint64_t blob_upload_zstd_bytes(const struct blob_upload *u);

/* Bytes the caller has fed so far (compressed bytes for a zstd upload). */
uint64_t blob_upload_bytes_in(const struct blob_upload *u);

/* Decoded bytes received so far (for QueryWriteStatus of identity uploads). */
uint64_t blob_upload_bytes_decoded(const struct blob_upload *u);

/* ---- reads ---- */

/*
 * A piece of a read: <res> 0 with <len> > 0 bytes at <data>, valid until the next
 * blob_read_next or blob_read_close; <res> 0 with <len> 0 is the end; <res> -EBADMSG means a
 * stored chunk was corrupt: the blob was dropped from the index and counted, and no byte of
 * the corrupt chunk was given out; -EIO a disk error; -ENOENT the blob was evicted while
 * open; -EAGAIN a per-core limit (disk queue, read buffers) was full: the reader is intact,
 * call blob_read_next again later. Runs on the core's thread, never inside blob_read_next.
 */
typedef void blob_data_fn(void *ctx, int res, const uint8_t *data, size_t len);

/*
 * Opens a read of <k> from uncompressed <offset> as <want>:
 *   identity: the blob's bytes from <offset> to the end, decompressed chunk by chunk;
 *   zstd:     a valid zstd stream whose decompression is exactly the bytes from <offset> to
 *             the end. Whole chunks are the stored frames, as stored (zero recompression;
 *             chunks stored raw are zstd raw-block frames on disk). When <offset> is not on a
 *             chunk boundary, the first piece is a raw-block frame holding the rest of that
 *             chunk (one chunk decompressed, nothing recompressed).
 * A CAS key with BLOB_SIZE_ANY reads the blob of that hash whatever its size
 * (blob_reader_size tells it).
 * Returns 0 and *<out> (release with blob_read_close), or -ENOENT, -ERANGE (<offset> past
 * the size), -EAGAIN (readers_max readers open), -EINVAL. A read of a blob in the oldest part
 * of the log also queues its refresh. Core thread.
 */
MUST_CHECK int blob_read_open(struct blob_core *bc, const struct blob_key *k, uint64_t offset,
                              enum blob_encoding want, struct blob_reader **out);

/* The blob's uncompressed size (k->size for CAS; the stored value's size for AC). */
uint64_t blob_reader_size(const struct blob_reader *r);

/*
 * Asks for the next piece; <cb> runs once, later. Returns 0, -EBUSY when a piece is already
 * pending, -EAGAIN when the core's disk queue or read buffer budget is full (retry later),
 * -ENOBUFS (blob_read_hold only) when the next piece needs a chunk buffer and pieces are
 * held: every slot holds some, or the read-ahead limits below are reached (release them,
 * then ask again), or the error the reader already ended with. Core thread.
 *
 * Read-ahead: while pieces of one chunk are handed out, the reads of the next chunks (up to
 * blob_store_options.read_ahead chunks in all) are in flight or done, each into a buffer of
 * its own, so the disk works while the caller sends. Reads ahead take at most half of the
 * core's disk queue, and new buffers only while the core's read buffers are under 1/64 of
 * read_buffer_max (many concurrent readers read one chunk at a time); each is
 * checked (checksums) as its read completes, and handed out only if it passed.
 */
MUST_CHECK int blob_read_next(struct blob_reader *r, blob_data_fn *cb, void *ctx);

/*
 * From now on every piece <r> hands out stays valid until blob_read_release releases it or
 * the reader is closed, instead of until the next
 * blob_read_next: a caller may send several pieces at once. Call before the first
 * blob_read_next. Core thread.
 */
void blob_read_hold(struct blob_reader *r);

/*
 * Releases the held piece that starts at <data> (as handed out), in any order; its buffer
 * goes back to the read-ahead once every piece of its chunk is released. Core thread.
 */
void blob_read_release(struct blob_reader *r, const uint8_t *data);

/*
 * Ends the read: pending disk reads are cancelled (ASYNC_CANCEL) and no callback runs any
 * more; memory is freed after the last completion. NULL is accepted. Core thread.
 */
void blob_read_close(struct blob_reader *r);

/* ---- counters ---- */

/*
 * Per-core counters, written by the core, read by any thread (metrics, tests). X(name, kind,
 * help); gauges return to zero when the core is idle. GET /metrics exports them as
 * ringcas_blob_<name>, a counter with _total, and the _ns ones in seconds (rpc/metrics.h).
 */
#define BLOB_COUNTERS(X)                                                                           \
    X(uploads, gauge, "uploads open")                                                              \
    X(readers, gauge, "readers open")                                                              \
    X(refreshes_open, gauge, "refreshes queued or copying")                                        \
    X(bufs, gauge, "upload and read buffers held (not the writer's fixed ones)")                   \
    X(pool_bytes, gauge, "idle buffer bytes kept for reuse (at most --read-memory / 8)")           \
    X(io_in_flight, gauge, "engine disk operations in flight")                                     \
    X(zstd_bytes, gauge, "bytes held by zstd contexts")                                            \
    X(writer_waiters, gauge,                                                                       \
      "appends and commits waiting for the writer: room in its buffers, or its next segment")      \
    X(segment_room_waiting, gauge,                                                                 \
      "new segments waiting for the evictor to make room on the disk (0 or 1 per core)")           \
    X(zstd_refused, counter, "zstd allocations refused over the core's zstd memory limit")         \
    X(blobs_committed, counter, "uploads committed and acknowledged")                              \
    X(bytes_in, counter, "uncompressed bytes committed")                                           \
    X(bytes_stored, counter, "bytes written to segments (records, footers)")                       \
    X(uploads_present, counter, "uploads refused because the blob was present (-EEXIST)")          \
    X(uploads_aborted, counter, "uploads aborted by the caller")                                   \
    X(uploads_waiting, counter, "uploads told to wait: one of the same blob was under way")        \
    X(writer_waits, counter,                                                                       \
      "appends and commits that waited for the writer (each wait once, however often woken)")      \
    X(digest_mismatches, counter, "commits refused: digest or size mismatch")                      \
    X(queue_full, counter, "requests refused because a per-core queue was full (-EAGAIN)")         \
    X(full, counter,                                                                               \
      "uploads refused for room: larger than the store takes, or its budget full now")             \
    X(reads, counter, "readers opened")                                                            \
    X(read_bytes, counter, "bytes given to readers")                                               \
    X(mapped_reads, counter, "records read in place from the page cache (no disk read)")           \
    X(refreshes, counter, "blobs rewritten to the head (refresh on read)")                         \
    X(refreshes_dropped, counter, "refreshes not queued: the core's refresh queue was full")       \
    X(refreshes_unpinned, counter,                                                                 \
      "refreshes not queued: their segments could not be pinned (pin budget spent, or evicted)")   \
    X(corrupt_chunks, counter, "stored records whose checksum failed on read")                     \
    X(writes, counter, "segment writes")                                                           \
    X(write_errors, counter, "segment writes that failed or were short")                           \
    X(fsyncs, counter, "fdatasync calls")                                                          \
    X(fsync_errors, counter, "fdatasync calls that failed")                                        \
    X(fsync_ns, counter, "time from each fdatasync's submission to its completion, summed")        \
    X(fsync_slow, counter, "fdatasync calls that took 10 ms or more")                              \
    X(write_ns, counter, "time from each segment write's submission to its completion, summed")    \
    X(write_slow, counter, "segment writes that took 10 ms or more")                               \
    X(segments_created, counter, "segments created by this core")                                  \
    X(segments_sealed, counter, "segments sealed by this core")                                    \
    X(segments_abandoned, counter, "segments given up after a failed write or fsync")              \
    X(segment_room_waits, counter,                                                                 \
      "new segments that found the disk full and waited for the evictor's pass")                   \
    X(segments_no_room, counter,                                                                   \
      "new segments given up: no room on the disk after the wait (uploads refused, store full)")

#define BLOB_COUNTER_FIELD(name, kind, help) struct base_counter name;

struct blob_counters {
    BLOB_COUNTERS(BLOB_COUNTER_FIELD)
};

#define BLOB_COUNTER_VALUE(name, kind, help) uint64_t name;

struct blob_counters_snapshot {
    BLOB_COUNTERS(BLOB_COUNTER_VALUE)
};

/* Store-wide figures (shared state), read by any thread. */
struct blob_store_stats {
    uint64_t blobs;            /* entries in the index */
    uint64_t index_bytes;      /* memory held by the index */
    uint64_t disk_bytes;       /* bytes of every live segment on disk */
    uint64_t held_bytes;       /* bytes of evicted segments still open (reads, refresh copies):
                                * on disk until they end; counted against the budget */
    uint64_t pinned_segments;  /* segments pinned by keys waiting for a refresh copy */
    uint64_t budget_bytes;     /* the size budget now: max_size, or less when the disk is */
    uint64_t segments;         /* segment files */
    uint64_t evicted_segments; /* segments deleted by eviction since open */
    uint64_t evicted_blobs;    /* index entries dropped by eviction since open */
    uint64_t dropped_corrupt;  /* index entries dropped because a record was corrupt */
    uint64_t recovery_cuts;    /* unsealed segments that start-up cut at a damaged record with
                                * valid records after it (logged; not a torn tail) */
    uint64_t read_only;        /* 1 while the folder's file system refuses writes */
};

/* The core's counters; any thread may read them until blob_store_close (even after
 * blob_core_deinit). */
const struct blob_counters *blob_core_counters(const struct blob_core *bc);

/* Adds the core's counters into <out>. Any thread. */
void blob_counters_add_to(const struct blob_counters *c, struct blob_counters_snapshot *out);

/* Fills <out>. Any thread. */
void blob_store_stats(struct blob_store *s, struct blob_store_stats *out);

/* The data folder was removed while the store ran (found by the evictor's pass). Any thread. */
bool blob_store_folder_removed(const struct blob_store *s);

/*
 * The data folder's file system refuses writes (-EROFS): found when a segment cannot be
 * opened or written for it, or by the evictor's pass, which also finds it writable again.
 * Uploads fail meanwhile (-EROFS), reads go on. Any thread.
 */
bool blob_store_folder_read_only(const struct blob_store *s);

/* Records what a write or the evictor's probe found, and says so when it changes. Any
 * thread. */
void blob_store_note_read_only(struct blob_store *s, bool read_only);

/* ---- maintenance ---- */

/*
 * Runs pending evictions now (deletes the oldest sealed segments while the store is over its
 * budget). The evictor thread calls it; tests without the thread call it from their thread.
 * Blocking I/O; never called on a core thread. Returns the number of segments deleted.
 */
uint32_t blob_store_evict(struct blob_store *s);

#endif /* RINGCAS_BLOB_STORE_H */
