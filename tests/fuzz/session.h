/*
 * The session harness shared by the HTTP/2 and HTTP/1.1 session fuzz targets (session.c).
 */
#ifndef RINGCAS_TESTS_FUZZ_SESSION_H
#define RINGCAS_TESTS_FUZZ_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Runs one input as a client connection: <data>[0] picks the write size, the rest is sent
 * after the HTTP/2 connection preface when <h2>, as the first bytes otherwise. Asserts that
 * everything the connection held was given back. Sets the core and store up on first use.
 */
void fuzz_session_run(const uint8_t *data, size_t size, bool h2);

#endif /* RINGCAS_TESTS_FUZZ_SESSION_H */
