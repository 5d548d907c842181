/*
 * A latency histogram with log-linear buckets, like HdrHistogram: values (nanoseconds) below
 * 2^CLIENT_HIST_SUB_BITS are counted exactly; above, each power of two is split into
 * 2^CLIENT_HIST_SUB_BITS equal buckets, so a value is known to within 1/128 of itself
 * (0.8 %). Values past 2^CLIENT_HIST_EXP_MAX ns (about 18 minutes) land in the last bucket.
 * Recording is an index computation and an increment: no allocation, no floating point.
 *
 * One histogram belongs to one thread; merge them after the threads have stopped.
 */
#ifndef RINGCAS_CLIENT_HIST_H
#define RINGCAS_CLIENT_HIST_H

#include <stddef.h>
#include <stdint.h>

#define CLIENT_HIST_SUB_BITS 7u
#define CLIENT_HIST_EXP_MAX  40u
#define CLIENT_HIST_SUB      ((size_t)1 << CLIENT_HIST_SUB_BITS)
#define CLIENT_HIST_BUCKETS                                                                        \
    ((size_t)(CLIENT_HIST_EXP_MAX - CLIENT_HIST_SUB_BITS + 2u) * CLIENT_HIST_SUB)

struct client_hist {
    uint64_t count;                        /* values recorded */
    uint64_t sum;                          /* their sum (ns), for the mean */
    uint64_t min;                          /* smallest value; UINT64_MAX when empty */
    uint64_t max;                          /* largest value; 0 when empty */
    uint64_t buckets[CLIENT_HIST_BUCKETS]; /* counts by client_hist_index() */
};

/* Empties <h>. */
void client_hist_reset(struct client_hist *h);

/* The bucket that holds <v>. */
size_t client_hist_index(uint64_t v);

/* The largest value bucket <index> holds (its smallest: client_hist_lowest). */
uint64_t client_hist_highest(size_t index);
uint64_t client_hist_lowest(size_t index);

/* Counts <v> once. */
void client_hist_record(struct client_hist *h, uint64_t v);

/* Adds every count of <from> into <into>. */
void client_hist_merge(struct client_hist *into, const struct client_hist *from);

/*
 * The value at quantile <q_ppm> (parts per million: 500000 is the median, 999000 p99.9):
 * the highest value of the bucket where the cumulative count reaches q, at most the largest
 * value recorded. 0 for an empty histogram. <q_ppm> 1000000 gives the maximum.
 */
uint64_t client_hist_quantile(const struct client_hist *h, uint32_t q_ppm);

/* The mean in nanoseconds (0 when empty). */
uint64_t client_hist_mean(const struct client_hist *h);

#endif /* RINGCAS_CLIENT_HIST_H */
