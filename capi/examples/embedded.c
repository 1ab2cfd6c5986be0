/* The embedded path: the model comes from a buffer the program owns (as if read from flash),
 * the session's arena and KV cache live in one buffer sized by the plan before the session
 * exists, and the loop is eval -> logits -> sample, token by token. Prints the greedy
 * continuation of PROMPT (the same text as `vspec generate --temp 0`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vspec.h"

#define CHECK(call)                                                                  \
    do {                                                                             \
        int32_t s_ = (call);                                                         \
        if (s_ != VSPEC_OK) {                                                        \
            fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, s_,  \
                    vspec_last_error());                                             \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc(*len);
    if (data && fread(data, 1, *len, f) != *len) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT N [THREADS]\n", argv[0]);
        return 2;
    }
    size_t file_len = 0;
    void *file = read_file(argv[1], &file_len);
    if (!file) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    unsigned n_predict = (unsigned)atoi(argv[3]);

    vspec_model *model = NULL;
    CHECK(vspec_model_open_memory(file, file_len, argv[1], &model));
    vspec_model_info_t info;
    CHECK(vspec_model_info(model, &info));

    /* Every byte the session will use, known before it exists. */
    vspec_plan plan;
    CHECK(vspec_model_plan(model, 256, 64, VSPEC_KV_F32, &plan));
    fprintf(stderr, "plan: weights %llu (in the caller's buffer) + arena %llu + kv %llu; session buffer %llu bytes\n",
            (unsigned long long)plan.weight_bytes, (unsigned long long)plan.arena_bytes,
            (unsigned long long)plan.kv_bytes, (unsigned long long)plan.session_bytes);

    vspec_session_params params = vspec_session_default_params();
    params.n_ctx = plan.n_ctx;
    params.n_batch = plan.n_batch;
    params.n_threads = argc > 4 ? (uint32_t)atoi(argv[4]) : 0;
    params.mem_len = (size_t)plan.session_bytes;
    params.mem = malloc(params.mem_len);

    /* One byte short is refused, saying how much is missing. */
    vspec_session *session = NULL;
    params.mem_len -= 1;
    if (vspec_session_new(model, &params, &session) != VSPEC_ERR_BUFFER_TOO_SMALL) {
        fprintf(stderr, "a short buffer was accepted\n");
        return 1;
    }
    params.mem_len += 1;
    CHECK(vspec_session_new(model, &params, &session));

    size_t n_prompt = 0;
    const char *prompt = argv[2];
    /* First call learns the size; BOS only if the model wants one (as `vspec generate`). */
    int32_t st = vspec_tokenize(model, prompt, strlen(prompt), true, NULL, 0, &n_prompt);
    if (st != VSPEC_ERR_BUFFER_TOO_SMALL && st != VSPEC_OK) CHECK(st);
    uint32_t *tokens = malloc((n_prompt + n_predict + 1) * sizeof *tokens);
    CHECK(vspec_tokenize(model, prompt, strlen(prompt), true, tokens, n_prompt, &n_prompt));

    vspec_sampler_params greedy = vspec_sampler_greedy_params();
    vspec_sampler *sampler = NULL;
    CHECK(vspec_sampler_new(&greedy, info.n_vocab, &sampler));

    const float *logits = NULL;
    size_t n_vocab = 0, n = n_prompt;
    CHECK(vspec_session_eval(session, tokens, n_prompt, &logits, &n_vocab));
    for (unsigned i = 0; i < n_predict; i++) {
        uint32_t next;
        bool end = false;
        CHECK(vspec_sampler_sample(sampler, logits, n_vocab, tokens, n, &next));
        CHECK(vspec_model_token_is_end(model, next, &end));
        if (end) break;
        tokens[n++] = next;
        if (i + 1 < n_predict) CHECK(vspec_session_eval(session, &next, 1, &logits, &n_vocab));
    }

    size_t text_len = 0;
    st = vspec_detokenize(model, tokens + n_prompt, n - n_prompt, NULL, 0, &text_len);
    if (st != VSPEC_ERR_BUFFER_TOO_SMALL && st != VSPEC_OK) CHECK(st);
    char *text = malloc(text_len + 1);
    CHECK(vspec_detokenize(model, tokens + n_prompt, n - n_prompt, text, text_len + 1, &text_len));
    printf("%s\n", text);

    CHECK(vspec_sampler_free(sampler));
    CHECK(vspec_session_free(session));
    CHECK(vspec_model_free(model));
    free(text);
    free(tokens);
    free(params.mem); /* the caller's again once the session is freed */
    free(file);      /* and the model's bytes once the model and its sessions are */
    return 0;
}
