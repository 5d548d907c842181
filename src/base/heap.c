/*
 * The C library's heap (see heap.h). glibc only: mallinfo2 (2.33+) and malloc_trim; other C
 * libraries keep no such arenas or return memory themselves, and the functions do nothing.
 */
#include "base/heap.h"

#include <stdbool.h>

#if defined(__GLIBC__)
#    include <malloc.h>
#endif

bool base_heap_trim(struct base_heap_trim *t, size_t min_free)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks < min_free) return false;
    if (t->trims > 0 && mi.fordblks == t->free_after && mi.uordblks == t->used_after) {
        return false; /* nothing was allocated or freed since the last trim */
    }
    (void)malloc_trim(0);
    mi = mallinfo2();
    t->free_after = mi.fordblks;
    t->used_after = mi.uordblks;
    t->trims++;
    return true;
#else
    (void)t;
    (void)min_free;
    return false;
#endif
}
