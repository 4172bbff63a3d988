/*
 * smplstream_sub: a minimal C subscriber for smplstream's wire format v1 (docs/wire-format.md).
 *
 * Connects a ZeroMQ SUB socket, checks every message against the rules of the format and
 * prints, per frame, the sequence number, frame index and each person's track id and root
 * translation (`trans`, metres, camera frame: x right, y down, z forward).
 *
 *   cc -std=c99 -O2 -Wall -Wextra -o smplstream_sub smplstream_sub.c -lzmq
 *   ./smplstream_sub [ENDPOINT] [COUNT]      (defaults: tcp://127.0.0.1:5555, run forever)
 *
 * The JSON header is read by a small, strict recursive-descent parser that keeps only the
 * fields this program needs and skips every other value (nested objects included). Nothing
 * in the header is trusted: every array's offset and length is checked against the payload
 * before a byte of it is read. A malformed message is reported on stderr and dropped.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define TOPIC "smplstream.v1"
#define MAX_HEADER_BYTES (1u << 20)
#define MAX_PERSONS 1024
#define MAX_DEPTH 64
#define MAX_NDIM 8
#define NAME_MAX_LEN 64

/* ---- a strict, minimal JSON reader ------------------------------------------------------ */

typedef struct {
    const char *s; /* NUL-terminated copy of the header */
    size_t pos, len;
    const char *error; /* first error, or NULL */
} Json;

static int fail(Json *j, const char *msg) {
    if (!j->error) j->error = msg;
    return 0;
}

static void skip_ws(Json *j) {
    while (j->pos < j->len) {
        char c = j->s[j->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') j->pos++;
        else break;
    }
}

static int expect(Json *j, char c) {
    skip_ws(j);
    if (j->pos < j->len && j->s[j->pos] == c) {
        j->pos++;
        return 1;
    }
    return fail(j, "unexpected character in header JSON");
}

static int peek(Json *j, char c) {
    skip_ws(j);
    return j->pos < j->len && j->s[j->pos] == c;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Read a JSON string. Its decoded text goes to out (up to cap-1 bytes, NUL-terminated);
 * *truncated is set when it did not fit (such a name matches nothing we look for).
 * \uXXXX escapes are decoded to UTF-8 (surrogate pairs included). */
static int read_string(Json *j, char *out, size_t cap, int *truncated) {
    size_t n = 0;
    int trunc = 0;
    if (!expect(j, '"')) return 0;
    while (j->pos < j->len) {
        unsigned char c = (unsigned char)j->s[j->pos++];
        char buf[4];
        size_t blen = 0;
        if (c == '"') {
            if (out) out[n] = '\0';
            if (truncated) *truncated = trunc;
            return 1;
        }
        if (c < 0x20) return fail(j, "control character in a header string");
        if (c != '\\') {
            buf[0] = (char)c;
            blen = 1;
        } else {
            if (j->pos >= j->len) break;
            char e = j->s[j->pos++];
            switch (e) {
            case '"': case '\\': case '/': buf[0] = e; blen = 1; break;
            case 'b': buf[0] = '\b'; blen = 1; break;
            case 'f': buf[0] = '\f'; blen = 1; break;
            case 'n': buf[0] = '\n'; blen = 1; break;
            case 'r': buf[0] = '\r'; blen = 1; break;
            case 't': buf[0] = '\t'; blen = 1; break;
            case 'u': {
                unsigned long cp = 0;
                int k;
                if (j->pos + 4 > j->len) return fail(j, "bad \\u escape in a header string");
                for (k = 0; k < 4; k++) {
                    int h = hexval(j->s[j->pos++]);
                    if (h < 0) return fail(j, "bad \\u escape in a header string");
                    cp = cp * 16 + (unsigned long)h;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* high surrogate: a low one must follow */
                    unsigned long lo = 0;
                    if (j->pos + 6 > j->len || j->s[j->pos] != '\\' || j->s[j->pos + 1] != 'u')
                        return fail(j, "lone surrogate in a header string");
                    j->pos += 2;
                    for (k = 0; k < 4; k++) {
                        int h = hexval(j->s[j->pos++]);
                        if (h < 0) return fail(j, "bad \\u escape in a header string");
                        lo = lo * 16 + (unsigned long)h;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) return fail(j, "lone surrogate in a header string");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return fail(j, "lone surrogate in a header string");
                }
                if (cp < 0x80) { buf[0] = (char)cp; blen = 1; }
                else if (cp < 0x800) { buf[0] = (char)(0xC0 | (cp >> 6)); buf[1] = (char)(0x80 | (cp & 0x3F)); blen = 2; }
                else if (cp < 0x10000) {
                    buf[0] = (char)(0xE0 | (cp >> 12)); buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[2] = (char)(0x80 | (cp & 0x3F)); blen = 3;
                } else {
                    buf[0] = (char)(0xF0 | (cp >> 18)); buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); buf[3] = (char)(0x80 | (cp & 0x3F)); blen = 4;
                }
                break;
            }
            default:
                return fail(j, "bad escape in a header string");
            }
        }
        if (out) {
            if (n + blen < cap) {
                memcpy(out + n, buf, blen);
                n += blen;
            } else {
                trunc = 1;
            }
        }
    }
    return fail(j, "unterminated string in header JSON");
}

/* A JSON number (strict grammar), as a double; *is_int is set when it has no fraction or
 * exponent and fits an int64 (*ival then holds it exactly). */
static int read_number(Json *j, double *val, int *is_int, long long *ival) {
    size_t start, p;
    int integral = 1;
    char *end = NULL;
    skip_ws(j);
    start = p = j->pos;
    if (p < j->len && j->s[p] == '-') p++;
    if (p >= j->len) return fail(j, "bad number in header JSON");
    if (j->s[p] == '0') p++;
    else if (j->s[p] >= '1' && j->s[p] <= '9') while (p < j->len && j->s[p] >= '0' && j->s[p] <= '9') p++;
    else return fail(j, "bad number in header JSON");
    if (p < j->len && j->s[p] == '.') {
        integral = 0;
        p++;
        if (p >= j->len || j->s[p] < '0' || j->s[p] > '9') return fail(j, "bad number in header JSON");
        while (p < j->len && j->s[p] >= '0' && j->s[p] <= '9') p++;
    }
    if (p < j->len && (j->s[p] == 'e' || j->s[p] == 'E')) {
        integral = 0;
        p++;
        if (p < j->len && (j->s[p] == '+' || j->s[p] == '-')) p++;
        if (p >= j->len || j->s[p] < '0' || j->s[p] > '9') return fail(j, "bad number in header JSON");
        while (p < j->len && j->s[p] >= '0' && j->s[p] <= '9') p++;
    }
    /* The copy is NUL-terminated and the grammar above bounds what strtod/strtoll read. */
    *val = strtod(j->s + start, &end);
    *is_int = 0;
    if (integral) {
        errno = 0;
        *ival = strtoll(j->s + start, &end, 10);
        *is_int = errno == 0 && (size_t)(end - j->s) == p;
    }
    j->pos = p;
    return 1;
}

static int match_word(Json *j, const char *w) {
    size_t n = strlen(w);
    skip_ws(j);
    if (j->pos + n <= j->len && memcmp(j->s + j->pos, w, n) == 0) {
        j->pos += n;
        return 1;
    }
    return fail(j, "bad literal in header JSON");
}

static int skip_value(Json *j, int depth);

/* Iterate over an object's members: call with *first = 1, returns 1 and the key while there
 * is a member (the reader then stands at its value), 0 at the closing brace or on error. */
static int next_key(Json *j, int *first, char *key, size_t cap, int *truncated) {
    if (*first) {
        if (!expect(j, '{')) return 0;
        *first = 0;
        if (peek(j, '}')) { j->pos++; return 0; }
    } else {
        if (peek(j, '}')) { j->pos++; return 0; }
        if (!expect(j, ',')) return 0;
    }
    if (!read_string(j, key, cap, truncated)) return 0;
    return expect(j, ':');
}

/* Same for an array's elements. */
static int next_item(Json *j, int *first) {
    if (*first) {
        if (!expect(j, '[')) return 0;
        *first = 0;
        if (peek(j, ']')) { j->pos++; return 0; }
        return 1;
    }
    if (peek(j, ']')) { j->pos++; return 0; }
    return expect(j, ',');
}

static int skip_value(Json *j, int depth) {
    double d;
    int is_int, first = 1, trunc;
    long long iv;
    char key[8];
    if (depth > MAX_DEPTH) return fail(j, "header JSON nested too deeply");
    skip_ws(j);
    if (j->pos >= j->len) return fail(j, "truncated header JSON");
    switch (j->s[j->pos]) {
    case '{':
        while (next_key(j, &first, key, sizeof key, &trunc))
            if (!skip_value(j, depth + 1)) return 0;
        return j->error == NULL;
    case '[':
        while (next_item(j, &first))
            if (!skip_value(j, depth + 1)) return 0;
        return j->error == NULL;
    case '"': return read_string(j, NULL, 0, NULL);
    case 't': return match_word(j, "true");
    case 'f': return match_word(j, "false");
    case 'n': return match_word(j, "null");
    default: return read_number(j, &d, &is_int, &iv);
    }
}

static int read_int(Json *j, long long *out) {
    double d;
    int is_int;
    if (!read_number(j, &d, &is_int, out)) return 0;
    return is_int ? 1 : fail(j, "expected an integer in the header");
}

/* ---- the message ------------------------------------------------------------------------ */

typedef struct {
    long long track_id;
    int has_trans;
    float trans[3];
} PersonOut;

typedef struct {
    long long seq, frame_index, payload_bytes;
    int have_schema, have_version, have_seq, have_frame, have_payload, have_persons;
    size_t n_persons;
    PersonOut persons[MAX_PERSONS];
} FrameOut;

static size_t dtype_size(const char *dtype) {
    if (!strcmp(dtype, "<f4") || !strcmp(dtype, "<i4")) return 4;
    if (!strcmp(dtype, "<f8") || !strcmp(dtype, "<i8")) return 8;
    if (!strcmp(dtype, "<u1")) return 1;
    if (!strcmp(dtype, "<u2")) return 2;
    return 0;
}

static float le_float(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One array descriptor: check it against the payload; keep `trans` if it is (3,) float32. */
static int read_array(Json *j, const unsigned char *payload, size_t payload_len, PersonOut *person) {
    char key[32], name[NAME_MAX_LEN], dtype[8] = "";
    int first = 1, trunc = 0, name_trunc = 1, dtype_trunc = 1, have_shape = 0;
    long long offset = -1, nbytes = -1, dim;
    unsigned long long count = 1;
    long long shape[MAX_NDIM];
    size_t ndim = 0, esize;
    while (next_key(j, &first, key, sizeof key, &trunc)) {
        if (!trunc && !strcmp(key, "name")) {
            if (!read_string(j, name, sizeof name, &name_trunc)) return 0;
        } else if (!trunc && !strcmp(key, "dtype")) {
            if (!read_string(j, dtype, sizeof dtype, &dtype_trunc)) return 0;
        } else if (!trunc && !strcmp(key, "shape")) {
            int f2 = 1;
            have_shape = 1;
            count = 1;
            ndim = 0;
            while (next_item(j, &f2)) {
                if (!read_int(j, &dim)) return 0;
                if (dim < 0 || ndim >= MAX_NDIM) return fail(j, "bad array shape");
                /* Saturate: a product beyond the payload fails the size check below. */
                count = (dim != 0 && count > (1ull << 40) / (unsigned long long)dim) ? (1ull << 41)
                                                                                    : count * (unsigned long long)dim;
                shape[ndim++] = dim;
            }
        } else if (!trunc && !strcmp(key, "offset")) {
            if (!read_int(j, &offset)) return 0;
        } else if (!trunc && !strcmp(key, "nbytes")) {
            if (!read_int(j, &nbytes)) return 0;
        } else if (!skip_value(j, 0)) {
            return 0;
        }
    }
    if (j->error) return 0;
    if (name_trunc || !have_shape || offset < 0 || nbytes < 0) return fail(j, "array descriptor lacks a field");
    esize = dtype_trunc ? 0 : dtype_size(dtype);
    if (!esize) return fail(j, "unknown array dtype");
    if (count * esize != (unsigned long long)nbytes) return fail(j, "array shape does not match its byte length");
    if ((unsigned long long)offset > payload_len || (unsigned long long)nbytes > payload_len - (size_t)offset)
        return fail(j, "array lies outside the payload");
    if (!strcmp(name, "trans") && !strcmp(dtype, "<f4") && ndim == 1 && shape[0] == 3) {
        const unsigned char *p = payload + offset;
        person->trans[0] = le_float(p);
        person->trans[1] = le_float(p + 4);
        person->trans[2] = le_float(p + 8);
        person->has_trans = 1;
    }
    return 1;
}

static int read_person(Json *j, const unsigned char *payload, size_t payload_len, PersonOut *person) {
    char key[32];
    int first = 1, trunc = 0, have_id = 0, have_arrays = 0;
    memset(person, 0, sizeof *person);
    while (next_key(j, &first, key, sizeof key, &trunc)) {
        if (!trunc && !strcmp(key, "track_id")) {
            if (!read_int(j, &person->track_id)) return 0;
            have_id = 1;
        } else if (!trunc && !strcmp(key, "arrays")) {
            int f2 = 1;
            have_arrays = 1;
            while (next_item(j, &f2))
                if (!read_array(j, payload, payload_len, person)) return 0;
        } else if (!skip_value(j, 0)) {
            return 0;
        }
    }
    if (j->error) return 0;
    return (have_id && have_arrays) ? 1 : fail(j, "person lacks track_id or arrays");
}

/* Parse the header; arrays are checked against the payload as they are met and checked
 * again once payload_bytes is known (it may come after `persons`). */
static int parse_header(const char *text, size_t len, const unsigned char *payload, size_t payload_len,
                        FrameOut *out, const char **error) {
    Json j = {text, 0, len, NULL};
    char key[32], sval[32];
    int first = 1, trunc = 0, strunc = 0;
    long long v;
    memset(out, 0, sizeof *out);
    while (next_key(&j, &first, key, sizeof key, &trunc)) {
        if (!trunc && !strcmp(key, "schema")) {
            if (!read_string(&j, sval, sizeof sval, &strunc)) break;
            if (strunc || strcmp(sval, "smplstream.frame")) { fail(&j, "schema is not smplstream.frame"); break; }
            out->have_schema = 1;
        } else if (!trunc && !strcmp(key, "version")) {
            if (!read_int(&j, &v)) break;
            if (v != 1) { fail(&j, "unsupported version (this decoder reads 1)"); break; }
            out->have_version = 1;
        } else if (!trunc && !strcmp(key, "seq")) {
            if (!read_int(&j, &out->seq)) break;
            out->have_seq = 1;
        } else if (!trunc && !strcmp(key, "frame_index")) {
            if (!read_int(&j, &out->frame_index)) break;
            out->have_frame = 1;
        } else if (!trunc && !strcmp(key, "payload_bytes")) {
            if (!read_int(&j, &out->payload_bytes)) break;
            out->have_payload = 1;
        } else if (!trunc && !strcmp(key, "persons")) {
            int f2 = 1;
            out->have_persons = 1;
            while (next_item(&j, &f2)) {
                if (out->n_persons >= MAX_PERSONS) { fail(&j, "too many persons"); break; }
                if (!read_person(&j, payload, payload_len, &out->persons[out->n_persons])) break;
                out->n_persons++;
            }
            if (j.error) break;
        } else if (!skip_value(&j, 0)) {
            break;
        }
    }
    if (!j.error) {
        skip_ws(&j);
        if (j.pos != j.len) fail(&j, "trailing bytes after the header object");
    }
    if (!j.error && !(out->have_schema && out->have_version && out->have_seq && out->have_frame &&
                      out->have_payload && out->have_persons))
        fail(&j, "header lacks a required field");
    if (!j.error && (out->payload_bytes < 0 || (unsigned long long)out->payload_bytes != payload_len))
        fail(&j, "payload_bytes does not match the payload's length");
    *error = j.error;
    return j.error == NULL;
}

/* ---- main loop -------------------------------------------------------------------------- */

static FrameOut frame_out; /* large: keep it off the stack */

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
    long long want = argc > 2 ? atoll(argv[2]) : -1, received = 0, malformed = 0;
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    if (!sub || zmq_connect(sub, endpoint) != 0) {
        fprintf(stderr, "smplstream_sub: cannot connect to %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, TOPIC, strlen(TOPIC));
    fprintf(stderr, "smplstream_sub: listening on %s\n", endpoint);
    while (want < 0 || received < want) {
        zmq_msg_t parts[3];
        size_t nparts = 0, k;
        int more = 1, ok = 1;
        const char *error = NULL;
        /* Read every part of the message; keep the first three. */
        while (more) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sub, 0) < 0) {
                if (zmq_errno() == EINTR) { zmq_msg_close(&msg); continue; }
                fprintf(stderr, "smplstream_sub: receive failed: %s\n", zmq_strerror(zmq_errno()));
                zmq_msg_close(&msg);
                for (k = 0; k < nparts; k++) zmq_msg_close(&parts[k]);
                zmq_close(sub);
                zmq_ctx_term(ctx);
                return 1;
            }
            more = zmq_msg_more(&msg);
            if (nparts < 3) parts[nparts++] = msg;
            else { zmq_msg_close(&msg); ok = 0; }
        }
        if (!ok || nparts != 3) error = "expected 3 message parts";
        else if (zmq_msg_size(&parts[0]) != strlen(TOPIC) || memcmp(zmq_msg_data(&parts[0]), TOPIC, strlen(TOPIC)))
            error = "unknown topic";
        else if (zmq_msg_size(&parts[1]) > MAX_HEADER_BYTES) error = "header too large";
        if (!error) {
            size_t hlen = zmq_msg_size(&parts[1]);
            char *text = malloc(hlen + 1);
            if (!text) { fprintf(stderr, "smplstream_sub: out of memory\n"); return 1; }
            memcpy(text, zmq_msg_data(&parts[1]), hlen);
            text[hlen] = '\0';
            if (memchr(text, '\0', hlen)) error = "NUL byte in the header";
            else parse_header(text, hlen, zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]), &frame_out, &error);
            free(text);
        }
        for (k = 0; k < nparts; k++) zmq_msg_close(&parts[k]);
        if (error) {
            malformed++;
            fprintf(stderr, "smplstream_sub: dropped a malformed message: %s\n", error);
            continue;
        }
        received++;
        printf("seq %lld frame %lld persons %zu", frame_out.seq, frame_out.frame_index, frame_out.n_persons);
        for (k = 0; k < frame_out.n_persons; k++) {
            const PersonOut *p = &frame_out.persons[k];
            if (p->has_trans)
                printf(" | id %lld trans %.3f %.3f %.3f", p->track_id, p->trans[0], p->trans[1], p->trans[2]);
            else
                printf(" | id %lld (no trans)", p->track_id);
        }
        printf("\n");
        fflush(stdout);
    }
    fprintf(stderr, "smplstream_sub: %lld frame(s), %lld malformed\n", received, malformed);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return 0;
}
