/*
 * A small harness for the engine's tests: a store on the simulated disk (or on a temporary
 * folder with a real ring), driven from the test's thread, with synchronous helpers for
 * uploads and reads, and a check that every gauge is back to zero.
 */
#ifndef RINGCAS_TESTS_BLOB_HARNESS_H
#define RINGCAS_TESTS_BLOB_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob/io_sim.h"
#include "blob/store.h"
#include "ring/core.h"

struct th {
    struct blob_store_options o; /* options used by th_open */
    struct blob_io *io;          /* the simulated disk, or NULL with a real ring */
    struct ring_core *ring;      /* the real core, or NULL */
    char dir[64];                /* the real folder */
    struct blob_store *s;        /* the store */
    struct blob_core *bc;        /* the one core */
};

/* Small sizes so tests cross chunks and segments: 4 KiB chunks, 64 KiB segments. */
void th_options_small(struct blob_store_options *o);

/* Opens a store on a new simulated disk seeded with <seed> (th->o set by the caller or
 * th_options_small when zeroed). */
void th_open_sim(struct th *t, uint64_t seed);
/* Opens a store in a new temporary folder with a real ring on this thread. */
void th_open_real(struct th *t);
/* Closes core and store (the disk stays) and opens them again: recovery. */
void th_reopen(struct th *t);
/* Closes core and store only. */
void th_close_store(struct th *t);
/* Opens store and core again on the same disk; returns blob_store_open's result. */
int th_open_store(struct th *t);
/* Asserts the core is idle with every gauge at zero, closes all, removes the folder. */
void th_close(struct th *t);

/* Runs the loop until *<flag> is set (or the sim is idle). Returns true when set. */
bool th_run_until(struct th *t, const bool *flag);
/* Runs until nothing is in flight. */
void th_settle(struct th *t);

/* Fills <buf> deterministically from <seed>: compressible text-like or random bytes. */
void th_fill(uint8_t *buf, size_t len, uint64_t seed, bool compressible);

/* CAS key of <data>. */
void th_key_of(struct blob_key *k, const void *data, size_t len);

/*
 * Uploads <len> bytes as <k> in pieces of <piece> bytes (0: all at once), encoded as <enc>
 * (zstd: the data is compressed first), commits, waits. Returns the commit result, or the
 * error of begin/append.
 */
int th_put(struct th *t, const struct blob_key *k, const void *data, size_t len, size_t piece,
           enum blob_encoding enc);

/* Reads <k> from <off> as <enc> into a new buffer (free it). Returns 0 or the error. For
 * zstd, *<out> holds the stream decoded back. */
int th_get(struct th *t, const struct blob_key *k, uint64_t off, enum blob_encoding enc,
           uint8_t **out, size_t *len);

/* Pieces of one reader gathered into <out> (room for the whole blob), one at a time. */
struct th_collect {
    bool done;    /* the last piece asked for came */
    int res;      /* its result */
    bool end;     /* the empty piece that ends the stream came */
    uint8_t *out; /* room for the whole blob */
    size_t len;   /* bytes gathered */
};

/* Asks <r> for its next piece into <c> and runs the loop until it comes; returns its result. */
int th_collect_next(struct th *t, struct blob_reader *r, struct th_collect *c);
/* The same, also when blob_read_next fails at once: then its error (c->done stays false). */
int th_collect_try(struct th *t, struct blob_reader *r, struct th_collect *c);
/* Sum of this core's counters. */
struct blob_counters_snapshot th_counters(struct th *t);

/* A record of a segment file: its offset and its length, padding included. */
struct th_record {
    uint64_t off;
    uint64_t len;
};

/* The chunk records of segment <seq> of a closed store (simulated disk or real folder), in file
 * order, up to <max> of them (the scan stops at the first invalid record). Returns how many. */
uint32_t th_chunk_records(struct th *t, uint64_t seq, struct th_record *out, uint32_t max);

/* Swaps the records <a> and <b> (of equal length) of segment <seq> of a closed store: a
 * misdirected write, which leaves each a valid record. */
void th_swap_records(struct th *t, uint64_t seq, const struct th_record *a,
                     const struct th_record *b);

#endif /* RINGCAS_TESTS_BLOB_HARNESS_H */
