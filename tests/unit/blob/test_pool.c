/*
 * The per-core buffer pool: classes from 4 KiB to the chunk size plus the record class,
 * buffers reused after release, the idle bound, the gauges, sizes past the largest class,
 * 4096-byte alignment.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/chunk.h"
#include "blob/pool.h"

static struct base_counter idle;
static struct base_counter taken;

static void open_pool(struct blob_pool *p, uint64_t idle_max)
{
    memset(&idle, 0, sizeof(idle));
    memset(&taken, 0, sizeof(taken));
    uint32_t chunk = 256 << 10;
    cr_assert(eq(
        int, blob_pool_init(p, chunk, blob_chunk_record_bound(chunk), idle_max, &idle, &taken), 0));
}

Test(blob_pool, sizes_fall_into_power_of_two_classes_and_the_record_class)
{
    struct blob_pool p;
    open_pool(&p, 1 << 20);
    cr_assert(eq(sz, blob_pool_class_size(&p, 1), 4096));
    cr_assert(eq(sz, blob_pool_class_size(&p, 4096), 4096));
    cr_assert(eq(sz, blob_pool_class_size(&p, 4097), 8192));
    cr_assert(eq(sz, blob_pool_class_size(&p, 65536 + 51), 131072));
    cr_assert(eq(sz, blob_pool_class_size(&p, 256 << 10), 256 << 10));
    size_t rec = blob_chunk_record_bound(256 << 10);
    cr_assert(eq(sz, blob_pool_class_size(&p, rec), (rec + 4095) & ~(size_t)4095));
    /* Past the largest class (data written with larger chunks): its own size, page-aligned. */
    cr_assert(eq(sz, blob_pool_class_size(&p, 1 << 20), 1 << 20));
    blob_pool_deinit(&p);
}

Test(blob_pool, a_released_buffer_is_handed_out_again)
{
    struct blob_pool p;
    open_pool(&p, 1 << 20);
    uint8_t *a = blob_pool_get(&p, 200000);
    cr_assert(ne(ptr, a, NULL));
    cr_assert(eq(u64, (uintptr_t)a % 4096, 0), "O_DIRECT-aligned");
    memset(a, 1, 256 << 10);
    cr_assert(eq(u64, base_counter_get(&taken), 1));
    blob_pool_put(&p, a, 200000);
    cr_assert(eq(u64, base_counter_get(&taken), 0));
    cr_assert(eq(u64, base_counter_get(&idle), 256 << 10));
    uint8_t *b = blob_pool_get(&p, 256 << 10); /* the same class */
    cr_assert(eq(ptr, b, a));
    cr_assert(eq(u64, base_counter_get(&idle), 0));
    uint8_t *c = blob_pool_get(&p, 100); /* another class: a new buffer */
    cr_assert(ne(ptr, c, a));
    blob_pool_put(&p, b, 256 << 10);
    blob_pool_put(&p, c, 100);
    blob_pool_put(&p, NULL, 100);
    cr_assert(eq(u64, base_counter_get(&idle), (256 << 10) + 4096));
    blob_pool_deinit(&p);
    cr_assert(eq(u64, base_counter_get(&idle), 0));
}

Test(blob_pool, idle_buffers_stay_within_the_bound)
{
    struct blob_pool p;
    open_pool(&p, 600 << 10); /* two 256 KiB buffers, not three */
    void *bufs[3];
    for (int i = 0; i < 3; i++)
        bufs[i] = blob_pool_get(&p, 256 << 10);
    cr_assert(eq(u64, base_counter_get(&taken), 3));
    for (int i = 0; i < 3; i++)
        blob_pool_put(&p, bufs[i], 256 << 10);
    cr_assert(eq(u64, base_counter_get(&idle), 512 << 10), "the third was freed");
    cr_assert(eq(u64, base_counter_get(&taken), 0));
    /* Sizes past the largest class are never kept. */
    void *big = blob_pool_get(&p, 1 << 20);
    cr_assert(ne(ptr, big, NULL));
    blob_pool_put(&p, big, 1 << 20);
    cr_assert(eq(u64, base_counter_get(&idle), 512 << 10));
    blob_pool_deinit(&p);
}

Test(blob_pool, a_pool_without_idle_room_frees_at_once)
{
    struct blob_pool p;
    open_pool(&p, 0);
    void *a = blob_pool_get(&p, 5000);
    blob_pool_put(&p, a, 5000);
    cr_assert(eq(u64, base_counter_get(&idle), 0));
    blob_pool_deinit(&p);
}
