// masklrp C core: the LRP rule kernels and the BLAS wrapper they use.
// Pure C11: nothing here knows about Python. module.c is the only CPython glue.
//
// Conventions (llm.c style):
// - float32 data, row-major, contiguous; sizes are ptrdiff_t.
// - `*_forward` writes its output (=). `*_backward` ACCUMULATES into its
//   output (+=), so the caller zeroes it once and residual branches simply add.
// - `g` names the quantity flowing backward (DESIGN.md §2 "modified gradient").
#ifndef MASKLRP_H
#define MASKLRP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ----------------------------------------------------------------------------
// linalg.c: the only place that calls BLAS

// Most threads one call may use.
#define MLRP_MAX_THREADS 1024

// Largest dimension one sgemm call accepts (OpenBLAS takes 32-bit ints).
#define MLRP_BLAS_MAX_DIM 2147483647

// C (M,N) = alpha * op(A) op(B) + beta * C, row-major; op transposes when t*.
void gemm(bool ta, bool tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float alpha,
          const float *A, const float *B, float beta, float *C);
// OpenBLAS's own thread count, process-wide, held at 1 (team.c says why); a call
// re-pins it in case another library in the process (threadpoolctl) changed it.
void blas_pin_single_thread(void);
const char *blas_config(void);  // openblas_get_config: version, build options
const char *blas_core(void);    // the kernel family OpenBLAS chose for this CPU

// ----------------------------------------------------------------------------
// team.c: a call's own threads (the only parallelism: BLAS runs on one thread)

typedef struct Team Team;
typedef void (*TeamTask)(void *ctx, ptrdiff_t i);
// A leader (the calling thread) and members - 1 helper threads; NULL if out of memory.
Team *team_new(int members);
void team_free(Team *t);
int team_members(const Team *t); // 1 for NULL
// task(ctx, i) for every i in [0, count), spread over the team; returns when all are done.
void team_for(Team *t, ptrdiff_t count, TeamTask task, void *ctx);
// The calling thread's team (NULL: none); gemm() splits its work over it.
Team *team_current(void);
void team_set_current(Team *t);

// ----------------------------------------------------------------------------
// rules.c: one forward/backward pair per row of DESIGN.md §2

// How a product of two activations shares its true gradient (AttnLRP Prop. 3.3).
typedef enum { PRODUCT_UNIFORM, PRODUCT_CP, PRODUCT_GRADIENT } ProductRule;
// How a single-operand non-linearity is crossed: LRP rule or true Jacobian.
typedef enum { RULE_LRP, RULE_GRADIENT } UnaryRule;
typedef enum { ACT_GELU, ACT_GELU_TANH, ACT_SILU, ACT_TANH, ACT_RELU } Activation;

void product_shares(ProductRule rule, float *share_a, float *share_b);

// x (N,IN), w (OUT,IN) or (IN,OUT) if w_in_out, b (OUT) or NULL -> z (N,OUT)
void linear_forward(float *z, const float *x, const float *w, const float *b,
                    ptrdiff_t N, ptrdiff_t IN, ptrdiff_t OUT, bool w_in_out);
// g (N,OUT) -> gx (N,IN) += g W
void linear_backward(float *gx, const float *g, const float *w,
                     ptrdiff_t N, ptrdiff_t IN, ptrdiff_t OUT, bool w_in_out);

// x (N,C) -> s (N,C), softmax over C; -inf -> 0, all -inf row -> zeros
void softmax_forward(float *s, const float *x, ptrdiff_t N, ptrdiff_t C);
// g, s (N,C) -> gx (N,C) += s (g - sum s g)
void softmax_backward(float *gx, const float *g, const float *s, ptrdiff_t N, ptrdiff_t C);

// a (B,M,K), b (B,K,N) or (B,N,K) if tb -> out (B,M,N) = scale a b
void matmul_forward(float *out, const float *a, const float *b, ptrdiff_t B,
                    ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, bool tb, float scale);
// g (B,M,N) -> ga (B,M,K) +=, gb like b +=; either may be NULL when its share is 0
void matmul_backward(float *ga, float *gb, const float *g, const float *a, const float *b,
                     ptrdiff_t B, ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, bool tb,
                     float scale, ProductRule rule);

// a, b (n) -> out (n) = a b
void product_forward(float *out, const float *a, const float *b, ptrdiff_t n);
// g (n) -> ga += share_a g b, gb += share_b g a; either may be NULL when its share is 0
void product_backward(float *ga, float *gb, const float *g, const float *a, const float *b,
                      ptrdiff_t n, ProductRule rule);

// a, b (n) -> out (n) = a b, a a scalar
void scale_forward(float *out, float a, const float *b, ptrdiff_t n);
// g (n) -> *ga += share_a Σ g b, gb += share_b a g; either may be NULL when its share is 0
void scale_backward(float *ga, float *gb, const float *g, float a, const float *b, ptrdiff_t n,
                    ProductRule rule);

// x (n) -> y (n) = sigmoid(x); backward: gx += g σ'(x), the true gradient in every stream
void sigmoid_forward(float *y, const float *x, ptrdiff_t n);
void sigmoid_backward(float *gx, const float *g, const float *x, ptrdiff_t n);

// x (n) -> y (n) = f(x)
void activation_forward(float *y, const float *x, ptrdiff_t n, Activation f);
// g, x (n) -> gx (n) += g f(x)/x (RULE_LRP) or g f'(x) (RULE_GRADIENT)
void activation_backward(float *gx, const float *g, const float *x, ptrdiff_t n,
                         Activation f, UnaryRule rule);

// x (N,C), w (C), b (C) or NULL -> y (N,C), mean (N), rstd (N)
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, ptrdiff_t N, ptrdiff_t C, float eps);
// g, x (N,C) -> gx (N,C) +=
void layernorm_backward(float *gx, const float *g, const float *x, const float *w,
                        const float *mean, const float *rstd, ptrdiff_t N, ptrdiff_t C,
                        UnaryRule rule);

// x (N,C), w (C) -> y (N,C), rstd (N)
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                     ptrdiff_t N, ptrdiff_t C, float eps);
// g, x (N,C) -> gx (N,C) +=
void rmsnorm_backward(float *gx, const float *g, const float *x, const float *w,
                      const float *rstd, ptrdiff_t N, ptrdiff_t C, UnaryRule rule);

// x (B,T,D), cos, sin (T,R), R <= D even -> y (B,T,D): the first R of each row
// rotated, the rest copied
void rope_forward(float *y, const float *x, const float *cos, const float *sin,
                  ptrdiff_t B, ptrdiff_t T, ptrdiff_t D, ptrdiff_t R);
// g (B,T,D) -> gx (B,T,D) += Rᵀ g
void rope_backward(float *gx, const float *g, const float *cos, const float *sin,
                   ptrdiff_t B, ptrdiff_t T, ptrdiff_t D, ptrdiff_t R);

// x (n) -> y (n) = c tanh(x / c)
void softcap_forward(float *y, const float *x, ptrdiff_t n, float c);
// g, x (n) -> gx (n) += g y/x (RULE_LRP) or g (1 - tanh²(x/c)) (RULE_GRADIENT)
void softcap_backward(float *gx, const float *g, const float *x, ptrdiff_t n, float c, UnaryRule rule);

// x, g (n) -> r (n) = x g   (R_x = x ⊙ g_x, DESIGN.md §2)
void relevance(float *r, const float *x, const float *g, ptrdiff_t n);

// ----------------------------------------------------------------------------
// engine*.c: a whole transformer (DESIGN.md §1). One forward caches what the
// backward needs; each requested stream then runs one backward sweep over that
// cache. Weights are borrowed (the caller keeps them alive); the spec and the
// canonical weight layout are documented in masklrp/spec.py.

// post-norm BERT-likes / pre-norm layers (causal decoders, and ModernBERT with causal false)
typedef enum { FAMILY_ENCODER, FAMILY_DECODER } Family;
typedef enum { NORM_LAYER, NORM_RMS } NormKind;
typedef enum { POOL_FIRST, POOL_LAST, POOL_MEAN, POOL_NONE } Pool;

// A weight (out,in) or norm scale (C), and its bias or NULL.
typedef struct {
    const float *w, *b;
} Affine;

typedef struct {
    // attn_norm.w NULL: no pre-attention norm (ModernBERT's layer 0 reads the normed embeddings)
    Affine attn_norm, qkv, out, mlp_norm, up, down;
    Affine q_norm, k_norm; // RMSNorm scales (D) of each query / key head (Qwen3); .w NULL: none
    Affine attn_post_norm, mlp_post_norm; // Gemma 3: norms of each branch's output; .w NULL: none
    Affine pos_key, pos_query; // DeBERTa: (HD,C) projections of the relative embeddings; .w NULL: none
    // Mixture of experts (Model.X > 0): router (X,C); expert e's [gate; up] rows at expert_up +
    // e·2XF·C, (2XF,C), and its down at expert_down + e·C·XF, (C,XF). up / down, when present,
    // are then the shared expert, its output scaled by sigmoid(shared_gate x) (Qwen2-MoE).
    Affine router, shared_gate;
    const float *expert_up, *expert_down;
    int window;            // this layer's sliding window, 0 = none: key k is visible to query q
                           // iff 0 <= q - k < window (causal) or |q - k| < window (bidirectional)
    bool local_rope;       // this layer's RoPE table is the model's inv_freq_local
} LayerWeights;

typedef struct {
    Family family;
    NormKind norm;
    Activation act;            // MLP activation (of the gate when gated)
    bool gated;                // SwiGLU: up holds [gate; up] rows
    int L, H, KV, D, C, F, V, P, TT, NO; // see masklrp/spec.py; P = 0 without a table, TT = 0 without types
    int E;                     // width of the embedding tables (C unless emb_proj maps them to C)
    float eps, attn_scale, rope_scaling;
    bool causal, rope;
    bool qk_norm;              // q and k heads RMSNorm-ed (layers[l].q_norm, k_norm) before RoPE
    bool parallel_residual;    // GPT-NeoX: x' = x + attention(norm1(x)) + mlp(norm2(x))
    // Mixture of experts: X experts of width XF (gated, act as the MLP's), each row routed to
    // its K most probable under softmax(router x); norm_topk: the K weights renormalised to
    // sum to 1. X = 0: dense MLPs.
    int X, K, XF;
    bool norm_topk;
    Pool pool;
    Activation head_act;       // after head_dense, when head_dense.w != NULL
    const float *wte, *wpe, *wtt, *inv_freq; // wpe, wtt, inv_freq may be NULL
    int rope_dim;              // RoPE rotates the first rope_dim (even, <= D) values of each head
    // LongRoPE: a sequence longer than rope_long_after (its last real position + 1)
    // takes inv_freq_long instead of inv_freq (NULL: one table)
    const float *inv_freq_long;
    int rope_long_after;
    const float *inv_freq_local; // Gemma 3: the sliding-window layers' table (NULL: none)
    float embed_scale;         // multiplies the word embeddings (Gemma 3: sqrt(C)); 1 otherwise
    float final_softcap;       // logits = c·tanh(logits / c) (Gemma 3); 0: none
    // MPNet's relative position bias, shared by every layer: (H, 2R-1), head h's score of
    // query i and key j gets rel_bias[h][j - i + R - 1] (R = rel_span >= T); NULL: none.
    const float *rel_bias;
    int rel_span;
    // DeBERTa's disentangled attention (rel_emb NULL: none): head h's score of query i and key
    // j also gets q_i·pk_r (c2p, layers[l].pos_key) and k_j·pq_r (p2c, pos_query), times
    // attn_scale, pk / pq the projections of row r = rel_index[i - j + rel_positions - 1]
    // (whole floats) of rel_emb (R2,C) after its LayerNorm rel_norm (.w NULL: none)
    const float *rel_emb, *rel_index;
    Affine rel_norm;
    int R2, rel_positions;
    // any .w may be NULL (absent). emb_norm: over the E-wide embedding sum; emb_proj (C,E): then
    // to the hidden size (ELECTRA, ALBERT); head_norm: after head_dense's activation (ModernBERT)
    Affine emb_norm, emb_proj, final_norm, head_dense, head_norm, head_out;
    const LayerWeights *layers; // L
} Model;

// How one backward stream crosses the non-linear ops (DESIGN.md §2).
typedef struct {
    ProductRule attention;     // Q·Kᵀ and A·V
    ProductRule gate;          // act(gate) ⊙ up
    UnaryRule unary;           // activations and norms
} StreamRules;

// Which relevance a masked stream's taps of layer l (head relevance, g at A, R_A)
// read (DESIGN.md §3.2): the relevance arriving at l's heads, before l's own mask,
// which then only filters what l passes down (the reference code's reading); or
// the relevance after it (the literal reading of Eq. 10).
typedef enum { MASK_REFERENCE, MASK_STRICT } MaskSemantics;

// What one stream writes (B = batch, T = length), each with a leading K axis (one
// sweep per seed of the call, EngineCall.K); NULL = not requested.
typedef struct {
    StreamRules rules;
    // Mask-LRP (DESIGN.md §3.2): the g arriving at head m's output of layer l is
    // multiplied by head_mask[l,m] (L,H), NULL = none; with renormalize, the kept
    // heads are then scaled so the relevance they receive sums to that of all heads
    // before masking (paper Eq. 9).
    const float *head_mask;
    bool renormalize;
    MaskSemantics semantics;
    float *head_relevance;                      // (B,L,H) relevance at each head's output (see semantics)
    float *embed_grad;                          // (B,T,E) g at the word embeddings
    float *tokens, *positions, *types;          // (B,T) relevance of each embedding table's rows
    float *relative;                            // (B,R2) relevance of each relative embedding (DeBERTa)
    float *attention_grad, *attention_relevance; // (B,L,H,T,T) g at A, A ⊙ g
    float *hidden_grad, *hidden_relevance;       // (B,L+1,T,C) at the input of each layer and the last output
} Stream;

#define ENGINE_MAX_STREAMS 4

// Workspaces kept between calls: fresh multi-megabyte buffers cost a page fault
// per 4 KiB on first touch, a tenth of a long sequence's run time.
typedef struct WorkspacePool WorkspacePool;
WorkspacePool *workspace_pool_new(void);
void workspace_pool_free(WorkspacePool *pool); // frees every cached workspace

// Head statistics (DESIGN.md §3.1), counted from the attention probabilities of
// one sequence: for each layer l, head m and query q, k* = argmax over `keys` of
// A[l,m,q,:] (ties -> lowest k); positional[l,m,k* - q + T - 1] += 1, and for
// each arc whose query is q, syntactic[l,m,r] += 1 when k* lies in [lo, hi).
typedef struct {
    const uint8_t *queries, *keys; // (B,T) 1: counted query / candidate key
    const int64_t *arcs;           // (n_arcs,5): sequence, query, head span lo, hi, relation; by sequence
    ptrdiff_t n_arcs;
    int R;                         // relations
    int64_t *positional;           // (L,H,2T-1) +=
    int64_t *syntactic;            // (L,H,R) +=
} HeadStats;

// The argmax above of one row of probabilities given only for keys [k0, k0 + nk) (row,
// (nk)); every other key has probability 0 (masked). -1 when no key is a candidate.
int32_t key_argmax(const float *row, const uint8_t *keys, ptrdiff_t T, ptrdiff_t k0, ptrdiff_t nk);
// kstar (L,H,T): each query's k* (-1: not counted) of sequence `seq` -> counts into hs
// (not thread-safe); arcs, n_arcs: that sequence's arcs.
void head_counts_kstar(const HeadStats *hs, const int32_t *kstar, int L, int H, ptrdiff_t T, const int64_t *arcs,
                       ptrdiff_t n_arcs);
// att (L,H,T,T) of sequence `seq` (layer l at att + l·layer_stride); arcs, n_arcs:
// that sequence's arcs; kstar: (T) scratch. Counts into hs (not thread-safe).
void head_counts(const HeadStats *hs, const float *att, ptrdiff_t layer_stride, int L, int H, ptrdiff_t T,
                 ptrdiff_t seq, const int64_t *arcs, ptrdiff_t n_arcs, int32_t *kstar);
// The arcs of sequence seq within arcs (sorted by sequence): *first, returns the count.
ptrdiff_t arcs_of(const HeadStats *hs, ptrdiff_t seq, const int64_t **first);

typedef struct {
    ptrdiff_t B, T;
    const int64_t *ids, *positions, *types, *mask; // (B,T); types NULL when TT = 0
    // (B,T,E) the word embeddings themselves, in place of the table rows of ids (which are
    // then not read): a vision model's patch embeddings; NULL: the word table
    const float *embeds;
    // K >= 1 seeds, each swept back by every stream over the one forward cache: seed k is
    // g at the logits (K,B,NO), or (K,B,T,NO) for POOL_NONE; NULL: one-hot on each row's
    // argmax (pooled only). rows (K,B): the row (a real token) a first/last-pooled head
    // reads for seed k; NULL: the pool's own (the first or last real token) for every k.
    int K;
    const float *seed;
    const int64_t *rows;
    float *logits;            // (K,B,NO) the head at each seed's row, or (B,T,NO) for POOL_NONE
    float *attentions;        // (B,L,H,T,T) or NULL
    float *hidden;            // (B,L+1,T,C) or NULL
    int n_streams;
    Stream streams[ENGINE_MAX_STREAMS];
    HeadStats *head_stats;    // counted after the forward, or NULL
    int threads;              // threads of this call (chunks of the batch, then teams)
    WorkspacePool *pool;      // where workspaces are reused from, or NULL
} EngineCall;

// Attention runs in blocks of query rows, its scratch (H, rows, T) floats per buffer;
// ATTENTION_BLOCK rows unless attention_block_set(rows) says otherwise (rows <= 0:
// the default again). Returns the previous value. Process-wide, read at the start of
// each call: for tests that want many blocks from short sequences.
#define ATTENTION_BLOCK 64
ptrdiff_t attention_block_set(ptrdiff_t rows);
// The MLP's pre-activations (L·rows·F floats, 2F gated) are cached while they take at
// most MLP_CACHE_BYTES a workspace; beyond, only the MLP's input is, and the backward
// recomputes them (one more GEMM a layer: ~17% more linear work, against e.g. 2.8 GiB
// for SmolLM2-135M at T = 8192). mlp_cache_set(bytes) changes the limit (bytes < 0: the
// default again), like attention_block_set, and returns the previous one.
#define MLP_CACHE_BYTES ((ptrdiff_t)1 << 30)
ptrdiff_t mlp_cache_set(ptrdiff_t bytes);

// Bytes of one workspace for S sequences of T tokens (the forward cache and both
// sweeps' scratch), at the current attention block and MLP cache limit.
size_t model_workspace_bytes(const Model *m, ptrdiff_t S, ptrdiff_t T);

// Forward (and the requested backward streams) for every sequence of the batch.
// Inputs are trusted (module_engine.c validates them). Calls share no state, so
// concurrent calls run in parallel and give bit for bit what they give alone.
// 0 on success; -1 when out of memory, with *failed_bytes the workspace it could not allocate.
int model_run(const Model *m, const EngineCall *call, size_t *failed_bytes);

#endif // MASKLRP_H
