/*
 * The striped index: lookups by kind, CAS size exactness, replace/keep, conditional move
 * and remove, growth and backward-shift deletion checked against a plain model, threads
 * on different stripes, and the memory budget (at most 64 bytes per blob, measured).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/index.h"

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void key_n(struct blob_key *k, uint64_t n, uint8_t kind)
{
    memset(k, 0, sizeof(*k));
    k->kind = kind;
    k->digest_fn = BLOB_DIGEST_SHA256;
    for (int i = 0; i < 4; i++) {
        uint64_t v = mix(n * 4 + (uint64_t)i);
        memcpy(k->hash + 8 * i, &v, 8);
    }
    k->size = n % 100000;
}

static struct blob_index_value val(uint32_t seg, uint32_t off8, uint64_t size)
{
    struct blob_index_value v = { .loc = { .seg = seg, .off8 = off8, .span = 0 }, .size = size };
    return v;
}

Test(blob_index, finds_what_was_put_and_nothing_else)
{
    struct blob_index *idx = blob_index_create();
    cr_assert(ne(ptr, idx, NULL));
    struct blob_key k;
    key_n(&k, 1, BLOB_KIND_CAS);
    struct blob_index_value v = val(3, 40, k.size);
    struct blob_index_value out;
    cr_assert(not(blob_index_get(idx, &k, &out)));
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 3));
    cr_assert(eq(u32, out.loc.off8, 40));
    cr_assert(eq(u64, out.size, k.size));
    cr_assert(eq(u64, blob_index_count(idx), 1));
    /* Another hash, the same hash as AC, the same hash with another size: all misses. */
    struct blob_key other;
    key_n(&other, 2, BLOB_KIND_CAS);
    cr_assert(not(blob_index_get(idx, &other, &out)));
    struct blob_key ac = k;
    ac.kind = BLOB_KIND_AC;
    cr_assert(not(blob_index_get(idx, &ac, &out)));
    struct blob_key sized = k;
    sized.size++;
    cr_assert(not(blob_index_get(idx, &sized, &out)), "a CAS key's size is part of it");
    blob_index_destroy(idx);
}

Test(blob_index, keep_keeps_and_replace_replaces)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 5, BLOB_KIND_CAS);
    struct blob_index_value a = val(1, 1, k.size);
    struct blob_index_value b = val(2, 2, k.size);
    struct blob_index_value out;
    cr_assert(eq(int, blob_index_put(idx, &k, &a, BLOB_INDEX_KEEP), 1));
    cr_assert(eq(int, blob_index_put(idx, &k, &b, BLOB_INDEX_KEEP), 0));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 1));
    cr_assert(eq(int, blob_index_put(idx, &k, &b, BLOB_INDEX_REPLACE), 1));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 2));
    cr_assert(eq(u64, blob_index_count(idx), 1));
    blob_index_destroy(idx);
}

Test(blob_index, ac_lookups_ignore_the_size_and_take_the_newest)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 9, BLOB_KIND_AC);
    k.size = 10;
    struct blob_index_value v1 = val(1, 8, 10);
    cr_assert(eq(int, blob_index_put(idx, &k, &v1, BLOB_INDEX_REPLACE), 1));
    k.size = 999;
    struct blob_index_value v2 = val(4, 16, 999);
    cr_assert(eq(int, blob_index_put(idx, &k, &v2, BLOB_INDEX_REPLACE), 1));
    struct blob_key look = k;
    look.size = 0;
    struct blob_index_value out;
    cr_assert(blob_index_get(idx, &look, &out));
    cr_assert(eq(u64, out.size, 999));
    cr_assert(eq(u32, out.loc.seg, 4));
    cr_assert(eq(u64, blob_index_count(idx), 1));
    blob_index_destroy(idx);
}

Test(blob_index, move_and_remove_only_touch_the_named_copy)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 11, BLOB_KIND_CAS);
    struct blob_index_value v = val(7, 100, k.size);
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    struct blob_loc wrong = { .seg = 6, .off8 = 100 };
    struct blob_loc to = { .seg = 9, .off8 = 5, .span = 2 };
    cr_assert(not(blob_index_move(idx, &k, &wrong, &to)), "moved from a copy that is not there");
    cr_assert(blob_index_move(idx, &k, &v.loc, &to));
    struct blob_index_value out;
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 9));
    cr_assert(eq(u32, out.loc.off8, 5));
    cr_assert(eq(u16, out.loc.span, 2));
    cr_assert(eq(u64, out.size, k.size), "a move keeps the size");
    /* Eviction of the old segment must not remove the moved entry. */
    cr_assert(not(blob_index_remove_at(idx, &k, 7, UINT32_MAX)));
    cr_assert(not(blob_index_remove_at(idx, &k, 9, 6)));
    cr_assert(blob_index_remove_at(idx, &k, 9, 5));
    cr_assert(not(blob_index_get(idx, &k, &out)));
    cr_assert(eq(u64, blob_index_count(idx), 0));
    blob_index_destroy(idx);
}

Test(blob_index, remove_at_any_offset_of_a_segment)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 12, BLOB_KIND_CAS);
    struct blob_index_value v = val(3, 77, k.size);
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    cr_assert(blob_index_remove_at(idx, &k, 3, UINT32_MAX));
    cr_assert(eq(u64, blob_index_count(idx), 0));
    blob_index_destroy(idx);
}

/* A model: a plain array of (n, present, seg). */
struct model {
    bool present;
    uint32_t seg;
};

static void check_model(struct blob_index *idx, const struct model *m, uint64_t n)
{
    uint64_t count = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        struct blob_index_value out;
        bool found = blob_index_get(idx, &k, &out);
        cr_assert(eq(int, found, m[i].present), "key %llu", (unsigned long long)i);
        if (found) {
            cr_assert(eq(u32, out.loc.seg, m[i].seg));
            count++;
        }
    }
    cr_assert(eq(u64, blob_index_count(idx), count));
}

Test(blob_index, random_operations_agree_with_a_model)
{
    struct blob_index *idx = blob_index_create();

    enum {
        N = 20000
    };
    struct model *m = calloc(N, sizeof(*m));
    uint64_t x = 42;
    for (int op = 0; op < 200000; op++) {
        x = mix(x);
        uint64_t i = x % N;
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        uint32_t seg = (uint32_t)(x >> 40) % 1000 + 1;
        switch ((x >> 20) % 4) {
        case 0:
        case 1: {
            struct blob_index_value v = val(seg, 1, k.size);
            int rc = blob_index_put(idx, &k, &v, BLOB_INDEX_REPLACE);
            cr_assert(eq(int, rc, 1));
            m[i].present = true;
            m[i].seg = seg;
            break;
        }
        case 2: {
            bool removed = blob_index_remove_at(idx, &k, m[i].seg, UINT32_MAX);
            cr_assert(eq(int, removed, m[i].present));
            m[i].present = false;
            break;
        }
        default: {
            struct blob_index_value out;
            cr_assert(eq(int, blob_index_get(idx, &k, &out), m[i].present));
        }
        }
    }
    check_model(idx, m, N);
    /* Remove everything: the table empties and gives back its blocks. */
    uint64_t before = blob_index_memory(idx);
    for (uint64_t i = 0; i < N; i++) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        if (m[i].present) cr_assert(blob_index_remove_at(idx, &k, m[i].seg, UINT32_MAX));
        m[i].present = false;
    }
    check_model(idx, m, N);
    cr_assert(le(u64, blob_index_memory(idx), before));
    free(m);
    blob_index_destroy(idx);
}

Test(blob_index, stays_within_64_bytes_per_blob_at_every_fill)
{
    struct blob_index *idx = blob_index_create();
    uint64_t n = 0;
    /* Past the stripes' fixed cost (256 stripes of 128 B), check the budget at many fills:
     * right after a doubling of the slot tables is the worst case. */
    for (uint64_t target = 200000; target <= 1600000; target += 100000) {
        for (; n < target; n++) {
            struct blob_key k;
            key_n(&k, n, BLOB_KIND_CAS);
            struct blob_index_value v = val(1, (uint32_t)n, k.size);
            cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
        }
        double per = (double)blob_index_memory(idx) / (double)n;
        cr_assert(le(dbl, per, 64.0), "%.1f bytes per blob at %llu blobs", per,
                  (unsigned long long)n);
    }
    cr_assert(eq(u64, blob_index_count(idx), n));
    blob_index_destroy(idx);
}

struct worker {
    struct blob_index *idx;
    uint64_t base;
    int errors;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for (uint64_t i = 0; i < 50000; i++) {
        struct blob_key k;
        key_n(&k, w->base + i, BLOB_KIND_CAS);
        struct blob_index_value v = val(2, (uint32_t)i, k.size);
        if (blob_index_put(w->idx, &k, &v, BLOB_INDEX_KEEP) != 1) w->errors++;
        struct blob_index_value out;
        if (!blob_index_get(w->idx, &k, &out) || out.loc.off8 != (uint32_t)i) w->errors++;
        if (i % 3 == 0 && !blob_index_remove_at(w->idx, &k, 2, (uint32_t)i)) w->errors++;
    }
    return NULL;
}

Test(blob_index, threads_on_the_same_table_do_not_lose_entries)
{
    struct blob_index *idx = blob_index_create();
    pthread_t th[2];
    struct worker w[2] = { { idx, 0, 0 }, { idx, 1000000, 0 } };
    for (int i = 0; i < 2; i++)
        cr_assert(eq(int, pthread_create(&th[i], NULL, hammer, &w[i]), 0));
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert(eq(int, w[0].errors + w[1].errors, 0));
    cr_assert(eq(u64, blob_index_count(idx), 2 * (50000 - 16667)));
    blob_index_destroy(idx);
}

Test(blob_index, keeps_sizes_up_to_40_bits_and_spans)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 77, BLOB_KIND_CAS);
    k.size = BLOB_SIZE_MAX;
    struct blob_index_value v = { .loc = { .seg = 0xffffffffU, .off8 = 0xfffffffeU, .span = 65535 },
                                  .size = BLOB_SIZE_MAX };
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    struct blob_index_value out;
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u64, out.size, BLOB_SIZE_MAX));
    cr_assert(eq(u32, out.loc.seg, 0xffffffffU));
    cr_assert(eq(u32, out.loc.off8, 0xfffffffeU));
    cr_assert(eq(u16, out.loc.span, 65535));
    blob_index_destroy(idx);
}

Test(blob_index, destroy_accepts_null)
{
    blob_index_destroy(NULL);
}

Test(blob_index, reserve_sizes_the_tables_and_keeps_the_budget)
{
    struct blob_index *idx = blob_index_create();
    uint64_t before = blob_index_memory(idx);
    cr_assert(eq(int, blob_index_reserve(idx, 300000), 0));
    uint64_t reserved = blob_index_memory(idx);
    cr_assert(gt(u64, reserved, before));
    /* Filling to the reserved count does not grow the slot tables further. */
    for (uint64_t i = 0; i < 300000; i++) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        blob_index_prefetch(idx, &k);
        struct blob_index_value v = val(1, (uint32_t)i, k.size);
        cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_REPLACE), 1));
    }
    double per = (double)blob_index_memory(idx) / 300000.0;
    cr_assert(le(dbl, per, 64.0), "%.1f bytes per blob after a reserve", per);
    cr_assert(eq(int, blob_index_reserve(idx, 1000), 0), "a smaller reserve changes nothing");
    for (uint64_t i = 0; i < 300000; i += 1000) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        struct blob_index_value out;
        cr_assert(blob_index_get(idx, &k, &out));
        cr_assert(eq(u32, out.loc.off8, (uint32_t)i));
    }
    blob_index_destroy(idx);
}

Test(blob_index, cas_and_ac_with_the_same_bytes_are_different_keys)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key cas;
    key_n(&cas, 3, BLOB_KIND_CAS);
    struct blob_key ac = cas;
    ac.kind = BLOB_KIND_AC;
    struct blob_index_value v1 = val(1, 1, cas.size);
    struct blob_index_value v2 = val(2, 2, 5);
    cr_assert(eq(int, blob_index_put(idx, &cas, &v1, BLOB_INDEX_KEEP), 1));
    cr_assert(eq(int, blob_index_put(idx, &ac, &v2, BLOB_INDEX_REPLACE), 1));
    cr_assert(eq(u64, blob_index_count(idx), 2));
    struct blob_index_value out;
    cr_assert(blob_index_get(idx, &cas, &out));
    cr_assert(eq(u32, out.loc.seg, 1));
    cr_assert(blob_index_get(idx, &ac, &out));
    cr_assert(eq(u32, out.loc.seg, 2));
    cr_assert(blob_index_remove_at(idx, &ac, 2, UINT32_MAX));
    cr_assert(blob_index_get(idx, &cas, &out), "removing the AC key left the CAS one");
    blob_index_destroy(idx);
}

Test(blob_index, removing_what_is_absent_changes_nothing)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 1, BLOB_KIND_CAS);
    cr_assert(not(blob_index_remove_at(idx, &k, 1, UINT32_MAX)), "empty index");
    struct blob_loc a = { .seg = 1 };
    cr_assert(not(blob_index_move(idx, &k, &a, &a)));
    struct blob_index_value v = val(1, 1, k.size);
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    struct blob_key other;
    key_n(&other, 2, BLOB_KIND_CAS);
    cr_assert(not(blob_index_remove_at(idx, &other, 1, UINT32_MAX)));
    cr_assert(eq(u64, blob_index_count(idx), 1));
    blob_index_destroy(idx);
}

Test(blob_index, churn_in_one_stripe_keeps_every_entry_findable)
{
    /* Keys that share the first hash byte land in one stripe: long clusters, many moves. */
    struct blob_index *idx = blob_index_create();

    enum {
        N = 5000
    };
    static struct blob_key keys[N];
    static bool in[N];
    for (int i = 0; i < N; i++) {
        key_n(&keys[i], (uint64_t)i, BLOB_KIND_CAS);
        keys[i].hash[0] = 7;
    }
    uint64_t x = 5;
    for (int op = 0; op < 60000; op++) {
        x = mix(x);
        int i = (int)(x % N);
        if (in[i]) {
            cr_assert(blob_index_remove_at(idx, &keys[i], 1, UINT32_MAX));
            in[i] = false;
        } else {
            struct blob_index_value v = val(1, (uint32_t)i, keys[i].size);
            cr_assert(eq(int, blob_index_put(idx, &keys[i], &v, BLOB_INDEX_KEEP), 1));
            in[i] = true;
        }
    }
    uint64_t count = 0;
    for (int i = 0; i < N; i++) {
        struct blob_index_value out;
        cr_assert(eq(int, blob_index_get(idx, &keys[i], &out), in[i]), "key %d", i);
        if (in[i]) {
            cr_assert(eq(u32, out.loc.off8, (uint32_t)i));
            count++;
        }
    }
    cr_assert(eq(u64, blob_index_count(idx), count));
    blob_index_destroy(idx);
}

Test(blob_index, the_digest_function_is_part_of_a_cas_key)
{
    struct blob_index *idx = blob_index_create();
    struct blob_key k;
    key_n(&k, 8, BLOB_KIND_CAS);
    struct blob_index_value v = val(1, 1, k.size);
    cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    struct blob_key other = k;
    other.digest_fn = 7; /* a function not built in, but the index does not care */
    struct blob_index_value out;
    cr_assert(not(blob_index_get(idx, &other, &out)));
    /* For AC keys the digest function is not part of the key. */
    struct blob_key ac;
    key_n(&ac, 9, BLOB_KIND_AC);
    cr_assert(eq(int, blob_index_put(idx, &ac, &v, BLOB_INDEX_REPLACE), 1));
    ac.digest_fn = 7;
    cr_assert(blob_index_get(idx, &ac, &out));
    blob_index_destroy(idx);
}

Test(blob_index, memory_goes_back_down_as_entries_leave)
{
    struct blob_index *idx = blob_index_create();
    uint64_t empty = blob_index_memory(idx);

    enum {
        N = 200000
    };

    for (uint64_t i = 0; i < N; i++) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        struct blob_index_value v = val(3, (uint32_t)i, k.size);
        cr_assert(eq(int, blob_index_put(idx, &k, &v, BLOB_INDEX_KEEP), 1));
    }
    uint64_t full = blob_index_memory(idx);
    for (uint64_t i = 0; i < N; i++) {
        struct blob_key k;
        key_n(&k, i, BLOB_KIND_CAS);
        cr_assert(blob_index_remove_at(idx, &k, 3, (uint32_t)i));
    }
    uint64_t after = blob_index_memory(idx);
    cr_assert(eq(u64, blob_index_count(idx), 0));
    /* Entry blocks are given back (the slot tables keep their size for the next fill). */
    cr_assert(lt(u64, after, full - (uint64_t)N * 40));
    cr_assert(gt(u64, after, empty));
    blob_index_destroy(idx);
}

/* The store's liveness, as a set of dead segments. */
static bool alive_unless_seg(void *ctx, const struct blob_loc *loc)
{
    const uint32_t *dead_seg = ctx;
    return loc->seg != *dead_seg;
}

Test(blob_index, put_unless_live_keeps_a_live_entry_and_replaces_a_dead_one)
{
    struct blob_index *idx = blob_index_create();
    cr_assert(ne(ptr, idx, NULL));
    struct blob_key k;
    key_n(&k, 7, BLOB_KIND_CAS);
    struct blob_index_value old = val(3, 40, k.size);
    struct blob_index_value copy = val(9, 8, k.size);
    uint32_t dead = 0;
    struct blob_index_value out;
    /* Absent: inserted. */
    cr_assert(eq(int, blob_index_put_unless_live(idx, &k, &old, alive_unless_seg, &dead), 1));
    /* Present and alive: kept, as a plain KEEP. */
    cr_assert(eq(int, blob_index_put_unless_live(idx, &k, &copy, alive_unless_seg, &dead), 0));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 3));
    /* Its segment dead (the evictor has not removed its entries yet): replaced. */
    dead = 3;
    cr_assert(eq(int, blob_index_put_unless_live(idx, &k, &copy, alive_unless_seg, &dead), 1));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 9));
    cr_assert(eq(u32, out.loc.off8, 8));
    cr_assert(eq(u64, blob_index_count(idx), 1));
    /* The evictor's removal of the old entry, by its place, leaves the new one. */
    cr_assert(not(blob_index_remove_at(idx, &k, 3, 40)));
    cr_assert(blob_index_get(idx, &k, &out));
    cr_assert(eq(u32, out.loc.seg, 9));
    blob_index_destroy(idx);
}
