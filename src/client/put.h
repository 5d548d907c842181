/*
 * Streaming upload: google.bytestream.ByteStream/Write of one CAS blob whose digest the
 * caller computed up front (the resource name needs it: client_digest_fd hashes a file in
 * one pass).
 *
 * The content is sent in messages of chunk_size uncompressed bytes, at most <slots> of them
 * queued or in a send at a time: a file is read through the ring (IORING_OP_READ) into a
 * free slot only when an earlier message has left the socket, so memory stays bounded and
 * the file is read as fast as HTTP/2 flow control lets it go. Each chunk is hashed as it is
 * read and, with zstd, compressed inline (one zstd frame over the whole upload, flushed at
 * every message, resource name compressed-blobs/zstd/...). The last message (finish_write)
 * is queued only after the hash of everything read matched the digest: if the file changed
 * since it was hashed, the stream is reset (RST_STREAM CANCEL) before the server was asked
 * to commit, nothing becomes visible, and the put fails with -EILSEQ.
 *
 * A server that already has the blob may answer early (committed_size = size, or -1 for a
 * compressed upload): the put then succeeds without sending the rest.
 */
#ifndef RINGCAS_CLIENT_PUT_H
#define RINGCAS_CLIENT_PUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/bytestream.h"
#include "client/call.h"
#include "client/digest.h"
#include "client/resource.h"

#define CLIENT_PUT_SLOTS_MAX     8u
#define CLIENT_PUT_CHUNK_DEFAULT (256u << 10)
#define CLIENT_PUT_CHUNK_MIN     (4u << 10)
#define CLIENT_PUT_CHUNK_MAX     (1u << 20)

struct client_put_options {
    struct client_call_options call; /* deadline, done (gets &put->call), user */
    const char *instance;            /* instance name; "" for none (borrowed until start
                                        returns) */
    struct client_digest digest;     /* of the uncompressed content */
    bool zstd;                       /* upload compressed-blobs/zstd */
    int fd;                          /* read the content from this file (offset 0), or -1 */
    const uint8_t *data;             /* or from memory: digest.size bytes, unchanged until
                                        done (fd == -1) */
    uint32_t chunk_size;             /* uncompressed bytes per message; 0: 256 KiB */
    uint32_t slots;                  /* messages queued at once, 1..8; 0: 3 */
    int zstd_level;                  /* 0: zstd's default */
    bool trust_data;                 /* memory source only: do not hash it again while
                                        sending (the caller vouches for the digest; a load
                                        generator saves the CPU) */
};

/* Fills <o> with defaults: no deadline, no source, identity. */
void client_put_options_default(struct client_put_options *o);

struct client_put_slot {
    struct client_seg hdr_seg;            /* the message header */
    struct client_seg data_seg;           /* the data bytes */
    uint8_t *raw;                         /* chunk bytes read from the file */
    uint8_t *z;                           /* compressed chunk */
    uint32_t segs_out;                    /* segs queued and not yet released */
    uint32_t got;                         /* bytes of the chunk read so far */
    uint32_t want;                        /* bytes of the chunk */
    uint8_t hdr[CLIENT_WRITE_HEADER_MAX]; /* header bytes */
};

struct client_put {
    struct client_call call; /* first: done receives it */
    int64_t committed_size;  /* WriteResponse.committed_size (valid when call.result.err == 0) */
    /* private: */
    struct client_put_options o;
    char name[PROTO_RESOURCE_NAME_MAX + 1];     /* write resource name */
    uint8_t first_hdr[CLIENT_WRITE_HEADER_MAX]; /* header of the message with the name */
    size_t name_len;                            /* its bytes */
    struct client_put_slot slots[CLIENT_PUT_SLOTS_MAX];
    uint32_t raw_size;        /* allocated bytes of each slot's raw */
    size_t z_size;            /* allocated bytes of each slot's z */
    uint32_t slot_count;      /* slots in use for this upload */
    uint32_t next_slot;       /* slot of the next message (round robin) */
    uint32_t free_slots;      /* slots with nothing queued */
    bool reading;             /* a read op is in flight */
    bool last_queued;         /* the finish_write message is queued */
    bool first_queued;        /* the message with the name is queued */
    bool got_response;        /* a WriteResponse arrived */
    uint64_t read_off;        /* uncompressed bytes read so far */
    uint64_t sent_off;        /* data bytes queued so far (write_offset) */
    uint32_t resp_len;        /* bytes of the response gathered */
    uint8_t resp[64];         /* the WriteResponse */
    struct client_sha256 sha; /* hash of what was read */
    void *cctx;               /* ZSTD_CCtx, created on first use */
};

/* Prepares <p> once (its buffers are allocated on first start and reused). */
MUST_CHECK int client_put_init(struct client_put *p, struct client *cl);

/* Releases <p>'s buffers; <p> must not be active. NULL is accepted. */
void client_put_deinit(struct client_put *p);

/*
 * Starts uploading on <conn>. The fd (if any) must stay open until done. Returns 0, or
 * -EINVAL (bad options, instance name), -ENAMETOOLONG, -ENOMEM, -EPIPE (connection not
 * usable); then done will not run. Outcomes in done: 0; -EILSEQ (content changed since it
 * was hashed, or shorter); -ETIMEDOUT; -ECANCELED; a read error of the file; or the
 * server's status mapped (client_status_errno).
 */
MUST_CHECK int client_put_start(struct client_put *p, struct client_conn *conn,
                                const struct client_put_options *o);

#endif /* RINGCAS_CLIENT_PUT_H */
