/*
 * Fuzz target: HTTP/1.1 connection input, through the real stack (session.c): the head parser
 * fed from receive buffers, keep-alive and pipelining, Content-Length and chunked bodies, the
 * cache routes (GET, HEAD and PUT of <prefix>/cas/<hash>, <prefix>/ac/<hash> with the
 * ActionResult sniff and completeness check, plain keys) and /metrics, /healthz, /readyz.
 * Each input is what a client sends on a new connection; its first byte picks the write size.
 * Afterwards the connection must be gone and everything it held given back.
 */
#include <stddef.h>
#include <stdint.h>

#include "session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_session_run(data, size, false);
    return 0;
}
