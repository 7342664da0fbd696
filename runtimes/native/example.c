/* A phone app's use of the native runtime, in C: open, stream frames, keep the outputs that are ready, save the
 * state, close. Build: see docs/on-device.md (edgeseq native build compiles it as edgeseq-example).
 *
 *   edgeseq-example MODEL.pte   streams 100 frames of zeros and prints the last output */
#include <stdio.h>
#include <stdlib.h>

#include "edgeseq.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.pte\n", argv[0]);
    return 1;
  }
  es_stream* s = NULL;
  if (es_open(argv[1], &s) != ES_OK) {
    fprintf(stderr, "error: %s\n", es_last_error());
    return 1;
  }
  const int n_in = es_batch(s) * es_d_in(s), n_out = es_batch(s) * es_d_out(s);
  float* frame = calloc((size_t)n_in, sizeof(float));
  float* out = calloc((size_t)n_out, sizeof(float));
  int ready = 0, outputs = 0;
  for (int t = 0; t < 100; ++t) {
    if (es_vocab_size(s) > 0) {
      int64_t ids[64] = {0}; /* token 0; a real app feeds its tokenizer's ids (batch <= 64 here) */
      if (es_push_tokens(s, ids, out, &ready) != ES_OK) break;
    } else if (es_push(s, frame, out, &ready) != ES_OK) {
      break;
    }
    outputs += ready;
  }
  size_t bytes = 0;
  es_state_bytes(s, &bytes); /* what an app stores to resume the stream later (es_load_state) */
  printf("%d ready outputs of %d; last output[0] = %.6g; state %zu bytes; %s\n", outputs, (int)es_steps(s),
         n_out ? out[0] : 0.0, bytes, es_last_error()[0] ? es_last_error() : "ok");
  free(frame);
  free(out);
  es_close(s);
  return 0;
}
