/* Greedy generation, printed as it is produced (what `vspec generate --temp 0` prints).
 * cc generate.c -I../include -L../../target/release -lvspec && ./a.out MODEL "PROMPT" 32 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vspec.h"

static int32_t print_piece(void *user, uint32_t token, const char *piece, size_t len) {
    (void)user, (void)token;
    fwrite(piece, 1, len, stdout);
    return 0; /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: %s MODEL PROMPT N\n", argv[0]), 2;
    vspec_model *model = NULL;
    vspec_session *session = NULL;
    vspec_session_params params = vspec_session_default_params();
    params.n_ctx = 512;
    params.n_threads = argc > 4 ? (uint32_t)atoi(argv[4]) : 0;
    vspec_sampler_params greedy = vspec_sampler_greedy_params();
    int status = vspec_model_open(argv[1], &model);
    if (status == VSPEC_OK) status = vspec_session_new(model, &params, &session);
    if (status == VSPEC_OK)
        status = vspec_generate(session, argv[2], strlen(argv[2]), (uint32_t)atoi(argv[3]),
                                &greedy, print_piece, NULL, NULL);
    if (status != VSPEC_OK) fprintf(stderr, "error %d: %s\n", status, vspec_last_error());
    else printf("\n");
    if (session) vspec_session_free(session);
    if (model) vspec_model_free(model);
    return status == VSPEC_OK ? 0 : 1;
}
