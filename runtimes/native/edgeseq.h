/* edgeseq native runtime: stream an exported step (.pte + its .edgeseq.json manifest) on the ExecuTorch runtime,
 * from C or C++, with no Python. One es_stream holds one model and the state of one stream (a fixed batch).
 *
 * Every function returns ES_OK (0) or an error code; es_last_error() gives the message of the last failure in this
 * thread. Nothing aborts the process on bad input (a file that is not a program is checked before the runtime sees
 * it). See docs/on-device.md.
 */
#ifndef EDGESEQ_H
#define EDGESEQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum es_status {
  ES_OK = 0,
  ES_ERR_IO = 1,        /* a file that cannot be read or written */
  ES_ERR_MANIFEST = 2,  /* no manifest, an invalid one, or one of another file */
  ES_ERR_RUNTIME = 3,   /* ExecuTorch could not load or run the program */
  ES_ERR_SHAPE = 4,     /* a buffer of the wrong size */
  ES_ERR_VALUE = 5,     /* NaN/Inf in a frame, a token id outside the vocabulary */
  ES_ERR_STATE = 6,     /* a saved state of another model, or not a state */
  ES_ERR_ARG = 7,       /* a null pointer or a bad argument */
  ES_ERR_NUMERIC = 8    /* the step made NaN/Inf in its output or state from finite inputs; nothing of it was kept */
};

typedef struct es_stream es_stream;

/* Open PTE_PATH with its manifest PTE_PATH.edgeseq.json; the state starts as the manifest's initial state. */
int es_open(const char* pte_path, es_stream** out);
void es_close(es_stream* s);
const char* es_last_error(void);

int es_d_in(const es_stream* s);      /* features per frame (1 for a language model: one token id) */
int es_d_out(const es_stream* s);     /* outputs per frame */
int es_batch(const es_stream* s);     /* streams per call, fixed by the program */
int es_vocab_size(const es_stream* s);/* > 0: inputs are token ids (es_push_tokens) */
int es_delay(const es_stream* s);     /* the first es_delay outputs of a stream are not ready */
int64_t es_steps(const es_stream* s); /* frames pushed since open / reset / the saved state's */
const char* es_fingerprint(const es_stream* s);
/* 0: the program writes the next state straight into the runtime's second set of state buffers (outputs not
 * memory-planned, as edgeseq exports them) and the sets swap each step; 1: its outputs live in the program's planned
 * memory and are copied out every step (an older export, or a step whose output is one of its inputs). */
int es_state_copied(const es_stream* s);

/* One step: FRAME holds batch * d_in floats; OUT receives batch * d_out floats. *READY (may be NULL) is 1 when
 * this output is a valid output of the model (0 during its delay, or between outputs of a strided model).
 * ES_ERR_VALUE: NaN/Inf in FRAME. ES_ERR_NUMERIC: the step made NaN/Inf in its output or in a state tensor (the
 * message names which); the stream keeps the state it had before the step and OUT is not written. */
int es_push(es_stream* s, const float* frame, float* out, int* ready);
/* One step of a language model: IDS holds batch token ids. */
int es_push_tokens(es_stream* s, const int64_t* ids, float* out, int* ready);
/* N steps in one call: FRAMES holds n * batch * d_in floats (IDS n * batch token ids), OUT receives n * batch * d_out
 * floats. Each step is es_push's (es_push_tokens'), checks and refusals included; the run stops at the first step
 * refused, with its error, the stream at the state before it and *DONE (may be NULL) the steps that ran. */
int es_run(es_stream* s, int64_t n, const float* frames, float* out, int64_t* done);
int es_run_tokens(es_stream* s, int64_t n, const int64_t* ids, float* out, int64_t* done);
/* Back to the initial state (step 0). */
int es_reset(es_stream* s);

/* The state as bytes (edgeseq's state format, with the model's fingerprint and step count): es_state_bytes gives
 * the size, es_save_state writes it into BUF (CAP bytes), es_load_state restores it (refused for another model).
 * The same bytes are what StreamState.save(path.esstate) writes in Python. */
int es_state_bytes(const es_stream* s, size_t* bytes);
int es_save_state(const es_stream* s, unsigned char* buf, size_t cap, size_t* written);
int es_load_state(es_stream* s, const unsigned char* buf, size_t n);

/* XNNPACK's thread pool size, process-wide (as the Python session's threads=1 default sets it). Set it before
 * opening streams: a different size replaces the pool, and streams already open must be opened again (the same
 * size is a no-op). */
int es_set_threads(int n);

/* A pool: many independent streams in the rows of one batched program, one ExecuTorch call per step for all of
 * them (as Python's StreamPool). The program's batch is fixed at export (edgeseq export --batch 1,8,64 writes one
 * program per size, each with its manifest); a pool of SLOTS streams (1 <= SLOTS <= its batch; 0: its batch) runs
 * it with rows past SLOTS on zero frames, never read. Streams join (a free slot, the initial state or a saved
 * batch-1 state of this model) and leave (the slot freed, its state saved) at any step. A step takes frames for any
 * subset of the active streams; the others are unchanged by it. Each stream's outputs are those of the same stream
 * run alone. A pool is used from one thread at a time, as an es_stream. */
typedef struct es_pool es_pool;

int es_pool_open(const char* pte_path, int slots, es_pool** out);
void es_pool_close(es_pool* p);
int es_pool_slots(const es_pool* p);
int es_pool_d_in(const es_pool* p);
int es_pool_d_out(const es_pool* p);
/* A free slot (the lowest) for a new stream into *SLOT: from the initial state (STATE NULL) or from a batch-1 state
 * of this model (N bytes: es_save_state's of a batch-1 stream, es_pool_leave's, StreamState.save(x.esstate)). */
int es_pool_join(es_pool* p, const unsigned char* state, size_t n, int* slot);
/* Free SLOT; its state (batch 1, es_pool_state_bytes long) is written into BUF (CAP bytes) unless BUF is NULL. */
int es_pool_leave(es_pool* p, int slot, unsigned char* buf, size_t cap, size_t* written);
int es_pool_state_bytes(const es_pool* p, size_t* bytes);
int es_pool_active(const es_pool* p, int slot);      /* 1 when SLOT holds a stream */
int64_t es_pool_steps(const es_pool* p, int slot);   /* frames SLOT's stream has had (-1: no stream there) */
/* One batched call: N frames (N * d_in floats) for the N distinct active slots SLOTS[0..N); OUT receives N * d_out
 * floats, READY (may be NULL) N flags as es_push's. A frame with NaN/Inf is refused before anything runs. */
int es_pool_step(es_pool* p, int n, const int* slots, const float* frames, float* out, int* ready);
/* Measurement (benchmarks/pool.py): microseconds per es_pool_step of every slot (zero frames), after N warm-up
 * steps; the pool's streams are left as they were. */
int es_pool_benchmark(es_pool* p, int n, double* step_us);

/* Measurement (benchmarks/native.py): microseconds per call of N bare Method::execute calls on the current inputs
 * (no state handling) and of N es_push calls of a zero frame, after N warm-up calls of each; the state is reset. */
int es_benchmark(es_stream* s, int n, double* execute_us, double* push_us);

#ifdef __cplusplus
}
#endif
#endif
