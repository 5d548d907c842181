/*
 * The chunked transfer coding of request bodies (RFC 9112 §7.1), decoded incrementally and in
 * place: the decoder walks the framing byte by byte and hands back each run of body bytes as a
 * pointer into the caller's buffer, so a body is never copied.
 *
 * Strictness: chunk sizes are hex numbers below 2^64 (leading zeros allowed); lines end in
 * CRLF; chunk extensions and trailer fields are ignored, but must follow their grammar
 * (extensions: BWS ";" name ["=" token or quoted-string], RFC 9112 §7.1.1; trailer lines: a
 * token name, a colon with no whitespace before it, a value without control characters other
 * than HTAB); each size line (with its extensions) is bounded by RPC_H1_CHUNK_LINE_MAX and the
 * trailer section by RPC_H1_TRAILER_MAX.
 */
#ifndef RINGCAS_RPC_H1_CHUNKED_H
#define RINGCAS_RPC_H1_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define RPC_H1_CHUNK_LINE_MAX 1024 /* bytes of a chunk-size line, extensions included */
#define RPC_H1_TRAILER_MAX    8192 /* bytes of the trailer section */

struct rpc_h1_chunked {
    uint8_t state;     /* private: where in the framing the decoder is */
    uint8_t digits;    /* private: 1 once a hex digit of the current chunk size was read */
    uint32_t line_len; /* private: bytes of the current size line or trailer section */
    uint64_t left;     /* private: chunk size being read, then data bytes left in the chunk */
};

/* Prepares <d> for a new body. */
void rpc_h1_chunked_init(struct rpc_h1_chunked *d);

/*
 * Decodes from <in> (<len> bytes, <len> <= INT32_MAX). Consumes framing and at most one run
 * of body bytes, and stops right after that run so the caller can hand it on. Returns the
 * number of bytes consumed (0 only when <len> is 0 or the body is complete) and sets
 * <data> and <data_len> to the body bytes among them (length 0 when none); or -EPROTO
 * (malformed framing) or -EMSGSIZE (a size of 2^64 or more, a size line or trailer
 * section over its bound), with <err_desc> (may be NULL) set to a static description.
 */
MUST_CHECK int rpc_h1_chunked_decode(struct rpc_h1_chunked *d, const uint8_t *in, size_t len,
                                     const uint8_t **data, size_t *data_len, const char **err_desc);

/* True once the last chunk and the trailer section were read. */
bool rpc_h1_chunked_is_done(const struct rpc_h1_chunked *d);

#endif /* RINGCAS_RPC_H1_CHUNKED_H */
