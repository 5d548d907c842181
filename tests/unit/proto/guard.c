#include "guard.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>

#define GUARD_MAX 4096

static struct {
    void *base;
    size_t size;
} maps[GUARD_MAX];

static int nmaps;

const uint8_t *guard_copy(const void *data, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    size_t size = (data_pages + 1) * page;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(base != MAP_FAILED);
    cr_assert(mprotect(base + data_pages * page, page, PROT_NONE) == 0);
    cr_assert(nmaps < GUARD_MAX);
    maps[nmaps].base = base;
    maps[nmaps].size = size;
    nmaps++;
    uint8_t *p = base + data_pages * page - len;
    if (len) memcpy(p, data, len);
    return p;
}

void guard_free_all(void)
{
    for (int i = 0; i < nmaps; i++)
        munmap(maps[i].base, maps[i].size);
    nmaps = 0;
}
