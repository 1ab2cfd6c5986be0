/* Every error path of the C API, each checked for its status code and message: bad arguments,
 * bad handles (null, misaligned, forged, wrong kind, freed, freed twice), small buffers, a full
 * context, unsupported options, bad sampler values, and the per-thread last error.
 * Usage: errors MODEL_DIR (a small model, e.g. tests/fixtures/hf/llama). Exit status 0 = all passed. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "vspec.h"

static int failures = 0;

static void expect(int32_t got, int32_t want, const char *needle, const char *what, int line) {
    const char *msg = vspec_last_error();
    if (got != want) {
        printf("FAIL line %d: %s returned %d, expected %d (%s)\n", line, what, got, want, msg);
        failures++;
    } else if (needle && !strstr(msg, needle)) {
        printf("FAIL line %d: %s: message \"%s\" lacks \"%s\"\n", line, what, msg, needle);
        failures++;
    } else if (want != VSPEC_OK) {
        printf("ok: %s -> %d: %s\n", what, got, msg);
    }
}
#define EXPECT(call, want, needle) expect((call), (want), (needle), #call, __LINE__)

static void *other_thread(void *arg) {
    (void)arg;
    vspec_model *m = NULL;
    vspec_model_open("/nonexistent/thread-model.gguf", &m);
    return strstr(vspec_last_error(), "thread-model") ? (void *)1 : NULL;
}

static int32_t stop_after_three(void *user, uint32_t token, const char *piece, size_t len) {
    (void)token, (void)piece, (void)len;
    int *count = user;
    return ++*count >= 3;
}

/* A callback that calls back into its own session: refused (BUSY), never a deadlock. */
struct reenter {
    vspec_session *session;
    int32_t free_status, eval_status;
};

static int32_t reenter_cb(void *user, uint32_t token, const char *piece, size_t len) {
    struct reenter *r = user;
    const float *logits;
    size_t n;
    (void)piece, (void)len;
    r->free_status = vspec_session_free(r->session);
    r->eval_status = vspec_session_eval(r->session, &token, 1, &logits, &n);
    return 1;
}

/* Two threads on one session: the second is refused (BUSY) while the first generates, and the
 * model stays usable from both. */
struct busy {
    vspec_session *session;
    atomic_int in_callback, released;
    int32_t status;
};

static int32_t wait_in_callback(void *user, uint32_t token, const char *piece, size_t len) {
    struct busy *b = user;
    (void)token, (void)piece, (void)len;
    atomic_store(&b->in_callback, 1);
    while (!atomic_load(&b->released)) sched_yield();
    return 1;
}

static void *generate_thread(void *arg) {
    struct busy *b = arg;
    b->status = vspec_generate(b->session, "Hi there", 8, 4, NULL, wait_in_callback, b, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]), 2;
    if (vspec_abi_version() != VSPEC_ABI_VERSION) return printf("FAIL: ABI mismatch\n"), 1;
    printf("vspec %s, ABI %u\n", vspec_version(), vspec_abi_version());

    /* Opening. */
    vspec_model *model = NULL;
    EXPECT(vspec_model_open(NULL, &model), VSPEC_ERR_ARGUMENT, "path is null");
    EXPECT(vspec_model_open(argv[1], NULL), VSPEC_ERR_ARGUMENT, "out is null");
    EXPECT(vspec_model_open("/nonexistent/model.gguf", &model), VSPEC_ERR_MODEL, "/nonexistent/model.gguf");
    static const char junk[64] = "not a model file";
    EXPECT(vspec_model_open_memory(junk, sizeof junk, "junk.gguf", &model), VSPEC_ERR_MODEL, "junk.gguf");
    EXPECT(vspec_model_open_memory(NULL, 10, NULL, &model), VSPEC_ERR_ARGUMENT, "data is null");
    EXPECT(vspec_model_open(argv[1], &model), VSPEC_OK, NULL);
    vspec_model_info_t info;
    EXPECT(vspec_model_info(model, &info), VSPEC_OK, NULL);
    EXPECT(vspec_model_info(model, NULL), VSPEC_ERR_ARGUMENT, "out is null");

    /* Handles: null, misaligned, forged, wrong kind. */
    EXPECT(vspec_model_info(NULL, &info), VSPEC_ERR_HANDLE, "null");
    EXPECT(vspec_model_info((vspec_model *)((char *)model + 1), &info), VSPEC_ERR_HANDLE, "misaligned");
    EXPECT(vspec_model_info((vspec_model *)(uintptr_t)0x7f0000001000ull, &info), VSPEC_ERR_HANDLE, "not a vspec handle");
    EXPECT(vspec_model_info((vspec_model *)&info, &info), VSPEC_ERR_HANDLE, NULL);

    /* Plans and sessions. */
    vspec_plan plan, plan_f16;
    EXPECT(vspec_model_plan(model, 64, 8, VSPEC_KV_F16, &plan_f16), VSPEC_OK, NULL);
    EXPECT(vspec_model_plan(model, 64, 8, 42, &plan), VSPEC_ERR_ARGUMENT, "kv_type 42");
    EXPECT(vspec_model_plan(model, 64, 8, VSPEC_KV_F32, &plan), VSPEC_OK, NULL);
    if (plan_f16.kv_bytes * 2 != plan.kv_bytes || plan_f16.kv_type != VSPEC_KV_F16) {
        printf("FAIL: the f16 KV cache plans %llu bytes against %llu for f32\n",
               (unsigned long long)plan_f16.kv_bytes, (unsigned long long)plan.kv_bytes);
        failures++;
    }
    vspec_session *session = NULL;
    vspec_session_params params = vspec_session_default_params();
    params.n_ctx = 64;
    params.n_batch = 8;
    params.n_threads = 1;
    params.kv_type = 9;
    EXPECT(vspec_session_new(model, &params, &session), VSPEC_ERR_ARGUMENT, "kv_type 9");
    params.kv_type = VSPEC_KV_F32;
    static unsigned char small[256];
    params.mem = small;
    params.mem_len = sizeof small;
    EXPECT(vspec_session_new(model, &params, &session), VSPEC_ERR_BUFFER_TOO_SMALL, "short");
    params.mem = NULL;
    EXPECT(vspec_session_new(model, &params, &session), VSPEC_ERR_ARGUMENT, "mem is null");
    params.mem_len = 0;
    EXPECT(vspec_session_new(model, &params, NULL), VSPEC_ERR_ARGUMENT, "out is null");
    EXPECT(vspec_session_new(model, &params, &session), VSPEC_OK, NULL);
    EXPECT(vspec_model_info((vspec_model *)session, &info), VSPEC_ERR_HANDLE, "expected a model handle, got a session handle");
    EXPECT(vspec_session_reset((vspec_session *)model), VSPEC_ERR_HANDLE, "expected a session handle, got a model handle");

    /* Tokenizing into buffers that are too small. */
    const char *text = "Hello world, hello world";
    uint32_t tokens[64];
    size_t n = 0;
    EXPECT(vspec_tokenize(model, text, strlen(text), false, tokens, 1, &n), VSPEC_ERR_BUFFER_TOO_SMALL, "the buffer holds 1");
    if (n < 2) printf("FAIL: needed token count %zu\n", n), failures++;
    EXPECT(vspec_tokenize(model, text, strlen(text), false, tokens, 64, &n), VSPEC_OK, NULL);
    EXPECT(vspec_tokenize(model, "\xff\xfe", 2, false, tokens, 64, &n), VSPEC_ERR_ARGUMENT, "UTF-8");
    EXPECT(vspec_tokenize(model, NULL, 5, false, tokens, 64, &n), VSPEC_ERR_ARGUMENT, "null");
    char buf[8];
    size_t len = 0;
    EXPECT(vspec_detokenize(model, tokens, n, buf, sizeof buf, &len), VSPEC_ERR_BUFFER_TOO_SMALL, "NUL");
    if (len != strlen(text)) printf("FAIL: needed text length %zu\n", len), failures++;
    uint32_t bad_token = info.n_vocab;
    EXPECT(vspec_detokenize(model, &bad_token, 1, buf, sizeof buf, &len), VSPEC_ERR_ARGUMENT, "outside the vocabulary");

    /* Evaluating. */
    const float *logits = NULL;
    size_t n_vocab = 0;
    EXPECT(vspec_session_eval(session, &bad_token, 1, &logits, &n_vocab), VSPEC_ERR_ARGUMENT, "outside the vocabulary");
    EXPECT(vspec_session_eval(session, tokens, 0, &logits, &n_vocab), VSPEC_ERR_ARGUMENT, "n_tokens is 0");
    EXPECT(vspec_session_eval(session, tokens, n, NULL, &n_vocab), VSPEC_ERR_ARGUMENT, "logits is null");
    EXPECT(vspec_session_eval(session, tokens, n, &logits, &n_vocab), VSPEC_OK, NULL);
    uint32_t pos = 0;
    EXPECT(vspec_session_pos(session, &pos), VSPEC_OK, NULL);
    if (pos != n || n_vocab != info.n_vocab) printf("FAIL: pos %u, n_vocab %zu\n", pos, n_vocab), failures++;
    uint32_t many[65] = {0};
    EXPECT(vspec_session_eval(session, many, 65 - n + 1, &logits, &n_vocab), VSPEC_ERR_CONTEXT_FULL, "do not fit");
    EXPECT(vspec_session_truncate(session, 2), VSPEC_OK, NULL);
    EXPECT(vspec_session_pos(session, &pos), VSPEC_OK, NULL);
    if (pos != 2) printf("FAIL: pos %u after truncate\n", pos), failures++;
    EXPECT(vspec_session_reset(session), VSPEC_OK, NULL);
    EXPECT(vspec_session_eval(session, many, 64, &logits, &n_vocab), VSPEC_OK, NULL);
    EXPECT(vspec_generate(session, "more", 4, 4, NULL, NULL, NULL, NULL), VSPEC_ERR_CONTEXT_FULL, "do not fit");
    EXPECT(vspec_session_reset(session), VSPEC_OK, NULL);

    /* Sampling and generating. */
    vspec_sampler_params sp = vspec_sampler_default_params();
    sp.temperature = -1.0f;
    vspec_sampler *sampler = NULL;
    EXPECT(vspec_sampler_new(&sp, info.n_vocab, &sampler), VSPEC_ERR_ARGUMENT, "sampler.temperature");
    EXPECT(vspec_generate(session, "Hi", 2, 4, &sp, NULL, NULL, NULL), VSPEC_ERR_ARGUMENT, "sampler.temperature");
    sp = vspec_sampler_default_params();
    sp.top_p = 0.0f;
    EXPECT(vspec_sampler_new(&sp, info.n_vocab, &sampler), VSPEC_ERR_ARGUMENT, "sampler.top_p");
    sp = vspec_sampler_default_params();
    sp.seed = 7;
    EXPECT(vspec_sampler_new(&sp, info.n_vocab, &sampler), VSPEC_OK, NULL);
    uint32_t next = 0;
    EXPECT(vspec_sampler_sample(sampler, NULL, 0, NULL, 0, &next), VSPEC_ERR_ARGUMENT, "no logits");
    EXPECT(vspec_sampler_sample((vspec_sampler *)session, logits, n_vocab, NULL, 0, &next), VSPEC_ERR_HANDLE, "got a session");
    EXPECT(vspec_generate(session, "", 0, 4, NULL, NULL, NULL, NULL), VSPEC_ERR_ARGUMENT, "empty");
    int count = 0;
    vspec_generate_result result;
    sp.temperature = 1.0f; /* a random model would end at once if greedy picked EOS */
    EXPECT(vspec_generate(session, text, strlen(text), 20, &sp, stop_after_three, &count, &result), VSPEC_OK, NULL);
    if (result.stop_reason == VSPEC_STOP_CALLBACK && result.n_generated != 3)
        printf("FAIL: stopped after %u tokens\n", result.n_generated), failures++;
    struct reenter re = {session, 0, 0};
    EXPECT(vspec_generate(session, text, strlen(text), 4, &sp, reenter_cb, &re, NULL), VSPEC_OK, NULL);
    EXPECT(re.free_status, VSPEC_ERR_BUSY, NULL);
    EXPECT(re.eval_status, VSPEC_ERR_BUSY, "in use by another call");
    printf("generate: %u prompt tokens, %u generated, stop reason %u\n", result.n_prompt, result.n_generated, result.stop_reason);

    struct busy b = {session, 0, 0, -1};
    pthread_t gen_thread;
    pthread_create(&gen_thread, NULL, generate_thread, &b);
    while (!atomic_load(&b.in_callback)) sched_yield();
    EXPECT(vspec_session_eval(session, tokens, 1, &logits, &n_vocab), VSPEC_ERR_BUSY, "in use");
    EXPECT(vspec_session_free(session), VSPEC_ERR_BUSY, "in use");
    EXPECT(vspec_tokenize(model, text, strlen(text), false, tokens, 64, &n), VSPEC_OK, NULL);
    atomic_store(&b.released, 1);
    pthread_join(gen_thread, NULL);
    EXPECT(b.status, VSPEC_OK, NULL);

    /* Chat template, perplexity, IR. */
    vspec_chat_message msgs[2] = {{"user", "Hello"}, {"assistant", NULL}};
    char chat[512];
    EXPECT(vspec_chat_apply(model, msgs, 2, true, chat, sizeof chat, &len), VSPEC_ERR_ARGUMENT, "messages[1].content");
    EXPECT(vspec_chat_apply(model, msgs, 1, true, chat, sizeof chat, &len), VSPEC_OK, NULL);
    vspec_perplexity_result ppl;
    EXPECT(vspec_perplexity(model, text, strlen(text), 64, 1, 1, &ppl), VSPEC_ERR_CONTEXT_FULL, "fewer than one chunk");
    EXPECT(vspec_perplexity(model, text, strlen(text), 2, 1, 1, &ppl), VSPEC_ERR_ARGUMENT, "too small");
    EXPECT(vspec_model_ir_json(model, 64, 8, true, NULL, 0, &len), VSPEC_ERR_BUFFER_TOO_SMALL, NULL);
    EXPECT(vspec_model_ir_json(model, 64, 8, true, NULL, 10, &len), VSPEC_ERR_BUFFER_TOO_SMALL, NULL);

    /* The last error is per thread. */
    EXPECT(vspec_model_open(NULL, &model), VSPEC_ERR_ARGUMENT, "path is null");
    pthread_t t;
    void *seen = NULL;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &seen);
    if (!seen) printf("FAIL: the other thread did not see its own error\n"), failures++;
    if (!strstr(vspec_last_error(), "path is null"))
        printf("FAIL: this thread's error changed: %s\n", vspec_last_error()), failures++;

    /* Freeing: the session keeps a freed model alive; every second free is an error. */
    EXPECT(vspec_model_free(model), VSPEC_OK, NULL);
    EXPECT(vspec_model_free(model), VSPEC_ERR_HANDLE, "not live");
    EXPECT(vspec_model_info(model, &info), VSPEC_ERR_HANDLE, "already freed");
    EXPECT(vspec_generate(session, "Hi", 2, 2, NULL, NULL, NULL, NULL), VSPEC_OK, NULL);
    EXPECT(vspec_sampler_free(sampler), VSPEC_OK, NULL);
    EXPECT(vspec_sampler_free(sampler), VSPEC_ERR_HANDLE, "not live");
    EXPECT(vspec_session_free(session), VSPEC_OK, NULL);
    EXPECT(vspec_session_free(session), VSPEC_ERR_HANDLE, "not live");
    EXPECT(vspec_session_eval(session, tokens, 1, &logits, &n_vocab), VSPEC_ERR_HANDLE, "already freed");
    EXPECT(vspec_session_free(NULL), VSPEC_ERR_HANDLE, "null");

    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
