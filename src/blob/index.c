/*
 * The striped index (see index.h for the layout and docs/index.md for the measurement).
 *
 * Invariants of a stripe, under its mutex:
 * - entries [0, count) are live and dense; slot tables hold exactly one slot per entry;
 * - a slot is 0 (empty) or (tag << 24 | (entry + 1)); probing from an entry's home position
 *   reaches its slot before any empty slot (linear probing, backward-shift deletion);
 * - count <= slots_size * 7/8 after every insert (the table doubles before that).
 */
#include "blob/index.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES       256U
#define BLOCK_SHIFT   6U
#define BLOCK_ENTRIES (1U << BLOCK_SHIFT)
#define ENTRY_MAX     ((1U << 24) - 2)
#define SLOTS_MIN     64U

/* meta: size in bits 0..39, kind 40..41, digest function 42..47, span 48..63. */
struct entry {
    uint8_t hash[BLOB_HASH_SIZE]; /* the key's hash */
    uint64_t meta;                /* size | kind | digest_fn | span */
    uint32_t seg;                 /* blob_loc.seg */
    uint32_t off8;                /* blob_loc.off8 */
};

STATIC_ASSERT(sizeof(struct entry) == 48, "an index entry is 48 bytes");

struct stripe {
    pthread_mutex_t lock;   /* guards everything below */
    struct entry **blocks;  /* blocks of BLOCK_ENTRIES entries */
    uint32_t blocks_len;    /* allocated blocks */
    uint32_t blocks_size;   /* capacity of <blocks> */
    uint32_t count;         /* live entries */
    uint32_t *slots;        /* open-addressing table */
    uint32_t slots_size;    /* power of two */
    _Atomic uint64_t bytes; /* memory held (read without the lock) */
} __attribute__((aligned(64)));

struct blob_index {
    struct stripe stripes[STRIPES];
};

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static struct stripe *stripe_of(struct blob_index *idx, const uint8_t *hash)
{
    return &idx->stripes[hash[0]];
}

static uint32_t home_of(const uint8_t *hash, uint32_t mask)
{
    return (uint32_t)(load_u64(hash + 2) & mask);
}

static uint32_t tag_of(const uint8_t *hash)
{
    return (uint32_t)hash[1] << 24;
}

static struct entry *entry_at(struct stripe *st, uint32_t i)
{
    DEBUG_ASSERT(i < st->count);
    return &st->blocks[i >> BLOCK_SHIFT][i & (BLOCK_ENTRIES - 1)];
}

static uint64_t meta_of(const struct blob_key *k, uint64_t size, uint16_t span)
{
    return (size & BLOB_SIZE_MAX) | ((uint64_t)(k->kind & 3) << 40) |
           ((uint64_t)(k->digest_fn & 63) << 42) | ((uint64_t)span << 48);
}

static bool entry_matches(const struct entry *e, const struct blob_key *k, bool exact_size)
{
    if (memcmp(e->hash, k->hash, BLOB_HASH_SIZE) != 0) return false;
    uint64_t kind = (e->meta >> 40) & 3;
    if (kind != k->kind) return false;
    if (k->kind == BLOB_KIND_AC) return true;
    if (((e->meta >> 42) & 63) != k->digest_fn) return false;
    return !exact_size || (e->meta & BLOB_SIZE_MAX) == k->size;
}

/* Returns the slot position holding <k>, or UINT32_MAX. */
static uint32_t find_slot(struct stripe *st, const struct blob_key *k, bool exact_size)
{
    uint32_t mask = st->slots_size - 1;
    uint32_t tag = tag_of(k->hash);
    uint32_t pos = home_of(k->hash, mask);
    /* Bounded: the table is never full (load <= 7/8). */
    for (uint32_t n = 0; n < st->slots_size; n++, pos = (pos + 1) & mask) {
        uint32_t s = st->slots[pos];
        if (s == 0) return UINT32_MAX;
        if ((s & 0xff000000U) != tag) continue;
        if (entry_matches(entry_at(st, (s & 0xffffffU) - 1), k, exact_size)) return pos;
    }
    return UINT32_MAX;
}

static void slot_place(uint32_t *slots, uint32_t size, const uint8_t *hash, uint32_t value)
{
    uint32_t mask = size - 1;
    uint32_t pos = home_of(hash, mask);
    while (slots[pos] != 0) {
        pos = (pos + 1) & mask;
    }
    slots[pos] = value;
}

static int stripe_resize_slots(struct stripe *st, uint32_t size)
{
    uint32_t *slots = calloc(size, sizeof(*slots));
    if (!slots) return -ENOMEM;
    for (uint32_t i = 0; i < st->count; i++) {
        struct entry *e = entry_at(st, i);
        slot_place(slots, size, e->hash, tag_of(e->hash) | (i + 1));
    }
    free(st->slots);
    atomic_fetch_add(&st->bytes, (uint64_t)(size - st->slots_size) * sizeof(*slots));
    st->slots = slots;
    st->slots_size = size;
    return 0;
}

static int stripe_grow_slots(struct stripe *st)
{
    return stripe_resize_slots(st, st->slots_size ? st->slots_size * 2 : SLOTS_MIN);
}

static int stripe_add_block(struct stripe *st)
{
    if (st->blocks_len == st->blocks_size) {
        uint32_t size = st->blocks_size ? st->blocks_size * 2 : 4;
        /* An array of pointers to blocks. */
        struct entry **blocks = realloc(st->blocks, size * sizeof(struct entry *)); /* NOLINT */
        if (!blocks) return -ENOMEM;
        atomic_fetch_add(&st->bytes, (uint64_t)(size - st->blocks_size) * sizeof(void *));
        st->blocks = blocks;
        st->blocks_size = size;
    }
    struct entry *b = malloc(BLOCK_ENTRIES * sizeof(*b));
    if (!b) return -ENOMEM;
    st->blocks[st->blocks_len++] = b;
    atomic_fetch_add(&st->bytes, BLOCK_ENTRIES * sizeof(*b));
    return 0;
}

struct blob_index *blob_index_create(void)
{
    struct blob_index *idx = aligned_alloc(64, sizeof(*idx));
    if (!idx) return NULL;
    memset(idx, 0, sizeof(*idx));
    for (uint32_t i = 0; i < STRIPES; i++) {
        struct stripe *st = &idx->stripes[i];
        int rc = pthread_mutex_init(&st->lock, NULL);
        ASSERT(rc == 0);
        atomic_store(&st->bytes, sizeof(*st));
    }
    return idx;
}

void blob_index_destroy(struct blob_index *idx)
{
    if (!idx) return;
    for (uint32_t i = 0; i < STRIPES; i++) {
        struct stripe *st = &idx->stripes[i];
        for (uint32_t b = 0; b < st->blocks_len; b++) {
            free(st->blocks[b]);
        }
        free(st->blocks);
        free(st->slots);
        pthread_mutex_destroy(&st->lock);
    }
    free(idx);
}

static void value_of(const struct entry *e, struct blob_index_value *out)
{
    out->size = e->meta & BLOB_SIZE_MAX;
    out->loc.seg = e->seg;
    out->loc.off8 = e->off8;
    out->loc.span = (uint16_t)(e->meta >> 48);
}

bool blob_index_get(struct blob_index *idx, const struct blob_key *k, struct blob_index_value *out)
{
    struct stripe *st = stripe_of(idx, k->hash);
    pthread_mutex_lock(&st->lock);
    bool found = false;
    if (st->slots_size > 0) {
        uint32_t pos = find_slot(st, k, k->size != BLOB_SIZE_ANY);
        if (pos != UINT32_MAX) {
            value_of(entry_at(st, (st->slots[pos] & 0xffffffU) - 1), out);
            found = true;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return found;
}

static void entry_set(struct entry *e, const struct blob_key *k, const struct blob_index_value *v)
{
    memcpy(e->hash, k->hash, BLOB_HASH_SIZE);
    e->meta = meta_of(k, v->size, v->loc.span);
    e->seg = v->loc.seg;
    e->off8 = v->loc.off8;
}

static int stripe_insert(struct stripe *st, const struct blob_key *k,
                         const struct blob_index_value *v)
{
    if (st->count >= ENTRY_MAX) return -ENOSPC;
    if ((uint64_t)(st->count + 1) * 8 > (uint64_t)st->slots_size * 7) {
        int rc = stripe_grow_slots(st);
        if (rc < 0) return rc;
    }
    if (st->count == st->blocks_len * BLOCK_ENTRIES) {
        int rc = stripe_add_block(st);
        if (rc < 0) return rc;
    }
    uint32_t i = st->count++;
    entry_set(entry_at(st, i), k, v);
    slot_place(st->slots, st->slots_size, k->hash, tag_of(k->hash) | (i + 1));
    return 1;
}

int blob_index_put(struct blob_index *idx, const struct blob_key *k,
                   const struct blob_index_value *v, enum blob_index_put_mode mode)
{
    ASSERT(k->kind == BLOB_KIND_CAS || k->kind == BLOB_KIND_AC);
    ASSERT(v->size <= BLOB_SIZE_MAX);
    struct stripe *st = stripe_of(idx, k->hash);
    pthread_mutex_lock(&st->lock);
    int rc;
    /* A CAS key with the same hash and another size is the same blob named wrongly: it shares
     * the slot, so sizes never make two entries. */
    uint32_t pos = st->slots_size ? find_slot(st, k, false) : UINT32_MAX;
    if (pos == UINT32_MAX) {
        rc = stripe_insert(st, k, v);
    } else if (mode == BLOB_INDEX_REPLACE) {
        entry_set(entry_at(st, (st->slots[pos] & 0xffffffU) - 1), k, v);
        rc = 1;
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int blob_index_put_unless_live(struct blob_index *idx, const struct blob_key *k,
                               const struct blob_index_value *v, blob_index_alive_fn *alive,
                               void *ctx)
{
    ASSERT(k->kind == BLOB_KIND_CAS || k->kind == BLOB_KIND_AC);
    ASSERT(v->size <= BLOB_SIZE_MAX);
    struct stripe *st = stripe_of(idx, k->hash);
    pthread_mutex_lock(&st->lock);
    int rc = 0;
    uint32_t pos = st->slots_size ? find_slot(st, k, false) : UINT32_MAX;
    if (pos == UINT32_MAX) {
        rc = stripe_insert(st, k, v);
    } else {
        struct entry *e = entry_at(st, (st->slots[pos] & 0xffffffU) - 1);
        struct blob_index_value cur;
        value_of(e, &cur);
        /* Under the lock: the evictor's removal of the dead entry (blob_index_remove_at, by
         * its location) then finds the new one and leaves it. */
        if (!alive(ctx, &cur.loc)) {
            entry_set(e, k, v);
            rc = 1;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

bool blob_index_move(struct blob_index *idx, const struct blob_key *k, const struct blob_loc *from,
                     const struct blob_loc *to)
{
    struct stripe *st = stripe_of(idx, k->hash);
    pthread_mutex_lock(&st->lock);
    bool moved = false;
    uint32_t pos = st->slots_size ? find_slot(st, k, true) : UINT32_MAX;
    if (pos != UINT32_MAX) {
        struct entry *e = entry_at(st, (st->slots[pos] & 0xffffffU) - 1);
        if (e->seg == from->seg && e->off8 == from->off8) {
            e->seg = to->seg;
            e->off8 = to->off8;
            e->meta = (e->meta & ~(0xffffULL << 48)) | ((uint64_t)to->span << 48);
            moved = true;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return moved;
}

/* Finds the slot that points at entry <i> (it exists by the stripe invariant). */
static uint32_t slot_of_entry(struct stripe *st, uint32_t i)
{
    uint32_t mask = st->slots_size - 1;
    const struct entry *e = entry_at(st, i);
    uint32_t pos = home_of(e->hash, mask);
    for (uint32_t n = 0; n < st->slots_size; n++, pos = (pos + 1) & mask) {
        if ((st->slots[pos] & 0xffffffU) == i + 1) return pos;
    }
    UNREACHABLE();
}

/* Empties slot <pos> and shifts the following cluster back (no tombstones). */
static void slot_delete(struct stripe *st, uint32_t pos)
{
    uint32_t mask = st->slots_size - 1;
    uint32_t hole = pos;
    uint32_t next = (pos + 1) & mask;
    /* Bounded: the table has at least one empty slot. */
    while (st->slots[next] != 0) {
        const struct entry *e = entry_at(st, (st->slots[next] & 0xffffffU) - 1);
        uint32_t home = home_of(e->hash, mask);
        /* Move <next> into the hole unless its home lies cyclically in (hole, next]. */
        bool stays = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next);
        if (!stays) {
            st->slots[hole] = st->slots[next];
            hole = next;
        }
        next = (next + 1) & mask;
    }
    st->slots[hole] = 0;
}

static void stripe_remove(struct stripe *st, uint32_t pos)
{
    uint32_t i = (st->slots[pos] & 0xffffffU) - 1;
    uint32_t last = st->count - 1;
    slot_delete(st, pos);
    if (i != last) {
        uint32_t lpos = slot_of_entry(st, last);
        *entry_at(st, i) = *entry_at(st, last);
        st->slots[lpos] = (st->slots[lpos] & 0xff000000U) | (i + 1);
    }
    st->count--;
    /* Give back an empty last block, keeping one spare against insert/remove flapping. */
    if (st->blocks_len >= 2 && st->count + 2 * BLOCK_ENTRIES <= st->blocks_len * BLOCK_ENTRIES) {
        free(st->blocks[--st->blocks_len]);
        atomic_fetch_sub(&st->bytes, BLOCK_ENTRIES * sizeof(struct entry));
    }
}

bool blob_index_remove_at(struct blob_index *idx, const struct blob_key *k, uint32_t seg,
                          uint32_t off8)
{
    struct stripe *st = stripe_of(idx, k->hash);
    pthread_mutex_lock(&st->lock);
    bool removed = false;
    uint32_t pos = st->slots_size ? find_slot(st, k, false) : UINT32_MAX;
    if (pos != UINT32_MAX) {
        const struct entry *e = entry_at(st, (st->slots[pos] & 0xffffffU) - 1);
        if (e->seg == seg && (off8 == UINT32_MAX || e->off8 == off8)) {
            stripe_remove(st, pos);
            removed = true;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return removed;
}

int blob_index_reserve(struct blob_index *idx, uint64_t total)
{
    uint64_t per = total / STRIPES + total / STRIPES / 16 + 16; /* stripes are not all equal */
    uint64_t want = SLOTS_MIN;
    /* The smallest power of two that keeps the load at or under 7/8. */
    while (want * 7 < per * 8 && want < (1ULL << 26)) {
        want *= 2;
    }
    int rc = 0;
    for (uint32_t i = 0; i < STRIPES; i++) {
        struct stripe *st = &idx->stripes[i];
        pthread_mutex_lock(&st->lock);
        if (st->slots_size < want && rc == 0) rc = stripe_resize_slots(st, (uint32_t)want);
        pthread_mutex_unlock(&st->lock);
    }
    return rc;
}

void blob_index_prefetch(struct blob_index *idx, const struct blob_key *k)
{
    const struct stripe *st = stripe_of(idx, k->hash);
    if (st->slots_size > 0) __builtin_prefetch(&st->slots[home_of(k->hash, st->slots_size - 1)], 1);
}

uint64_t blob_index_count(struct blob_index *idx)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < STRIPES; i++) {
        struct stripe *st = &idx->stripes[i];
        pthread_mutex_lock(&st->lock);
        n += st->count;
        pthread_mutex_unlock(&st->lock);
    }
    return n;
}

uint64_t blob_index_memory(struct blob_index *idx)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < STRIPES; i++) {
        n += atomic_load(&idx->stripes[i].bytes);
    }
    return n;
}
