/*
 * Test inputs that end at a PROT_NONE page (picohttpparser's trick): a parser that reads one
 * byte past its input faults at once instead of reading garbage.
 */
#ifndef RINGCAS_TESTS_PROTO_GUARD_H
#define RINGCAS_TESTS_PROTO_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Copies <len> bytes of <data> so that they end just before an inaccessible page. Each call
 * returns fresh memory; release all of it with guard_free_all(). */
const uint8_t *guard_copy(const void *data, size_t len);

void guard_free_all(void);

#endif
