/*
 * The index: one in-memory table from key to location, shared by every core.
 *
 * Striped: the first two bytes of the hash pick one of 256 stripes, each with its own mutex,
 * so two cores meet on a lock only when they touch the same stripe at the same instant. Each
 * stripe keeps its entries dense, in blocks of 64 (48 bytes each), and an open-addressing
 * table of 32-bit slots (24-bit entry number + 8-bit tag from the hash) with linear probing
 * and backward-shift deletion. That is 48 bytes per blob plus 4.7–9.4 bytes of slots: the
 * budget of 64 bytes per blob holds at every fill (docs/index.md has the measurement and why
 * liburcu's and Concurrency Kit's tables could not).
 */
#ifndef RINGCAS_BLOB_INDEX_H
#define RINGCAS_BLOB_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/format.h"
#include "blob/store.h"

struct blob_index;

/* Where a blob's commit record is, and what the index knows of it. */
struct blob_loc {
    uint32_t seg;  /* segment seq (low 32 bits) of the commit record */
    uint32_t off8; /* commit record offset / 8 */
    uint16_t span; /* seg minus the oldest segment holding one of its chunks */
};

struct blob_index_value {
    struct blob_loc loc; /* where */
    uint64_t size;       /* uncompressed bytes */
};

enum blob_index_put_mode {
    BLOB_INDEX_KEEP = 0,    /* insert only when absent (CAS dedup) */
    BLOB_INDEX_REPLACE = 1, /* insert or replace (AC newest wins, recovery of newer copies) */
};

/* Creates an empty index. Returns NULL when out of memory. Any thread. */
struct blob_index *blob_index_create(void);

/* Frees <idx>. No other thread may use it any more. NULL is accepted. */
void blob_index_destroy(struct blob_index *idx);

/*
 * Looks <k> up: CAS keys match kind, digest function, hash and size (any size when k->size
 * is BLOB_SIZE_ANY); AC keys kind and hash.
 * Fills <out> when found. Any thread.
 */
bool blob_index_get(struct blob_index *idx, const struct blob_key *k, struct blob_index_value *out);

/*
 * Inserts <k> -> <v> per <mode>. Returns 1 when inserted or replaced, 0 when kept (KEEP and
 * present), -ENOMEM or -ENOSPC (a stripe holds 2^24-1 entries). Any thread.
 */
MUST_CHECK int blob_index_put(struct blob_index *idx, const struct blob_key *k,
                              const struct blob_index_value *v, enum blob_index_put_mode mode);

/*
 * Says whether <loc> can still be read (store.c: its commit's segment and its span's oldest
 * are alive). Called under a stripe's lock: it must take no lock of the index.
 */
typedef bool blob_index_alive_fn(void *ctx, const struct blob_loc *loc);

/*
 * Inserts <k> -> <v> unless <k> is present at a location <alive> (called with <ctx>) says can
 * be read: a dead entry (its segment evicted, or the oldest of its span, and the evictor has
 * not removed it yet) is replaced. Kept, it would stand for the new copy, and go when the
 * evictor removes it: an upload acknowledged and never findable. Returns 1 when inserted or
 * replaced, 0 when a live entry is kept, -ENOMEM or -ENOSPC. Any thread.
 */
MUST_CHECK int blob_index_put_unless_live(struct blob_index *idx, const struct blob_key *k,
                                          const struct blob_index_value *v,
                                          blob_index_alive_fn *alive, void *ctx);

/*
 * Replaces the location of <k> with <to> only if it is still <from> (a refresh that raced with
 * a newer write or a drop changes nothing). Returns true when replaced. Any thread.
 */
bool blob_index_move(struct blob_index *idx, const struct blob_key *k, const struct blob_loc *from,
                     const struct blob_loc *to);

/*
 * Removes <k> if its location is in segment <seg> (and, with <off8> != UINT32_MAX, at that
 * offset): eviction and dropping corrupt records never remove a newer copy. Returns true when
 * removed. Any thread.
 */
bool blob_index_remove_at(struct blob_index *idx, const struct blob_key *k, uint32_t seg,
                          uint32_t off8);

/*
 * Sizes every stripe's slot table for <total> entries in all, so that a bulk load (recovery)
 * does not rehash on its way. Returns 0 or -ENOMEM (the index stays usable). Any thread.
 */
MUST_CHECK int blob_index_reserve(struct blob_index *idx, uint64_t total);

/*
 * Hints that <k> is about to be looked up or put: fetches its slot's cache line. Only for a
 * single-threaded bulk load (recovery), when no other thread uses the index.
 */
void blob_index_prefetch(struct blob_index *idx, const struct blob_key *k);

/* Entries in the index. Any thread (a sum of per-stripe counts, not a snapshot). */
uint64_t blob_index_count(struct blob_index *idx);

/* Bytes of memory the index holds (entry blocks, slot tables, stripes). Any thread. */
uint64_t blob_index_memory(struct blob_index *idx);

#endif /* RINGCAS_BLOB_INDEX_H */
