/* Prints the memory a model needs: cc plan.c -I../include -L../../target/release -lvspec */
#include <stdio.h>
#include <stdlib.h>
#include "vspec.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [CTX]\n", argv[0]);
        return 2;
    }
    unsigned ctx = argc > 2 ? (unsigned)atoi(argv[2]) : 2048;
    vspec_memory m;
    if (vspec_plan_memory(argv[1], ctx, ctx < 512 ? ctx : 512, &m) != VSPEC_OK) {
        fprintf(stderr, "error: %s\n", vspec_last_error());
        return 1;
    }
    printf("vspec %s: weights %llu + arena %llu + kv %llu bytes\n", vspec_version(),
           (unsigned long long)m.weight_bytes, (unsigned long long)m.arena_bytes, (unsigned long long)m.kv_bytes);
    return 0;
}
