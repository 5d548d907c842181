/*
 * index_libs: memory per indexed blob of the candidate tables, measured with mallinfo2
 * before and after inserting N entries (docs/index.md records the numbers and the decision):
 *   - ringcas's striped table (src/blob/index.c);
 *   - liburcu's RCU lock-free hash table (cds_lfht), nodes of key + location;
 *   - Concurrency Kit's ck_hs (a set of pointers to key + location objects).
 * Each entry carries the same payload: a 32-byte hash, the size/kind word and the location
 * (48 bytes). Usage: index_libs N
 */
#include <ck_hs.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/rculfhash.h>
#include <urcu/urcu-memb.h>

#include "blob/index.h"

struct payload {
    uint8_t hash[32];
    uint64_t meta;
    uint32_t seg;
    uint32_t off8;
};

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void fill(struct payload *p, uint64_t n)
{
    for (int i = 0; i < 4; i++) {
        uint64_t v = mix(n * 4 + (uint64_t)i);
        memcpy(p->hash + 8 * i, &v, 8);
    }
    p->meta = n;
    p->seg = 1;
    p->off8 = (uint32_t)n;
}

static size_t used(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* ---- ringcas ---- */

static double measure_ringcas(uint64_t n)
{
    size_t before = used();
    struct blob_index *idx = blob_index_create();
    for (uint64_t i = 0; i < n; i++) {
        struct payload p;
        fill(&p, i);
        struct blob_key k = { .kind = BLOB_KIND_CAS, .digest_fn = 1, .size = i };
        memcpy(k.hash, p.hash, 32);
        struct blob_index_value v = { .loc = { .seg = 1, .off8 = (uint32_t)i }, .size = i };
        if (blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP) != 1) abort();
    }
    double per = (double)(used() - before) / (double)n;
    blob_index_destroy(idx);
    return per;
}

/* ---- liburcu ---- */

struct urcu_node {
    struct cds_lfht_node node; /* next pointer + reverse hash: 16 bytes */
    struct payload p;
};

static int urcu_match(struct cds_lfht_node *node, const void *key)
{
    struct urcu_node *u = caa_container_of(node, struct urcu_node, node);
    return memcmp(u->p.hash, key, 32) == 0;
}

static double measure_urcu(uint64_t n)
{
    urcu_memb_register_thread();
    size_t before = used();
    struct cds_lfht *ht = cds_lfht_new_flavor(
        1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, &urcu_memb_flavor, NULL);
    for (uint64_t i = 0; i < n; i++) {
        struct urcu_node *u = malloc(sizeof(*u));
        cds_lfht_node_init(&u->node);
        fill(&u->p, i);
        unsigned long h;
        memcpy(&h, u->p.hash, sizeof(h));
        urcu_memb_read_lock();
        cds_lfht_add_unique(ht, h, urcu_match, u->p.hash, &u->node);
        urcu_memb_read_unlock();
    }
    /* Resizes run in a worker thread: wait for the table to settle. */
    for (int i = 0; i < 50; i++) {
        urcu_memb_synchronize_rcu();
    }
    double per = (double)(used() - before) / (double)n;
    urcu_memb_unregister_thread();
    return per;
}

/* ---- Concurrency Kit ---- */

static void *ck_alloc(size_t r)
{
    return malloc(r);
}

static void ck_free(void *p, size_t b, bool r)
{
    (void)b;
    (void)r;
    free(p);
}

static struct ck_malloc ck_mem = { .malloc = ck_alloc, .free = ck_free };

static unsigned long ck_hash(const void *object, unsigned long seed)
{
    const struct payload *p = object;
    unsigned long h;
    memcpy(&h, p->hash, sizeof(h));
    return h ^ seed;
}

static bool ck_compare(const void *a, const void *b)
{
    return memcmp(((const struct payload *)a)->hash, ((const struct payload *)b)->hash, 32) == 0;
}

static double measure_ck(uint64_t n)
{
    size_t before = used();
    ck_hs_t hs;
    if (!ck_hs_init(&hs, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, ck_hash, ck_compare, &ck_mem, 1024,
                    42))
        abort();
    for (uint64_t i = 0; i < n; i++) {
        struct payload *p = malloc(sizeof(*p));
        fill(p, i);
        unsigned long h = CK_HS_HASH(&hs, ck_hash, p);
        if (!ck_hs_put(&hs, h, p)) abort();
    }
    return (double)(used() - before) / (double)n;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    printf("index_libs n=%llu ringcas=%.1f urcu_lfht=%.1f ck_hs=%.1f (bytes per entry, 48 of "
           "them payload)\n",
           (unsigned long long)n, measure_ringcas(n), measure_urcu(n), measure_ck(n));
    return 0;
}
