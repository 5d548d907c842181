/*
 * The shared table of segments: seq -> file, state, size, references. Cores add their
 * active segment and seal or abandon it; readers take references; the evictor kills the
 * oldest. Liveness is published per slot in an atomic (the seq, or 0) so that lookups on the
 * hot path never take the lock.
 *
 * Invariants (under the lock): slots[seq & mask] holds a segment exactly when alive[...] holds
 * its seq and its state is not DEAD; refs >= 1 while it is in a slot; a dead segment's fd is
 * closed by blob_segment_bury() once refs reached 0, never on a core. disk_bytes sums the live
 * segments' bytes, held_bytes the dead ones' not yet in the graveyard (their unlinked files
 * still take the disk); pinned counts the segments with pins > 0, each of which is referenced
 * by every core that pins it.
 *
 * References are taken and dropped without the lock (every read takes one, on every core):
 * blob_segment_get increments refs only while it is not 0, and a struct whose refs reached 0
 * is never freed, only reused for a later segment, so a reference taken on a struct that has
 * moved on since it was read from its slot is noticed by its seq and given back.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob/internal.h"

int blob_segment_table_init(struct blob_segs *t, uint32_t cap)
{
    ASSERT(cap > 0 && (cap & (cap - 1)) == 0);
    memset(t, 0, sizeof(*t));
    t->slots = calloc(cap, sizeof(*t->slots));
    t->alive = calloc(cap, sizeof(*t->alive));
    if (!t->slots || !t->alive) {
        free((void *)(uintptr_t)t->slots);
        free((void *)(uintptr_t)t->alive);
        return -ENOMEM;
    }
    t->cap = cap;
    atomic_store(&t->next_seq, 1);
    base_list_init(&t->graveyard);
    base_list_init(&t->spares);
    base_list_init(&t->pinned_list);
    int rc = pthread_mutex_init(&t->lock, NULL);
    ASSERT(rc == 0);
    return 0;
}

/* Pages mincore(2) reports per call in blob_segment_mapped. */
#define MINCORE_PAGES 128u

/* Unmaps and closes <seg>'s file; the struct stays (type-stable, see the top). */
static void seg_close(struct blob_seg *seg, struct blob_io *io, uint64_t map_len)
{
    if (seg->map) (void)munmap((void *)(uintptr_t)seg->map, map_len);
    if (seg->fd >= 0) (void)io->ops->close(io, seg->fd);
    seg->map = NULL;
    seg->fd = -1;
}

void blob_segment_table_deinit(struct blob_segs *t, struct blob_io *io)
{
    blob_segment_bury(t, io);
    for (uint32_t i = 0; i < t->cap; i++) {
        struct blob_seg *seg = atomic_load(&t->slots[i]);
        if (!seg) continue;
        ASSERT(atomic_load(&seg->refs) == 1); /* readers are gone */
        ASSERT(seg->pins == 0);
        seg_close(seg, io, t->map_len);
        free(seg);
    }
    /* Bounded by the spare list's length. */
    for (struct base_list *node = t->spares.next, *next; node != &t->spares; node = next) {
        next = node->next;
        free(BASE_CONTAINER_OF(node, struct blob_seg, link));
    }
    base_list_init(&t->spares);
    ASSERT(t->pinned == 0);
    uint64_t held = atomic_load(&t->held_bytes);
    ASSERT(held == 0);
    free((void *)(uintptr_t)t->slots);
    free((void *)(uintptr_t)t->alive);
    pthread_mutex_destroy(&t->lock);
}

uint64_t blob_segment_next_seq(struct blob_segs *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t seq = 0;
    /* Bounded: a slot frees up within cap tries unless the table is full. */
    for (uint32_t n = 0; n < t->cap; n++) {
        uint64_t s = t->next_seq++;
        if (!atomic_load(&t->slots[s & (t->cap - 1)]) && (uint32_t)s != 0) {
            seq = s;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return seq;
}

void blob_segment_seen_seq(struct blob_segs *t, uint64_t seq)
{
    pthread_mutex_lock(&t->lock);
    if (seq >= t->next_seq) t->next_seq = seq + 1;
    pthread_mutex_unlock(&t->lock);
}

/*
 * True when mincore(2) tells the truth about <fd>'s page cache through <map>: to a process
 * that neither owns the file nor may write it, the kernel reports every page resident
 * (mm/mincore.c can_do_mincore), pages past the end of the file included. Probed on the
 * mapping's last page, past the end of any segment that fits the mapping (never cached).
 */
static bool map_honest(const struct blob_segs *t, const uint8_t *map, int fd)
{
    struct stat st;
    if (t->map_len <= t->map_page || fstat(fd, &st) < 0) return false;
    uint64_t last = (t->map_len - 1) & ~(t->map_page - 1); /* the mapping's last page */
    if ((uint64_t)st.st_size > last) return false;
    unsigned char v = 1;
    if (mincore((void *)(uintptr_t)(map + last), t->map_page, &v) < 0) return false;
    return (v & 1) == 0;
}

struct blob_seg *blob_segment_add(struct blob_segs *t, uint64_t seq, int fd, uint64_t bytes,
                                  enum blob_seg_state state)
{
    ASSERT(state != BLOB_SEG_DEAD);
    const uint8_t *map = NULL;
    if (t->map_len > 0) {
        /* A failed map only means this segment's reads go through the ring. */
        void *m = mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, fd, 0);
        map = m != MAP_FAILED ? m : NULL;
        if (map && !map_honest(t, map, fd)) {
            (void)munmap(m, t->map_len);
            map = NULL;
        }
    }
    pthread_mutex_lock(&t->lock);
    uint32_t slot = (uint32_t)(seq & (t->cap - 1));
    struct blob_seg *seg = NULL;
    if (!atomic_load(&t->slots[slot])) {
        struct base_list *spare = base_list_pop_head(&t->spares);
        seg = spare ? BASE_CONTAINER_OF(spare, struct blob_seg, link) : calloc(1, sizeof(*seg));
    }
    if (!seg) {
        pthread_mutex_unlock(&t->lock);
        if (map) (void)munmap((void *)(uintptr_t)map, t->map_len);
        return NULL;
    }
    /*
     * A reused struct may meet a blob_segment_get that read it from its old slot: that one
     * can only take a reference once refs is 1 again, stored last, and then sees this seq.
     */
    atomic_store(&seg->seq, seq);
    seg->fd = fd;
    seg->map = map;
    ASSERT(seg->pins == 0); /* a spare's last pin went before its last reference */
    seg->state = (uint8_t)state;
    atomic_store(&seg->bytes, bytes);
    atomic_store(&seg->reserved, 0);
    base_list_init(&seg->link);
    base_list_init(&seg->pin_link);
    atomic_store(&seg->refs, 1);
    atomic_store(&t->slots[slot], seg);
    t->count++;
    atomic_store(&t->alive[slot], seq);
    atomic_fetch_add(&t->disk_bytes, bytes);
    if (seq >= t->next_seq) t->next_seq = seq + 1;
    pthread_mutex_unlock(&t->lock);
    return seg;
}

bool blob_segment_is_alive(struct blob_segs *t, uint32_t seg32)
{
    uint64_t v = atomic_load_explicit(&t->alive[seg32 & (t->cap - 1)], memory_order_acquire);
    return v != 0 && (uint32_t)v == seg32;
}

/* Takes a reference on <seg> unless its count already reached 0 (dead, maybe reused since). */
static bool seg_try_ref(struct blob_seg *seg)
{
    uint32_t refs = atomic_load_explicit(&seg->refs, memory_order_relaxed);
    /* Bounded by the references taken and dropped meanwhile by other threads. */
    do {
        if (refs == 0) return false;
    } while (!atomic_compare_exchange_weak_explicit(&seg->refs, &refs, refs + 1,
                                                    memory_order_acquire, memory_order_relaxed));
    return true;
}

/*
 * Lock-free: a reference on what the slot holds, kept when the struct still is segment
 * <seg32> and alive. When the slot changed under us (a struct dead or reused meanwhile), the
 * lookup is done again under the lock.
 */
struct blob_seg *blob_segment_get(struct blob_segs *t, uint32_t seg32)
{
    uint32_t slot = seg32 & (t->cap - 1);
    struct blob_seg *seg = atomic_load_explicit(&t->slots[slot], memory_order_acquire);
    if (!seg) return NULL;
    if (seg_try_ref(seg)) {
        if ((uint32_t)atomic_load_explicit(&seg->seq, memory_order_relaxed) == seg32 &&
            blob_segment_is_alive(t, seg32)) {
            return seg;
        }
        blob_segment_put(t, seg);
    }
    pthread_mutex_lock(&t->lock);
    seg = atomic_load(&t->slots[slot]);
    if (seg && ((uint32_t)seg->seq != seg32 || seg->state == BLOB_SEG_DEAD)) seg = NULL;
    if (seg) atomic_fetch_add(&seg->refs, 1);
    pthread_mutex_unlock(&t->lock);
    return seg;
}

/* ---- reads through the mappings: SIGBUS ---- */

/* The guarded read running on this thread (blob_map_guarded), or NULL. */
static _Thread_local sigjmp_buf *map_guard;
static pthread_once_t map_guard_once = PTHREAD_ONCE_INIT;

/*
 * A page of a mapping that the kernel had dropped from the page cache after mincore(2) saw it
 * and could not read back raises SIGBUS on the access. Inside blob_map_guarded the read ends
 * with -EIO; anywhere else the process stops, with a line that says why, instead of serving
 * bytes it could not read.
 */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    sigjmp_buf *jb = map_guard;
    if (jb) {
        map_guard = NULL;
        /* The guarded code is ours and reentrant: it only reads the mapping. */
        siglongjmp(*jb, 1); /* NOLINT(bugprone-signal-handler) */
    }
    static const char msg[] = "ringcas: SIGBUS: a read through a segment's mapping failed (a "
                              "disk error on a page the kernel had dropped); stopping\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    /* Back to the default action: the access runs again and the process ends with SIGBUS. */
    (void)signal(SIGBUS, SIG_DFL);
}

static void map_guard_install_once(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    /* NODEFER: a guarded read leaves by siglongjmp without restoring the signal mask. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    (void)sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGBUS, &sa, NULL);
}

void blob_map_guard_install(void)
{
    (void)pthread_once(&map_guard_once, map_guard_install_once);
}

int blob_map_guarded(blob_map_fn *fn, void *arg)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0) != 0) return -EIO; /* the handler cleared map_guard */
    map_guard = &jb;
    int rc = fn(arg);
    map_guard = NULL;
    return rc;
}

struct map_copy {
    void *dst;
    const void *src;
    size_t n;
};

static int map_copy_fn(void *arg)
{
    struct map_copy *c = arg;
    memcpy(c->dst, c->src, c->n);
    return 0;
}

int blob_map_copy(void *dst, const void *src, size_t n)
{
    struct map_copy c = { dst, src, n };
    return blob_map_guarded(map_copy_fn, &c);
}

void blob_segment_table_trust_cache(struct blob_segs *t)
{
    t->map_trust = true;
}

void blob_segment_table_map(struct blob_segs *t, uint64_t len)
{
    ASSERT(t->count == 0);
    blob_map_guard_install();
    long page = sysconf(_SC_PAGESIZE);
    t->map_page = page > 0 ? (uint64_t)page : 4096;
    t->map_len = len;
}

const uint8_t *blob_segment_mapped(const struct blob_segs *t, const struct blob_seg *seg,
                                   uint64_t off, uint32_t len)
{
    if (!seg->map || len == 0 || off >= t->map_len || len > t->map_len - off) return NULL;
    if (t->map_trust) return seg->map + off;
    uint64_t end = off + len;
    uint64_t page = t->map_page;
    uint64_t step = (uint64_t)MINCORE_PAGES * page;
    unsigned char vec[MINCORE_PAGES];
    /* Bounded by len / step: one call for a record up to 512 KiB (a 256 KiB chunk). */
    for (uint64_t p = off & ~(page - 1); p < end; p += step) {
        uint64_t n = end - p < step ? end - p : step;
        if (mincore((void *)(uintptr_t)(seg->map + p), n, vec) < 0) return NULL;
        uint64_t pages = (n + page - 1) / page;
        for (uint64_t i = 0; i < pages; i++) { /* bounded by MINCORE_PAGES */
            if (!(vec[i] & 1)) return NULL;
        }
    }
    return seg->map + off;
}

void blob_segment_ref(struct blob_seg *seg)
{
    uint32_t before = atomic_fetch_add(&seg->refs, 1);
    ASSERT(before > 0); /* the caller's reference keeps it from the graveyard */
}

void blob_segment_put(struct blob_segs *t, struct blob_seg *seg)
{
    if (!seg) return;
    /* Only a dead segment can reach 0: the table's own reference goes when it dies. */
    if (atomic_fetch_sub_explicit(&seg->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_lock(&t->lock);
    ASSERT(seg->state == BLOB_SEG_DEAD);
    ASSERT(seg->pins == 0);
    /* Its file goes with the next bury, which the evictor runs after it measures; counted as
     * closing before it leaves held, so that update_budget never finds it in neither. */
    atomic_fetch_add(&t->closing_bytes, atomic_load(&seg->bytes));
    atomic_fetch_sub(&t->held_bytes, atomic_load(&seg->bytes));
    base_list_add_tail(&t->graveyard, &seg->link);
    pthread_mutex_unlock(&t->lock);
}

bool blob_segment_pin(struct blob_segs *t, struct blob_seg *seg, uint32_t max)
{
    pthread_mutex_lock(&t->lock);
    ASSERT(atomic_load(&seg->refs) > 1 || seg->state == BLOB_SEG_DEAD); /* the caller's */
    bool ok = seg->pins > 0 || t->pinned < max;
    if (ok && seg->pins++ == 0) {
        t->pinned++;
        base_list_add_tail(&t->pinned_list, &seg->pin_link);
    }
    pthread_mutex_unlock(&t->lock);
    return ok;
}

void blob_segment_unpin(struct blob_segs *t, struct blob_seg *seg)
{
    pthread_mutex_lock(&t->lock);
    ASSERT(seg->pins > 0);
    ASSERT(t->pinned > 0);
    if (--seg->pins == 0) {
        t->pinned--;
        base_list_del(&seg->pin_link);
    }
    pthread_mutex_unlock(&t->lock);
}

/*
 * The pinned list, not the slots: eviction clears a segment's slot when it kills it, while the
 * pins keep the struct (and its file) until the last queued key in it is copied. A pin holds
 * a reference, so one more can be taken under the lock.
 */
struct blob_seg *blob_segment_get_pinned(struct blob_segs *t, uint32_t seg32)
{
    struct blob_seg *found = NULL;
    pthread_mutex_lock(&t->lock);
    /* Bounded by the pinned segments (pin_max in refresh.c). */
    BASE_LIST_FOR_EACH(it, &t->pinned_list)
    {
        struct blob_seg *seg = BASE_CONTAINER_OF(it, struct blob_seg, pin_link);
        if ((uint32_t)atomic_load(&seg->seq) == seg32) {
            found = seg;
            break;
        }
    }
    if (found) blob_segment_ref(found);
    pthread_mutex_unlock(&t->lock);
    return found;
}

uint32_t blob_segment_pinned(struct blob_segs *t)
{
    pthread_mutex_lock(&t->lock);
    uint32_t n = t->pinned;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static void seg_set_bytes_locked(struct blob_segs *t, struct blob_seg *seg, uint64_t bytes)
{
    uint64_t old = atomic_exchange(&seg->bytes, bytes);
    atomic_fetch_add(&t->disk_bytes, bytes - old);
}

void blob_segment_set(struct blob_segs *t, struct blob_seg *seg, enum blob_seg_state state,
                      uint64_t bytes)
{
    ASSERT(state != BLOB_SEG_DEAD);
    pthread_mutex_lock(&t->lock);
    ASSERT(seg->state != BLOB_SEG_DEAD || state == BLOB_SEG_DEAD);
    if (seg->state != BLOB_SEG_DEAD) {
        seg->state = (uint8_t)state;
        seg_set_bytes_locked(t, seg, bytes);
    }
    pthread_mutex_unlock(&t->lock);
}

void blob_segment_set_bytes(struct blob_segs *t, struct blob_seg *seg, uint64_t bytes)
{
    pthread_mutex_lock(&t->lock);
    if (seg->state != BLOB_SEG_DEAD) seg_set_bytes_locked(t, seg, bytes);
    pthread_mutex_unlock(&t->lock);
}

void blob_segment_set_reserved(struct blob_seg *seg, uint64_t reserved)
{
    atomic_store(&seg->reserved, reserved);
}

uint64_t blob_segment_unwritten(struct blob_segs *t)
{
    uint64_t sum = 0;
    pthread_mutex_lock(&t->lock);
    /* Bounded by the table's capacity, as blob_segment_take_oldest. */
    for (uint32_t i = 0; i < t->cap; i++) {
        struct blob_seg *seg = atomic_load(&t->slots[i]);
        if (!seg) continue;
        uint64_t reserved = atomic_load(&seg->reserved);
        uint64_t bytes = atomic_load(&seg->bytes);
        if (reserved > bytes) sum += reserved - bytes;
    }
    pthread_mutex_unlock(&t->lock);
    return sum;
}

/* Marks <seg> dead under the lock; the caller owns the table's reference afterwards. */
static void seg_kill_locked(struct blob_segs *t, struct blob_seg *seg)
{
    ASSERT(seg->state != BLOB_SEG_DEAD);
    uint32_t slot = (uint32_t)(seg->seq & (t->cap - 1));
    ASSERT(atomic_load(&t->slots[slot]) == seg);
    atomic_store(&t->alive[slot], 0);
    atomic_store(&t->slots[slot], NULL);
    t->count--;
    seg->state = BLOB_SEG_DEAD;
    /* Unlinked next, its file stays on disk while anyone holds it (blob_segment_put). Added
     * before it is taken off: blob_store_used never reads less than the disk holds. */
    atomic_fetch_add(&t->held_bytes, atomic_load(&seg->bytes));
    atomic_fetch_sub(&t->disk_bytes, atomic_load(&seg->bytes));
}

struct blob_seg *blob_segment_take_oldest(struct blob_segs *t)
{
    pthread_mutex_lock(&t->lock);
    struct blob_seg *best = NULL;
    for (uint32_t i = 0; i < t->cap; i++) {
        struct blob_seg *seg = atomic_load(&t->slots[i]);
        if (!seg || seg->state == BLOB_SEG_ACTIVE) continue;
        if (!best || seg->seq < best->seq) best = seg;
    }
    if (best) seg_kill_locked(t, best);
    pthread_mutex_unlock(&t->lock);
    return best;
}

struct blob_seg *blob_segment_take_empty(struct blob_segs *t)
{
    pthread_mutex_lock(&t->lock);
    struct blob_seg *found = NULL;
    /* Bounded by the table's capacity. */
    for (uint32_t i = 0; i < t->cap && !found; i++) {
        struct blob_seg *seg = atomic_load(&t->slots[i]);
        if (seg && seg->state == BLOB_SEG_ABANDONED && atomic_load(&seg->bytes) == 0) found = seg;
    }
    if (found) seg_kill_locked(t, found);
    pthread_mutex_unlock(&t->lock);
    return found;
}

void blob_segment_kill(struct blob_segs *t, struct blob_seg *seg)
{
    pthread_mutex_lock(&t->lock);
    bool killed = false;
    if (seg->state != BLOB_SEG_DEAD) {
        seg_kill_locked(t, seg);
        killed = true;
    }
    pthread_mutex_unlock(&t->lock);
    if (killed) blob_segment_put(t, seg);
}

uint64_t blob_segment_bury(struct blob_segs *t, struct blob_io *io)
{
    uint64_t n = 0;
    struct base_list dead;
    base_list_init(&dead);
    pthread_mutex_lock(&t->lock);
    /* Move the graveyard out so closes happen without the lock. */
    struct base_list *node;
    while ((node = base_list_pop_head(&t->graveyard)) != NULL) {
        base_list_add_tail(&dead, node);
    }
    pthread_mutex_unlock(&t->lock);
    if (base_list_is_empty(&dead)) return 0;
    /* Bounded by the graveyard's length. */
    for (node = dead.next; node != &dead; node = node->next) {
        struct blob_seg *seg = BASE_CONTAINER_OF(node, struct blob_seg, link);
        seg_close(seg, io, t->map_len);
        atomic_fetch_sub(&t->closing_bytes, atomic_load(&seg->bytes));
        n += atomic_load(&seg->bytes);
    }
    pthread_mutex_lock(&t->lock);
    while ((node = base_list_pop_head(&dead)) != NULL) {
        base_list_add_tail(&t->spares, node);
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

void blob_segment_update_cold(struct blob_segs *t, uint64_t cold_bytes)
{
    pthread_mutex_lock(&t->lock);
    uint64_t below = 0;
    uint64_t acc = 0;
    /* Walk the sealed segments from the oldest; O(cap) per call, called per seal/evict. */
    for (;;) {
        struct blob_seg *next = NULL;
        for (uint32_t i = 0; i < t->cap; i++) {
            struct blob_seg *seg = atomic_load(&t->slots[i]);
            if (seg && seg->state != BLOB_SEG_ACTIVE && seg->seq >= below &&
                (!next || seg->seq < next->seq)) {
                next = seg;
            }
        }
        if (!next || acc + atomic_load(&next->bytes) > cold_bytes) break;
        acc += atomic_load(&next->bytes);
        below = next->seq + 1;
    }
    atomic_store(&t->cold_below, below);
    pthread_mutex_unlock(&t->lock);
}
