/* Vspec C API. Link with -lvspec (libvspec.so / libvspec.a from `cargo build --release -p vspec-capi`).
 * Every function returns VSPEC_OK (0) or an error code; vspec_last_error() then describes it. */
#ifndef VSPEC_H
#define VSPEC_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define VSPEC_OK 0
#define VSPEC_ERR_ARGUMENT 1
#define VSPEC_ERR_MODEL 2
#define VSPEC_ERR_INTERNAL 99

/* Bytes a session needs, by category. */
struct vspec_memory {
    uint64_t weight_bytes; /* model weights as stored (memory-mapped) */
    uint64_t arena_bytes;  /* activation arena */
    uint64_t kv_bytes;     /* KV cache */
};

/* Library version, static string. */
const char *vspec_version(void);
/* Message of the last failed call on this thread; valid until the next call. */
const char *vspec_last_error(void);
/* Memory plan of a model (GGUF file or Hugging Face directory) for max_ctx positions and
 * max_tokens per step, from headers only. */
int vspec_plan_memory(const char *path, uint32_t max_ctx, uint32_t max_tokens, struct vspec_memory *out);

#ifdef __cplusplus
}
#endif
#endif
