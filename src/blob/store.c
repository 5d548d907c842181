/*
 * The public API of the storage engine (see store.h). This first version only fixes the
 * contract so the protocol layers can build against it; the engine follows.
 */
#include "blob/store.h"

#include <errno.h>
#include <string.h>

const uint8_t blob_empty_sha256[BLOB_HASH_SIZE] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

void blob_key_cas(struct blob_key *k, const uint8_t hash[BLOB_HASH_SIZE], uint64_t size)
{
    memset(k, 0, sizeof(*k));
    k->kind = BLOB_KIND_CAS;
    k->digest_fn = BLOB_DIGEST_SHA256;
    memcpy(k->hash, hash, BLOB_HASH_SIZE);
    k->size = size;
}

void blob_key_ac(struct blob_key *k, const uint8_t key[BLOB_HASH_SIZE], uint64_t size)
{
    memset(k, 0, sizeof(*k));
    k->kind = BLOB_KIND_AC;
    k->digest_fn = BLOB_DIGEST_SHA256;
    memcpy(k->hash, key, BLOB_HASH_SIZE);
    k->size = size;
}

bool blob_key_is_empty(const struct blob_key *k)
{
    return k->kind == BLOB_KIND_CAS && k->size == 0 &&
           memcmp(k->hash, blob_empty_sha256, BLOB_HASH_SIZE) == 0;
}

/* ---- placeholders until the engine lands: every call fails cleanly ---- */

int blob_hash_from_hex(const char *hex, size_t len, uint8_t hash[BLOB_HASH_SIZE])
{
    if (len != 2 * BLOB_HASH_SIZE) return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = hex[i];
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            return -EINVAL;
        if (i % 2 == 0)
            hash[i / 2] = (uint8_t)(v << 4);
        else
            hash[i / 2] = (uint8_t)(hash[i / 2] | v);
    }
    return 0;
}

void blob_hash_to_hex(const uint8_t hash[BLOB_HASH_SIZE], char hex[2 * BLOB_HASH_SIZE + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < BLOB_HASH_SIZE; i++) {
        hex[2 * i] = digits[hash[i] >> 4];
        hex[2 * i + 1] = digits[hash[i] & 15];
    }
    hex[2 * BLOB_HASH_SIZE] = '\0';
}

int blob_sync_parse(const char *name, enum blob_sync *out)
{
    if (strcmp(name, "group") == 0)
        *out = BLOB_SYNC_GROUP;
    else if (strcmp(name, "always") == 0)
        *out = BLOB_SYNC_ALWAYS;
    else if (strcmp(name, "none") == 0)
        *out = BLOB_SYNC_NONE;
    else
        return -EINVAL;
    return 0;
}

void blob_store_options_default(struct blob_store_options *o)
{
    memset(o, 0, sizeof(*o));
    o->max_size = 10ULL << 30;
    o->segment_size = 256ULL << 20;
    o->chunk_size = 256U << 10;
    o->zstd_level = 1;
    o->sync = BLOB_SYNC_GROUP;
    o->uploads_max = 1024;
    o->readers_max = 4096;
    o->disk_queue_max = 512;
    o->write_buffer_size = 4U << 20;
    o->cores_max = 64;
    o->direct_io = true;
    o->evict_thread = true;
}

int blob_store_open(const struct blob_store_options *o, struct blob_store **out, char *why,
                    size_t why_size)
{
    (void)o;
    *out = NULL;
    if (why_size > 0) why[0] = '\0';
    return -ENOSYS;
}

void blob_store_close(struct blob_store *s)
{
    (void)s;
}

int blob_core_init(struct blob_store *s, struct ring_core *core, struct blob_core **out)
{
    (void)s;
    (void)core;
    *out = NULL;
    return -ENOSYS;
}

void blob_core_quiesce(struct blob_core *bc)
{
    (void)bc;
}

bool blob_core_is_idle(const struct blob_core *bc)
{
    (void)bc;
    return true;
}

void blob_core_deinit(struct blob_core *bc)
{
    (void)bc;
}

bool blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh)
{
    (void)bc;
    (void)refresh;
    return blob_key_is_empty(k);
}

size_t blob_exists_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                        bool refresh, bool *present)
{
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        present[i] = blob_exists(bc, &keys[i], refresh);
        n += present[i];
    }
    return n;
}

int blob_stat(struct blob_core *bc, const struct blob_key *k, struct blob_info *out)
{
    (void)bc;
    memset(out, 0, sizeof(*out));
    return blob_key_is_empty(k) ? 0 : -ENOENT;
}

int blob_upload_begin(struct blob_core *bc, const struct blob_key *k, enum blob_encoding incoming,
                      struct blob_upload **out)
{
    (void)bc;
    (void)incoming;
    *out = NULL;
    return blob_key_is_empty(k) ? -EEXIST : -ENOSYS;
}

int blob_upload_append(struct blob_upload *u, const void *data, size_t len, blob_done_fn *cb,
                       void *ctx)
{
    (void)u;
    (void)data;
    (void)len;
    (void)cb;
    (void)ctx;
    return -ENOSYS;
}

int blob_upload_commit(struct blob_upload *u, blob_done_fn *cb, void *ctx)
{
    (void)u;
    (void)cb;
    (void)ctx;
    return -ENOSYS;
}

void blob_upload_abort(struct blob_upload *u)
{
    (void)u;
}

uint64_t blob_upload_bytes_in(const struct blob_upload *u)
{
    (void)u;
    return 0;
}

uint64_t blob_upload_bytes_decoded(const struct blob_upload *u)
{
    (void)u;
    return 0;
}

int blob_read_open(struct blob_core *bc, const struct blob_key *k, uint64_t offset,
                   enum blob_encoding want, struct blob_reader **out)
{
    (void)bc;
    (void)offset;
    (void)want;
    *out = NULL;
    return blob_key_is_empty(k) ? -ENOSYS : -ENOENT;
}

uint64_t blob_reader_size(const struct blob_reader *r)
{
    (void)r;
    return 0;
}

int blob_read_next(struct blob_reader *r, blob_data_fn *cb, void *ctx)
{
    (void)r;
    (void)cb;
    (void)ctx;
    return -ENOSYS;
}

void blob_read_close(struct blob_reader *r)
{
    (void)r;
}

const struct blob_counters *blob_core_counters(const struct blob_core *bc)
{
    (void)bc;
    return NULL;
}

void blob_counters_add_to(const struct blob_counters *c, struct blob_counters_snapshot *out)
{
#define ADD_ONE(name, kind, help) out->name += base_counter_get(&c->name);
    BLOB_COUNTERS(ADD_ONE)
#undef ADD_ONE
}

void blob_store_stats(struct blob_store *s, struct blob_store_stats *out)
{
    (void)s;
    memset(out, 0, sizeof(*out));
}

uint32_t blob_store_evict(struct blob_store *s)
{
    (void)s;
    return 0;
}
