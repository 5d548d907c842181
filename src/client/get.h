/*
 * Streaming download: google.bytestream.ByteStream/Read of one CAS blob, identity or
 * compressed-blobs/zstd (decompressed inline), verified as it arrives: the bytes handed to
 * the sink are hashed, and the get fails with -EBADMSG when the blob turns out longer or
 * shorter than its digest says, or its hash differs (the sink has seen the bytes by then: a
 * caller that writes a file writes it under a temporary name and renames it on success).
 *
 * The sink receives the blob's bytes in order; it may call client_get_pause() to stop taking
 * more (the bytes that keep arriving wait in the call, the HTTP/2 window closes behind them,
 * and the server stops sending) and client_get_resume() later. client_get_close() ends the
 * get early: RST_STREAM(CANCEL), which makes the server cancel its pending disk reads; done
 * follows with -ECANCELED.
 */
#ifndef RINGCAS_CLIENT_GET_H
#define RINGCAS_CLIENT_GET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/bytestream.h"
#include "client/call.h"
#include "client/digest.h"
#include "client/resource.h"

struct client_get;

/*
 * <len> more bytes of the blob at <data> (valid during the call only; <len> > 0). Returns 0,
 * or -errno to end the get with that error (the stream is reset).
 */
typedef int client_get_sink_fn(struct client_get *g, const uint8_t *data, size_t len);

struct client_get_options {
    struct client_call_options call; /* deadline, done (gets &get->call), user */
    const char *instance;            /* instance name; "" for none (borrowed until start
                                        returns) */
    struct client_digest digest;     /* the blob */
    bool zstd;                       /* read compressed-blobs/zstd and decompress */
    client_get_sink_fn *sink;        /* NULL: the bytes are verified and dropped */
    bool skip_verify;                /* no SHA-256 of the bytes (the size is still checked):
                                        for load generators that only measure the server */
};

/* Fills <o> with defaults: identity, no sink, no deadline. */
void client_get_options_default(struct client_get_options *o);

/* The ReadResponse decoder's states (hand-written: a data span may be taken in part). */
enum client_get_dec_state {
    CLIENT_GET_KEY = 0,     /* reading a field key */
    CLIENT_GET_LEN,         /* reading a LEN field's length */
    CLIENT_GET_DATA,        /* inside `data` (field 10) */
    CLIENT_GET_SKIP_VARINT, /* skipping an unknown varint */
    CLIENT_GET_SKIP_BYTES,  /* skipping an unknown field's bytes */
};

struct client_get {
    struct client_call call; /* first: done receives it */
    uint64_t received;       /* blob bytes handed to the sink */
    /* private: */
    struct client_get_options o;
    char name[PROTO_RESOURCE_NAME_MAX + 1]; /* read resource name */
    uint8_t req[CLIENT_READ_REQUEST_MAX];   /* the framed ReadRequest */
    struct client_seg req_seg;              /* ... queued */
    uint8_t dec_state;                      /* enum client_get_dec_state */
    uint8_t tmp_len;                        /* bytes of a varint split across inputs */
    uint8_t tmp[10];                        /* ... */
    uint32_t field;                         /* field being read */
    uint64_t left;                          /* bytes left of the field being read */
    struct client_sha256 sha;               /* hash of the bytes handed to the sink */
    void *dctx;                             /* ZSTD_DCtx, created on first use */
    uint8_t *zout;                          /* decompressed output */
    size_t zout_size;                       /* its capacity */
    bool frame_done;                        /* the zstd frame ended (decoder said 0) */
};

/* Prepares <g> once (buffers are allocated on first start and reused). */
MUST_CHECK int client_get_init(struct client_get *g, struct client *cl);

/* Releases <g>'s buffers; <g> must not be active. NULL is accepted. */
void client_get_deinit(struct client_get *g);

/*
 * Starts reading on <conn>. Returns 0, or -EINVAL (instance name), -ENAMETOOLONG, -ENOMEM,
 * -EPIPE (connection not usable); then done will not run. Outcomes in done: 0 (every byte
 * arrived and matched the digest); -ENOENT (not found); -EBADMSG (the bytes do not match the
 * digest, or a broken zstd stream); -ETIMEDOUT; -ECANCELED (client_get_close); the sink's
 * error; or another status mapped (client_status_errno).
 */
MUST_CHECK int client_get_start(struct client_get *g, struct client_conn *conn,
                                const struct client_get_options *o);

/* Ends the get early (RST_STREAM CANCEL): the server cancels its reads; done follows. */
void client_get_close(struct client_get *g);

/* Stops / resumes taking bytes (see above). Pause is honoured between sink calls. */
void client_get_pause(struct client_get *g);
void client_get_resume(struct client_get *g);

#endif /* RINGCAS_CLIENT_GET_H */
