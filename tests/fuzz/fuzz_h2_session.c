/*
 * Fuzz target: HTTP/2 session input, through the real stack (session.c). Each input is what a
 * client sends after the connection preface; its first byte picks the write size. Afterwards
 * the connection must be gone and everything it held given back.
 */
#include <stddef.h>
#include <stdint.h>

#include "session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_session_run(data, size, true);
    return 0;
}
