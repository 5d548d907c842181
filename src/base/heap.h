/*
 * The C library's heap: what it holds free, and giving that back to the system.
 *
 * glibc keeps what a program frees in its arenas (one per core thread here) for the next
 * malloc. A burst of large gRPC messages leaves an arena hundreds of MiB larger than what
 * the core uses once it is quiet, for as long as the process lives: the "huge memory" of a
 * cache server at rest. base_heap_trim gives it back with malloc_trim(3).
 */
#ifndef RINGCAS_BASE_HEAP_H
#define RINGCAS_BASE_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the last trim left; zero-initialise. */
struct base_heap_trim {
    size_t free_after; /* bytes free in the arenas after the last trim */
    size_t used_after; /* bytes in use after it */
    uint64_t trims;    /* trims done */
};

/*
 * Gives the arenas' free pages back to the system when at least <min_free> bytes are free in
 * them and the heap changed since the last trim (a quiet heap is not walked again). Returns
 * true when it trimmed. Walks and locks every arena in turn: call it from a thread that
 * serves nothing (a core allocating meanwhile waits for that arena), seconds apart.
 */
bool base_heap_trim(struct base_heap_trim *t, size_t min_free);

#endif /* RINGCAS_BASE_HEAP_H */
