/*
 * The HTTP/1.1 connection as a request handler sees it (src/rpc/h1_cache.c is the handler of
 * the cache routes): how it takes the request body, answers, and streams a response.
 *
 * Every function runs on the connection's core, for the request being handled, and only
 * before the connection began to close: rpc_h1_cache_close() tells the handler when that
 * happens, and nothing here may be called after it.
 */
#ifndef RINGCAS_RPC_H1_H
#define RINGCAS_RPC_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct rpc_h1_conn;
struct ring_owner;

/* The connection's owner: ops of the handler (timers) that must end before it is freed. */
struct ring_owner *rpc_h1_owner(struct rpc_h1_conn *h);

/* ---- the request body ---- */

/*
 * Streams the body into rpc_h1_cache_body(), then calls rpc_h1_cache_body_end(). Sends
 * "100 Continue" first when the client waits for it. An empty body goes straight to
 * rpc_h1_cache_body_end().
 */
void rpc_h1_body_accept(struct rpc_h1_conn *h);

/*
 * Reads and drops the whole body, then answers <status> with no content: the request needs
 * no body (a CAS upload of a blob already present). A body past <max> bytes (a chunked one:
 * a Content-Length past it is refused before) is answered 413 as soon as it passes, and the
 * connection closes. A client waiting for "100 Continue" is answered at once instead, and the
 * connection closes after the answer.
 */
void rpc_h1_body_discard(struct rpc_h1_conn *h, int status, uint64_t max);

/* A call of rpc_h1_cache_body that returned -EINPROGRESS finished: its bytes are consumed. */
void rpc_h1_body_resume(struct rpc_h1_conn *h);

/* ---- answers ---- */

/*
 * Answers <status> with the one-line text body <text> (static). Before the handler took the
 * body (no rpc_h1_body_accept), a small body (64 KiB or less, not awaited with 100-continue)
 * is read and dropped first and the connection stays; a larger one, or a body read only in
 * part, is not read on: the connection closes after the answer (any pending
 * rpc_h1_cache_body input is given up: the handler must not touch it any more).
 */
void rpc_h1_answer(struct rpc_h1_conn *h, int status, const char *text);

/* Answers <status> with no content (a PUT that stored its body). */
void rpc_h1_answer_empty(struct rpc_h1_conn *h, int status);

/*
 * Answers a HEAD request with the fields its GET would have, and no content: 200 with a
 * Content-Length of <length>, or, when <zstd> (the GET would send zstd frames), with
 * Content-Encoding: zstd and Transfer-Encoding: chunked instead of a length.
 */
void rpc_h1_answer_head(struct rpc_h1_conn *h, uint64_t length, bool zstd);

/*
 * The 200 of this request, streamed or HEAD, was chosen by its Accept-Encoding (the stored
 * zstd frames or identity bytes at one URL): it says "Vary: Accept-Encoding", so that a
 * shared cache in front serves each client the representation it asked for.
 */
void rpc_h1_vary_encoding(struct rpc_h1_conn *h);

/*
 * The 200, 201 or 304 of this request carries "ETag: <etag>" (<etag> quoted, at most
 * RPC_H1_ETAG_MAX bytes, copied); other statuses do not.
 */
#define RPC_H1_ETAG_MAX 71 /* "<64 hex>.zst" is 70 */
void rpc_h1_etag(struct rpc_h1_conn *h, const char *etag);

/*
 * Answers 304 Not Modified (a GET or HEAD whose If-None-Match named the representation): the
 * fields its 200 would have had that a cache needs (ETag, Vary, RFC 9110 §15.4.5), and no
 * content.
 */
void rpc_h1_answer_not_modified(struct rpc_h1_conn *h);

/* ---- streamed responses ---- */

/*
 * Starts a 200 response of <length> bytes, or of zstd frames (Content-Encoding: zstd, sent
 * chunked, <length> ignored) when <zstd>. Nothing is sent before the first piece or the end.
 */
void rpc_h1_stream_begin(struct rpc_h1_conn *h, uint64_t length, bool zstd);

#define RPC_H1_STREAM_PIECES_MAX 16u /* pieces one rpc_h1_stream_pieces call sends */

/*
 * Sends the next <count> (1 .. RPC_H1_STREAM_PIECES_MAX) pieces at <pieces>, in one send:
 * their bytes (more than 0 in all) are borrowed until rpc_h1_cache_piece_sent() runs; the
 * array itself is copied.
 */
void rpc_h1_stream_pieces(struct rpc_h1_conn *h, const struct iovec *pieces, unsigned count);

/* Ends the response (the pieces added up to its length). */
void rpc_h1_stream_end(struct rpc_h1_conn *h);

/*
 * The response cannot be completed: before any byte went out it becomes an error answer
 * (<status>, <text>); after, the connection closes so the client sees a truncated body.
 */
void rpc_h1_stream_fail(struct rpc_h1_conn *h, int status, const char *text);

#endif /* RINGCAS_RPC_H1_H */
